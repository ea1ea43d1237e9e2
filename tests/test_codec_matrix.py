"""Every codec x container real collections hold comes out: `daskcap run` over the whole matrix.

Each file is run as one whole-file clip and split into 3+ clips, with windows
of 8 frames so every clip has several. Every video and window must be `ok`,
every clip and window mp4 H.264 holding exactly its source frames (stamps read
back), every preview an animated WebP showing frames of its window. A third
shape, in process: the whole file as one window, where the clip's mp4 is the
window's and an H.264 source is copied rather than encoded.
"""

from __future__ import annotations

import io
import subprocess
import sys

import av
import numpy as np
import pandas as pd
import pytest
from codecmatrix import MATRIX, NOT_WRITABLE, NUM_FRAMES, write_entry
from PIL import Image
from videogen import decode_stamps, parse_webp, read_stamp, video_packets

from daskcap import schema
from daskcap.stages.clip import FixedStrideClipStage, make_clips
from daskcap.stages.prepare import CaptionPreparationStage, prepare_windows
from daskcap.stages.read import VideoReaderStage, read_videos

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SHAPES = {"whole": "10", "split": "0.6"}  # --fixed-stride-split-duration, seconds
BY_NAME = {entry.name: entry for entry in MATRIX}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("matrix")
    for entry in MATRIX:
        write_entry(entry, folder)
    return folder


@pytest.mark.parametrize("what", sorted(NOT_WRITABLE))
def test_what_cannot_be_written_here_is_named(what):
    # Said, not skipped: these stay decodable inputs, but no file of them can be made here.
    reason, still_unwritable = NOT_WRITABLE[what]
    assert still_unwritable(), f"{what} can be written now ({reason} no longer holds): add it to MATRIX"
    assert len(NOT_WRITABLE) <= 3


@pytest.fixture(scope="module", params=sorted(SHAPES))
def run(request, corpus, tmp_path_factory):
    output = tmp_path_factory.mktemp(request.param) / "out"
    result = subprocess.run(
        [sys.executable, "-m", "daskcap.cli", "run", str(corpus), str(output), "--fixed-stride-split-duration", SHAPES[request.param],
         "--fixed-stride-min-clip-length-s", "0.01", "--captioning-window-size", "8", "--captioning-remainder-threshold", "4",
         "--preview-compression-level", "0", "--n-workers", "2", "--quiet", "--no-report"],
        capture_output=True, text=True, timeout=580,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return request.param, output


def _name(video_path: str) -> str:
    return video_path.rsplit("/", 1)[1]


def test_every_file_is_listed_probed_right_and_ok(run):
    shape, output = run
    videos = pd.read_parquet(output / "videos")
    assert sorted(map(_name, videos["video_path"])) == sorted(BY_NAME)  # every extension was listed
    bad = videos[videos["status"] != schema.OK]
    assert bad.empty, bad[["video_path", "status", "error"]].to_string()
    for video in videos.itertuples():
        entry = BY_NAME[_name(video.video_path)]
        probed = (video.num_frames, round(video.fps, 3), video.width, video.height)
        assert probed == (NUM_FRAMES, round(float(entry.fps), 3), entry.width, entry.height), entry.name
    windows = pd.read_parquet(output / "windows")
    bad = windows[windows["status"] != schema.OK]
    assert bad.empty, bad[["video_path", "clip_index", "window_index", "status", "error"]].to_string()
    clips = windows.groupby("video_path")["clip_index"].nunique()
    assert ((clips == 1) if shape == "whole" else (clips >= 3)).all(), clips[clips < 3]
    assert (windows.groupby(["video_path", "clip_index"]).size() >= (6 if shape == "whole" else 1)).all()


def test_clip_and_window_mp4s_hold_exactly_their_frames(run):
    _, output = run
    windows = pd.read_parquet(output / "windows").sort_values(["video_path", "clip_index", "window_index"])
    for video_path, video in windows.groupby("video_path"):
        name, seen = _name(video_path), []
        for clip_index, clip in video.groupby("clip_index"):
            first = int(clip["clip_start_s"].iloc[0] * clip["fps"].iloc[0])  # the clip's first source frame, as planned
            for window in clip.itertuples():
                assert _codec(window.window_mp4) == "h264", name
                expected = list(range(first + window.start_frame, first + window.end_frame + 1))
                assert decode_stamps(window.window_mp4) == expected, (name, clip_index, window.window_index)
            clip_mp4 = (output / "clips" / f"{clip['clip_id'].iloc[0]}.mp4").read_bytes()
            assert _codec(clip_mp4) == "h264", name
            stamps = decode_stamps(clip_mp4)
            assert stamps == list(range(first, first + clip["end_frame"].max() + 1)), (name, clip_index, stamps)
            seen += stamps
        # Every frame once, in order; only a last clip under 4 frames (no window) may be missing.
        assert seen == list(range(len(seen))) and NUM_FRAMES - len(seen) < 4, (name, seen)


def test_every_preview_is_an_animated_webp_of_its_window(run):
    _, output = run
    for window in pd.read_parquet(output / "windows").itertuples():
        assert parse_webp(window.preview_webp)["animated"], window.video_path
        first = int(window.clip_start_s * window.fps) + window.start_frame
        with Image.open(io.BytesIO(window.preview_webp)) as image:
            assert image.format == "WEBP" and image.n_frames >= 1
            for index in range(image.n_frames):
                image.seek(index)
                stamp = read_stamp(np.asarray(image.convert("L")))
                assert first <= stamp <= first + window.end_frame - window.start_frame, (window.video_path, stamp)


# H.264 4:2:0 with every packet timed: its whole-file clip is the source's packets, copied.
COPIED = {"libx264_yuv420p.mp4", "libx264_yuv420p.mov", "libx264_yuv420p.mkv", "libx264_yuv420p.flv", "libx264_yuv420p.3gp",
          "libx264_yuv420p_bframes.mp4", "libx264_yuv420p_bframes_ntsc.mp4", "libx264_yuv420p.f4v", "libx264_yuv420p.m4v"}


def test_whole_file_as_one_window_is_copied_or_encoded(corpus):
    """In process, no Dask: the clip's mp4 is its only window's, and a copy where one applies."""
    videos = read_videos(pd.DataFrame({"video_path": sorted(str(p) for p in corpus.iterdir())}), VideoReaderStage(str(corpus)))
    clips = make_clips(videos, FixedStrideClipStage(clip_len_s=10.0, min_clip_length_s=0.01))
    windows = prepare_windows(clips, CaptionPreparationStage(window_size=64, remainder_threshold=32))
    assert len(windows) == len(MATRIX) and (windows["status"] == schema.OK).all(), windows[["video_path", "status", "error"]]
    copied = set()
    for window in windows.itertuples():
        assert window.window_mp4 == window.clip_mp4 and _codec(window.clip_mp4) == "h264", window.video_path
        assert decode_stamps(window.clip_mp4) == list(range(NUM_FRAMES)), window.video_path
        if video_packets(window.clip_mp4) == video_packets(window.video_path):
            copied.add(_name(window.video_path))
    assert copied >= COPIED, COPIED - copied


def _codec(mp4: bytes) -> str:
    with av.open(io.BytesIO(mp4)) as container:
        return container.streams.video[0].codec_context.name
