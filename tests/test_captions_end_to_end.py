"""Captions end to end: `daskcap run` with tiny models on an embedded cluster with an engine worker."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def daskcap(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daskcap.cli", *args], capture_output=True, text=True, timeout=280, env=env)


@pytest.fixture(scope="module")
def videos(tmp_path_factory, samples, stamped):
    folder = tmp_path_factory.mktemp("videos")
    for name in ("bikes.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4"):
        shutil.copyfile(samples / name, folder / name)
    shutil.copyfile(stamped(600, 30), folder / "stamped.mp4")  # two clips
    (folder / "broken.mp4").write_text("not a video")
    return folder


def _caption_run(videos, output, tiny_models):
    return daskcap(
        "run", str(videos), str(output),
        "--captioning-model", str(tiny_models["vlm"]),
        "--captioning-stage2-caption",
        "--enhance-captions", "--enhance-captions-model", str(tiny_models["lm"]),
        "--captioning-max-output-tokens", "12", "--enhance-captions-max-output-tokens", "12",
        "--windows-per-partition", "1", "--n-workers", "2", "--engine-workers", "1", "--quiet",
    )


@pytest.fixture(scope="module")
def two_runs(videos, tiny_models, tmp_path_factory):
    outputs = []
    for name in ("first", "second"):
        output = tmp_path_factory.mktemp(name) / "out"
        result = _caption_run(videos, output, tiny_models)
        assert result.returncode == 0, result.stderr
        outputs.append(output)
    return outputs


def test_every_good_window_gets_all_three_captions(two_runs):
    windows = pd.read_parquet(two_runs[0] / "windows")
    assert len(windows) == 5 and (windows["status"] == "ok").all()
    for column in ("stage1_caption", "caption", "enhanced_caption", "caption_model", "enhance_model",
                   "caption_prompt_tokens", "caption_output_tokens", "caption_finish_reason",
                   "enhance_prompt_tokens", "enhance_output_tokens", "enhance_finish_reason"):
        assert windows[column].notna().all(), column
    assert (windows["caption_output_tokens"] <= 12).all()
    videos = pd.read_parquet(two_runs[0] / "videos").set_index("video_path")
    assert videos["status"].value_counts().to_dict() == {"ok": 4, "read_failed": 1}


def test_two_runs_give_identical_captions(two_runs):
    columns = ["clip_id", "window_index", "stage1_caption", "caption", "enhanced_caption"]
    first, second = (pd.read_parquet(out / "windows")[columns].sort_values(columns[:2]).reset_index(drop=True) for out in two_runs)
    pd.testing.assert_frame_equal(first, second)


def test_models_load_once_per_engine_worker_and_only_there(two_runs):
    summary = json.loads((two_runs[0] / "summary.json").read_text())
    assert summary["partitions"] >= 4  # several partitions, one engine
    engines = {address: w for address, w in summary["workers"].items() if w["engine"]}
    cpus = {address: w for address, w in summary["workers"].items() if not w["engine"]}
    assert len(engines) == 1 and len(cpus) == 2
    (engine,) = engines.values()
    assert sorted(engine["model_loads"].values()) == [1, 1]  # each model exactly once
    assert engine["partitions_captioned"] == summary["partitions"]
    assert engine["windows_captioned"] == engine["windows_enhanced"] == 5
    for worker in cpus.values():
        assert worker["model_loads"] == {} and worker["partitions_captioned"] == 0
    assert {"caption", "enhance"} <= set(summary["stage_seconds"])


def test_offline_without_weights_fails_before_any_video_is_read(videos, tmp_path):
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = daskcap("run", str(videos), str(tmp_path / "out"), "--generate-captions", "--model-dir", str(tmp_path / "models"), "--quiet", env=env)
    assert result.returncode == 2
    assert "Qwen/Qwen2.5-VL-7B-Instruct" in result.stderr and str(tmp_path / "models") in result.stderr
    assert not (tmp_path / "out").exists()


def test_fp8_on_the_transformers_engine_is_refused(videos, tiny_models, tmp_path):
    result = daskcap("run", str(videos), str(tmp_path / "out"), "--captioning-model", str(tiny_models["vlm"]),
                     "--captioning-use-fp8-weights", "--engine", "transformers", "--quiet")
    assert result.returncode == 2 and "fp8" in result.stderr
