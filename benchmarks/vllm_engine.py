"""Captions through vLLM in a daskcap job, against the same prompts sent straight to one
``vllm.LLM`` in a plain process, and against the transformers engine on the same windows.

Runs in the venv `make test-vllm` builds (`make bench-vllm`). One run, same machine:

1. ``daskcap run --engine vllm`` on synthetic clips (embedded cluster, one engine worker):
   the job's wall time, its time inside ``LLM.generate`` and the model load, from summary.json;
   the windows are written with their model input (``--write-model-input``);
2. the same windows' prompts (their sampled frames, their prompt text, the same sampling)
   given to one ``vllm.LLM`` in this process, in one ``generate`` call;
3. ``daskcap run --engine transformers`` on the same clips.

    python benchmarks/vllm_engine.py --models data/tiny-models-vllm [--clips 16] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WINDOW_FRAMES = 30  # 1 s windows of 3 s clips: three windows a clip


def make_clips(folder: Path, count: int) -> None:
    from daskcap import synthetic

    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        square = synthetic.random_square(rng)
        synthetic.write_clip(folder / f"square_{i:03d}_{square.colour}_{square.direction}.mp4", square, width=320, height=240)


def run_job(videos: Path, output: Path, models: Path, engine: str) -> dict:
    args = [
        sys.executable, "-m", "daskcap.cli", "run", str(videos), str(output), "--engine", engine,
        "--captioning-model", str(models / "vlm"), "--captioning-max-output-tokens", "24",
        "--captioning-window-size", str(WINDOW_FRAMES), "--captioning-remainder-threshold", "15",
        "--windows-per-partition", "8", "--n-workers", "1", "--engine-workers", "1",
        "--write-model-input", "--no-generate-previews", "--quiet",
    ]
    started = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - started
    summary = json.loads((output / "summary.json").read_text())
    caption = summary["engines"]["caption"]
    return {
        "backend": caption["backend"],
        "windows": summary["windows"]["total"],
        "process_wall_s": round(wall, 2),
        "job_wall_s": summary["wall_s"],
        "cluster_start_s": summary["cluster_start_s"],
        "model_load_s": summary["engines"]["model_load_s"],
        "generate_s": caption["engine_s"],
        "output_tokens": caption["output_tokens"],
        "requests_per_call": caption["requests_per_call"],
    }


def plain_vllm(output: Path, models: Path) -> dict:
    """The job's windows, as prompts, to one vllm.LLM here: no Dask, no daskcap engine."""
    import pandas as pd
    from vllm import LLM, SamplingParams

    from daskcap.engines.base import EngineConfig, LoadedModel, cuda_visible
    from daskcap.engines.vllm_engine import llm_kwargs, sampling_kwargs, video_prompt
    from daskcap.stages.caption import _video_request

    windows = pd.read_parquet(output / "windows")
    requests = [_video_request(w, w.prompt, 24) for w in windows.itertuples(index=False)]
    path = str(models / "vlm")
    started = time.perf_counter()
    llm = LLM(**llm_kwargs(EngineConfig(path, "", backend="vllm"), LoadedModel(path, "qwen2.5-vl")))
    load_s = time.perf_counter() - started
    prompts = [video_prompt(llm.get_tokenizer(), r) for r in requests]
    params = [SamplingParams(**sampling_kwargs(r.max_tokens, seeded=cuda_visible())) for r in requests]
    started = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    generate_s = time.perf_counter() - started
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    llm.llm_engine.engine_core.shutdown()
    return {"windows": len(requests), "model_load_s": round(load_s, 2), "generate_s": round(generate_s, 3), "output_tokens": tokens}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True, help="the tiny models' folder (daskcap tiny-models)")
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        make_clips(scratch / "videos", args.clips)
        job = run_job(scratch / "videos", scratch / "vllm", args.models, "vllm")
        plain = plain_vllm(scratch / "vllm", args.models)
        hf = run_job(scratch / "videos", scratch / "transformers", args.models, "transformers")
    # The job's time with the cluster start and the model load taken out: preparing the
    # windows, moving them, batching and writing, around the engine's own work.
    job_s = job["job_wall_s"] - job["cluster_start_s"] - job["model_load_s"]
    hf_s = hf["job_wall_s"] - hf["cluster_start_s"] - hf["model_load_s"]
    figures = {
        "daskcap --engine vllm": job,
        "plain vllm.LLM": plain,
        "daskcap --engine transformers": hf,
        "windows_per_s": {
            "daskcap vllm job (no start-up, no load)": round(job["windows"] / job_s, 2),
            "daskcap vllm, inside generate": round(job["windows"] / job["generate_s"], 2),
            "plain vllm.LLM generate": round(plain["windows"] / plain["generate_s"], 2),
            "daskcap transformers job (no start-up, no load)": round(hf["windows"] / hf_s, 2),
        },
        "output_tokens_per_s": {
            "daskcap vllm, inside generate": round(job["output_tokens"] / job["generate_s"], 1),
            "plain vllm.LLM generate": round(plain["output_tokens"] / plain["generate_s"], 1),
        },
        "ratios": {
            "generate: daskcap over plain (time per window)": round((job["generate_s"] / job["windows"]) / (plain["generate_s"] / plain["windows"]), 2),
            "job over plain generate (time per window)": round((job_s / job["windows"]) / (plain["generate_s"] / plain["windows"]), 2),
            "transformers job over vllm job (time per window)": round((hf_s / hf["windows"]) / (job_s / job["windows"]), 2),
        },
    }
    print(json.dumps(figures, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
