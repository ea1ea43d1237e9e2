"""Every codec x container real collections hold comes out: `daskcap run` over the whole matrix.

Each file is run as one whole-file clip and split into 3+ clips, with windows
of 8 frames so every clip has several. Every video and window must be `ok`,
every clip and window mp4 H.264 holding exactly its source frames (stamps read
back), every preview an animated WebP.
"""

from __future__ import annotations

import subprocess
import sys

import av
import pandas as pd
import pytest
from codecmatrix import MATRIX, NOT_ENCODABLE, write_entry
from videogen import decode_stamps, parse_webp

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

NUM_FRAMES = 48
SHAPES = {"whole": ["--fixed-stride-split-duration", "10"], "split": ["--fixed-stride-split-duration", "0.6"]}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("matrix")
    for entry in MATRIX:
        write_entry(entry, folder, NUM_FRAMES)
    return folder


def test_what_cannot_be_made_here_is_named():
    # Said, not skipped: these stay decodable inputs, but the matrix cannot hold them.
    assert set(NOT_ENCODABLE) == {"theora", "vp9 10-bit"}


@pytest.fixture(scope="module", params=sorted(SHAPES))
def run(request, corpus, tmp_path_factory):
    output = tmp_path_factory.mktemp(request.param) / "out"
    result = subprocess.run(
        [sys.executable, "-m", "daskcap.cli", "run", str(corpus), str(output), *SHAPES[request.param],
         "--fixed-stride-min-clip-length-s", "0.01", "--captioning-window-size", "8", "--captioning-remainder-threshold", "4",
         "--n-workers", "2", "--quiet", "--no-report"],
        capture_output=True, text=True, timeout=580,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return request.param, output


def test_every_video_and_window_is_ok(run):
    shape, output = run
    videos = pd.read_parquet(output / "videos")
    names = {p.rsplit("/", 1)[1] for p in videos["video_path"]}
    assert names == {entry.name for entry in MATRIX}  # every extension was listed
    bad = videos[videos["status"] != "ok"]
    assert bad.empty, bad[["video_path", "status", "error"]].to_string()
    windows = pd.read_parquet(output / "windows")
    bad = windows[windows["status"] != "ok"]
    assert bad.empty, bad[["video_path", "window_index", "status", "error"]].to_string()
    clips_per_video = windows.groupby("video_path")["clip_id"].nunique()
    assert (clips_per_video == 1).all() if shape == "whole" else (clips_per_video >= 3).all(), clips_per_video
    assert len(windows) >= len(MATRIX) * (6 if shape == "whole" else 6)


def test_clip_and_window_mp4s_hold_exactly_their_frames(run):
    """Per video: the windows' frames, clip by clip, are every source frame once, in order."""
    _, output = run
    windows = pd.read_parquet(output / "windows").sort_values(["video_path", "clip_index", "window_index"])
    for video_path, video in windows.groupby("video_path"):
        name = video_path.rsplit("/", 1)[1]
        seen = []
        for clip_id, clip in video.groupby("clip_index", sort=True):
            in_clip = []
            for window in clip.itertuples():
                assert _codec(window.window_mp4) == "h264", name
                stamps = decode_stamps(window.window_mp4)
                assert len(stamps) == window.end_frame - window.start_frame + 1, (name, clip_id, window.window_index, stamps)
                in_clip += stamps
            clip_mp4 = (output / "clips" / f"{clip['clip_id'].iloc[0]}.mp4").read_bytes()
            assert _codec(clip_mp4) == "h264", name
            assert decode_stamps(clip_mp4) == in_clip, (name, clip_id)
            seen += in_clip
        assert seen == list(range(NUM_FRAMES)), (name, seen)


def test_every_preview_is_an_animated_webp(run):
    _, output = run
    windows = pd.read_parquet(output / "windows")
    for window in windows.itertuples():
        info = parse_webp(window.preview_webp)
        assert info["animated"] and info["frames"], window.video_path


def _codec(mp4: bytes) -> str:
    import io

    with av.open(io.BytesIO(mp4)) as container:
        return container.streams.video[0].codec_context.name
