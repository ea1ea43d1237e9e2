"""jobs/split_clip_caption.py takes a NeMo Curator user's command line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import av
import pandas as pd
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

SCRIPT = Path(__file__).parent.parent / "jobs" / "split_clip_caption.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=200)


def test_a_nemo_command_line_runs(tmp_path, samples, tiny_models):
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copyfile(samples / "bikes.mp4", videos / "bikes.mp4")
    result = _run(
        "--video-dir", str(videos), "--output-path", str(tmp_path / "out"), "--model-dir", str(tmp_path / "models"),
        "--splitting-algorithm", "fixed_stride", "--fixed-stride-split-duration", "5.0", "--limit-clips", "0",
        "--transcode-encoder", "libvpx-vp9", "--transcode-encoder-threads", "2", "--transcode-cpus-per-worker", "4",
        "--transcode-ffmpeg-batch-size", "8", "--clip-re-chunk-size", "16",
        "--generate-previews", "--preview-target-fps", "1", "--generate-captions", "--captioning-stage2-caption",
        "--captioning-max-output-tokens", "6", "--no-generate-embeddings",
        "--captioning-model", str(tiny_models["vlm"]), "--n-workers", "1",
    )
    assert result.returncode == 0, result.stderr
    windows = pd.read_parquet(tmp_path / "out" / "windows")
    assert len(windows) == 2 and windows["caption"].notna().all() and windows["preview_webp"].notna().all()
    assert "embeddings" not in result.stderr  # --no-generate-embeddings silences the note
    for window in windows.itertuples():  # clips in VP9, as --transcode-encoder libvpx-vp9 asks; captions under NeMo's key
        with av.open(str(tmp_path / "out" / "clips" / f"{window.clip_id}.mp4")) as clip:
            assert clip.streams.video[0].codec_context.name == "vp9"
        meta = json.loads((tmp_path / "out" / "metas" / "v0" / f"{window.clip_id}.json").read_text())
        assert meta["windows"][0]["qwen2.5_caption"] == window.caption


def test_flags_for_missing_features_are_refused_not_ignored(tmp_path):
    result = _run(
        "--video-dir", str(tmp_path), "--output-clip-path", str(tmp_path / "out"),  # NeMo's old name for --output-path
        "--splitting-algorithm", "transnetv2", "--transnetv2-threshold", "0.3", "--aesthetic-threshold", "3.5",
        "--transcode-use-hwaccel",
    )
    assert result.returncode == 2
    for flag in ("--splitting-algorithm transnetv2", "--transnetv2-threshold", "--aesthetic-threshold", "--transcode-use-hwaccel"):
        assert flag in result.stderr
    assert not (tmp_path / "out").exists()
