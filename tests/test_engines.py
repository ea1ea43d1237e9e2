"""The engine layer with real tiny models: pixel pipeline, transformers engine, weights, vLLM requests."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from daskcap import schema
from daskcap.engines.base import EngineConfig, EngineError, TextRequest, VideoRequest, resolve_backend
from daskcap.engines.factory import build_engine
from daskcap.engines.chat import VIDEO_PAD
from daskcap.engines.host import EngineHost
from daskcap.engines.vision import video_patches, video_token_count
from daskcap.engines.vllm_engine import llm_kwargs, sampling_kwargs, text_prompt, video_prompt
from daskcap.engines.weights import check_available, locate, model_family
from daskcap.stages.caption import CaptionEnhancementStage, CaptionGenerationStage, caption_windows, enhance_windows
from daskcap.stages.clip import FixedStrideClipStage, make_clips
from daskcap.stages.prepare import CaptionPreparationStage, prepare_windows
from daskcap.stages.read import VideoReaderStage, read_videos

RNG = np.random.default_rng(0)


def _frames(count, height=56, width=84):
    return RNG.integers(0, 256, (count, height, width, 3), dtype=np.uint8)


# --- pixel pipeline -------------------------------------------------------------------


def test_pixel_pipeline_is_bit_exact_with_transformers():
    from transformers import Qwen2VLImageProcessorPil

    image = _frames(1, 84, 112)[0]
    reference = Qwen2VLImageProcessorPil()(images=[image], return_tensors="np", do_resize=False)
    # An image is a video of two identical frames.
    patches, grid = video_patches(np.stack([image, image]))
    assert grid == tuple(reference["image_grid_thw"][0])
    assert patches.dtype == reference["pixel_values"].dtype
    assert np.array_equal(patches, reference["pixel_values"])


def test_video_token_count():
    _, grid = video_patches(_frames(18, 560, 1008))
    assert grid == (9, 40, 72)
    assert video_token_count(grid) == 9 * 720  # 720 tokens per pair of 1008x560 frames


def test_frames_off_the_grid_are_refused():
    with pytest.raises(ValueError, match="tile"):
        video_patches(_frames(3))


# --- tiny models and the transformers engine ------------------------------------------------


def test_tiny_models_load_like_real_weights(tiny_models):
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

    vlm = AutoModelForImageTextToText.from_pretrained(tiny_models["vlm"])
    assert type(vlm).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert type(AutoModelForCausalLM.from_pretrained(tiny_models["lm"])).__name__ == "Qwen2ForCausalLM"
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["vlm"])
    assert VIDEO_PAD in tokenizer.get_vocab() and tokenizer.chat_template
    assert model_family(tiny_models["vlm"]) == "qwen2.5-vl" and model_family(tiny_models["lm"]) == "qwen-text"
    config = json.loads((tiny_models["lm"] / "config.json").read_text())
    assert config["hidden_size"] // config["num_attention_heads"] == 64  # what vLLM's CPU backend needs


@pytest.fixture(scope="module")
def vlm_engine(tiny_models):
    return build_engine(EngineConfig(model=str(tiny_models["vlm"]), model_dir="unused", backend="transformers", batch_size=4))


def test_captions_are_keyed_by_id_and_independent_of_batching(vlm_engine):
    requests = [VideoRequest(f"w{i}", _frames(4 + 2 * i, 56 * (i + 1), 84), 2.0, "Describe this video.", 12) for i in range(3)]
    together = vlm_engine.caption(requests)
    assert set(together) == {"w0", "w1", "w2"}
    assert vlm_engine.caption(list(reversed(requests))) == together
    for request in requests:
        assert vlm_engine.caption([request])[request.request_id] == together[request.request_id]
    first = together["w0"]
    assert first.output_tokens <= 12 and first.prompt_tokens > video_token_count((2, 4, 6))


def test_finish_reasons(vlm_engine):
    """The trained tiny VLM answers in one short sentence: room for it ends with "stop", three tokens cut it."""
    done = vlm_engine.caption([VideoRequest("w", _frames(4), 2.0, "Describe this video.", 64)])["w"]
    assert done.finish_reason == "stop" and 3 < done.output_tokens < 64 and done.text.endswith(".")


def test_a_caption_cut_at_max_tokens_is_marked(vlm_engine):
    result = vlm_engine.caption([VideoRequest("w", _frames(4), 2.0, "Describe.", 3)])["w"]
    assert (result.finish_reason, result.output_tokens) == ("length", 3)


def test_text_engine(tiny_models):
    engine = build_engine(EngineConfig(model=str(tiny_models["lm"]), model_dir="unused", backend="transformers"))
    results = engine.complete([TextRequest("a", "Improve: a red car.", 8), TextRequest("b", "Improve: a dog.", 8)])
    assert set(results) == {"a", "b"} and all(r.output_tokens <= 8 for r in results.values())
    with pytest.raises(EngineError, match="text model"):
        engine.caption([VideoRequest("w", _frames(4), 2.0, "Describe.", 4)])


def test_fp8_with_transformers_is_an_error_not_a_no_op(tiny_models):
    with pytest.raises(EngineError, match="fp8"):
        build_engine(EngineConfig(model=str(tiny_models["vlm"]), model_dir="unused", backend="transformers", fp8=True))


def test_auto_backend_without_cuda_is_transformers(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no device visible, whatever this machine has
    assert resolve_backend("auto") == "transformers"
    assert resolve_backend("transformers") == "transformers"
    with pytest.raises(EngineError):
        resolve_backend("tensorrt")


# --- model stages ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(stamped):
    paths = [stamped(60, 30), stamped(90, 30, width=224, height=128)]
    videos = read_videos(pd.DataFrame({"video_path": [str(p) for p in paths]}), VideoReaderStage("unused"))
    windows = prepare_windows(make_clips(videos, FixedStrideClipStage()), CaptionPreparationStage(window_size=32, remainder_threshold=16))
    assert len(windows) == 5
    return windows


def test_stage2_and_enhancement_fill_every_window(prepared, tiny_models):
    host = EngineHost()
    captioning = CaptionGenerationStage(model=str(tiny_models["vlm"]), max_output_tokens=8, generate_stage2_caption=True, engine="transformers")
    captioned = caption_windows(prepared, captioning, host.handle(captioning.engine_config()))
    enhancing = CaptionEnhancementStage(model=str(tiny_models["lm"]), max_output_tokens=8, engine="transformers")
    enhanced = enhance_windows(captioned, enhancing, host.handle(enhancing.engine_config()))
    assert (enhanced["status"] == schema.OK).all()
    for column in ("stage1_caption", "caption", "enhanced_caption", "caption_finish_reason"):
        assert enhanced[column].notna().all(), column
    assert (enhanced["caption_model"] == str(tiny_models["vlm"])).all()
    assert (enhanced["enhance_model"] == str(tiny_models["lm"])).all()
    # Stage 2's prompt carries the stage-1 caption: it is longer than stage 1's.
    stage1_only = caption_windows(prepared, CaptionGenerationStage(model=str(tiny_models["vlm"]), max_output_tokens=8, engine="transformers"), host.handle(captioning.engine_config()))
    assert (enhanced["caption_prompt_tokens"] > stage1_only["caption_prompt_tokens"]).all()
    assert stage1_only["caption"].tolist() == enhanced["stage1_caption"].tolist()
    assert host.stats()["model_loads"] == {str(tiny_models["vlm"]): 1, str(tiny_models["lm"]): 1}


def test_a_bad_window_fails_alone_after_one_rebuild(prepared, tiny_models):
    broken = prepared.copy()
    # Three frames cannot pair into temporal patches: the engine raises on this window.
    height, width = int(broken.loc[0, "sampled_height"]), int(broken.loc[0, "sampled_width"])
    broken.loc[0, "num_sampled_frames"] = 3
    broken.loc[0, "sampled_frames"] = schema.pack_frames(np.zeros((3, height * 3 // 2, width), dtype=np.uint8))
    # ...and this one's model input is unreadable before it reaches the engine.
    broken.loc[1, "sampled_frames"] = b"not zstd"
    host = EngineHost()
    stage = CaptionGenerationStage(model=str(tiny_models["vlm"]), max_output_tokens=4, engine="transformers")
    result = caption_windows(broken, stage, host.handle(stage.engine_config()))
    assert result["status"].tolist() == [schema.CAPTION_FAILED] * 2 + [schema.OK] * (len(result) - 2)
    assert "tile" in result["error"].iloc[0] and "unreadable model input" in result["error"].iloc[1]
    assert result["caption"].iloc[2:].notna().all() and result["caption"].iloc[:2].isna().all()
    assert host.stats()["model_loads"] == {str(tiny_models["vlm"]): 2}  # built, then rebuilt once


# --- weights ---------------------------------------------------------------------------------


def test_weights_are_found_under_model_dir(tmp_path, tiny_models):
    import shutil

    shutil.copytree(tiny_models["lm"], tmp_path / "acme" / "tiny-lm")
    location = locate("acme/tiny-lm", str(tmp_path))
    assert location.present and location.path == tmp_path / "acme" / "tiny-lm"
    assert check_available("acme/tiny-lm", str(tmp_path)) == []
    assert check_available(str(tiny_models["vlm"]), "unused") == []


def test_missing_weights_offline_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    problems = check_available("Qwen/Qwen2.5-VL-7B-Instruct", str(tmp_path))
    assert len(problems) == 1
    assert "Qwen/Qwen2.5-VL-7B-Instruct" in problems[0] and str(tmp_path / "Qwen" / "Qwen2.5-VL-7B-Instruct") in problems[0]


# --- vLLM request building (no vLLM needed) ------------------------------------------------------


def test_vllm_engine_arguments(tiny_models):
    from daskcap.engines.base import LoadedModel

    vlm = LoadedModel(str(tiny_models["vlm"]), "qwen2.5-vl")
    kwargs = llm_kwargs(EngineConfig(model="m", model_dir="d", fp8=True, disable_mmcache=True), vlm)
    assert kwargs["quantization"] == "fp8" and kwargs["mm_processor_cache_gb"] == 0
    assert kwargs["limit_mm_per_prompt"] == {"image": 0, "video": 1}
    assert kwargs["max_num_batched_tokens"] >= 9 * 720  # the largest default window fits
    text = llm_kwargs(EngineConfig(model="m", model_dir="d"), LoadedModel(str(tiny_models["lm"]), "qwen-text"))
    assert text["quantization"] is None and "limit_mm_per_prompt" not in text and "max_model_len" not in text
    assert sampling_kwargs(77) == {"temperature": 0.1, "top_p": 0.001, "repetition_penalty": 1.05, "max_tokens": 77, "seed": 0}
    assert "seed" not in sampling_kwargs(77, seeded=False)  # the CPU backend: see sampling_kwargs


def test_vllm_video_prompt_carries_presampled_frames(tiny_models):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["vlm"])
    frames = _frames(6, 56, 84)
    prompt = video_prompt(tokenizer, VideoRequest("w", frames, 1.5, "Describe it.", 10))
    assert prompt["prompt"].count(VIDEO_PAD) == 1 and "Describe it." in prompt["prompt"]
    assert prompt["prompt"].endswith("<|im_start|>assistant\n")
    video, metadata = prompt["multi_modal_data"]["video"]
    assert np.array_equal(video, frames)
    assert metadata["frames_indices"] == list(range(6)) and metadata["total_num_frames"] == 6
    assert metadata["fps"] == 1.5 and metadata["do_sample_frames"] is False
    assert prompt["mm_processor_kwargs"] == {"do_sample_frames": False}
    assert VIDEO_PAD not in text_prompt(tokenizer, TextRequest("t", "Improve this.", 5))["prompt"]


def test_a_worker_reuses_an_engine_and_replaces_it_when_the_config_changes(tiny_models):
    host = EngineHost()
    first = CaptionGenerationStage(model=str(tiny_models["vlm"]), engine="transformers").engine_config()
    engine = host.handle(first).get()
    assert host.handle(first).get() is engine  # same config: the loaded engine serves again
    other = CaptionGenerationStage(model=str(tiny_models["vlm"]), engine="transformers", caption_batch_size=2).engine_config()
    replacement = host.handle(other).get()
    assert replacement is not engine and len(host.engines) == 1  # replaced, not stacked
    enhancer = CaptionEnhancementStage(model=str(tiny_models["lm"]), engine="transformers").engine_config()
    host.handle(enhancer).get()
    assert set(host.engines) == {"caption", "enhance"}
    assert host.stats()["model_loads"] == {str(tiny_models["vlm"]): 2, str(tiny_models["lm"]): 1}


def test_a_model_that_will_not_load_stops_after_two_tries(tmp_path):
    """Loading fails (a config without weights): the worker tries twice, then gives up at
    once with the error instead of loading again for every partition."""
    import json as _json

    from daskcap.engines.base import EngineConfig, EngineUnavailable
    from daskcap.engines.host import EngineHost

    broken = tmp_path / "broken-vlm"
    broken.mkdir()
    (broken / "config.json").write_text(_json.dumps({"model_type": "qwen2_5_vl", "architectures": ["Qwen2_5_VLForConditionalGeneration"]}))
    host = EngineHost()
    config = EngineConfig(str(broken), str(tmp_path), backend="transformers")
    for _ in range(2):
        with pytest.raises(Exception) as caught:
            host.engine(config)
        assert not isinstance(caught.value, EngineUnavailable)
    with pytest.raises(EngineUnavailable, match="failed to load 2 times"):
        host.engine(config)
    assert host.model_loads[str(broken)] == 0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_job_whose_model_will_not_load_ends_with_the_error(tmp_path, stamped):
    import json as _json
    import shutil
    import subprocess
    import sys

    broken = tmp_path / "broken-vlm"
    broken.mkdir()
    (broken / "config.json").write_text(_json.dumps({"model_type": "qwen2_5_vl", "architectures": ["Qwen2_5_VLForConditionalGeneration"]}))
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(6):
        shutil.copyfile(stamped(60, 30), videos / f"v{i}.mp4")
    result = subprocess.run(
        [sys.executable, "-m", "daskcap.cli", "run", str(videos), str(tmp_path / "out"), "--captioning-model", str(broken),
         "--windows-per-partition", "1", "--n-workers", "1", "--engine-workers", "1", "--quiet", "--no-report"],
        capture_output=True, text=True, timeout=280,
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("daskcap: error:") and "failed to load 2 times" in last, last
    # The model was tried twice, not once per partition (the worker logs each failed task).
    assert result.stderr.count("Exception: \"OSError(") <= 2


def test_concurrent_tasks_share_the_engines_batches(prepared, tiny_models):
    """Three partitions captioned at once on one worker: their requests meet in the engine's
    queue and go in fewer calls than partitions, with the same captions as one by one."""
    import threading

    stage = CaptionGenerationStage(model=str(tiny_models["vlm"]), max_output_tokens=6, engine="transformers", caption_batch_size=64)
    alone_host = EngineHost()
    parts = [prepared.iloc[i::3].reset_index(drop=True) for i in range(3)]
    expected = [caption_windows(part, stage, alone_host.handle(stage.engine_config()))["caption"].tolist() for part in parts]
    assert alone_host.counters["caption_calls"] == 3

    host = EngineHost()
    handle = host.handle(stage.engine_config())
    handle.get()  # loaded before the tasks start, as on a worker that already served one
    gate = threading.Barrier(3)
    results: list = [None] * 3

    def task(i: int) -> None:
        gate.wait()
        results[i] = caption_windows(parts[i], stage, handle)["caption"].tolist()

    threads = [threading.Thread(target=task, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert results == expected
    assert host.counters["caption_generations"] == len(prepared)
    assert host.counters["caption_calls"] < 3 and host.counters["caption_call_tasks"] == 3
