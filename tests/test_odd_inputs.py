"""Odd but real inputs: damaged streams, odd containers and timestamps, odd shapes.

Each one either comes out complete or as rows with a specific status and a
clear message; none fails the partition it is in.
"""

from __future__ import annotations

import random
from fractions import Fraction

import av
import pandas as pd
import pytest
from videogen import decode_stamps, parse_webp, stamped_frame, write_audio_only, write_stamped_video

from daskcap import schema
from daskcap.stages.clip import FixedStrideClipStage, make_clips
from daskcap.stages.prepare import CaptionPreparationStage, prepare_windows
from daskcap.stages.preview import PreviewStage
from daskcap.stages.read import VideoReaderStage, read_videos
from daskcap.stages.write import finish_videos


def _run(*paths, clip_len_s=10.0, min_clip_length_s=2.0):
    """read -> clip -> prepare -> preview in process; returns (videos, windows)."""
    videos = read_videos(pd.DataFrame({"video_path": [str(p) for p in paths]}), VideoReaderStage("unused"))
    clips = make_clips(videos, FixedStrideClipStage(clip_len_s=clip_len_s, min_clip_length_s=min_clip_length_s))
    windows = prepare_windows(clips, CaptionPreparationStage(), preview=PreviewStage())
    return finish_videos(videos, windows, clips).set_index("video_path"), windows


def _write_frames(path, num_frames, rate, *, fmt=None, **options):
    return write_stamped_video(path, num_frames, rate, container_format=fmt, **options)


def test_corrupt_bytes_mid_stream_keep_the_rest(tmp_path, stamped):
    data = bytearray(stamped(300, 30, width=320, height=240).read_bytes())
    rng = random.Random(7)
    middle = len(data) // 2
    data[middle : middle + 4096] = bytes(rng.getrandbits(8) for _ in range(4096))
    damaged = tmp_path / "corrupt middle.mp4"
    damaged.write_bytes(bytes(data))
    videos, windows = _run(damaged, stamped(60))
    assert len(videos) == 2 and (videos["status"] == schema.OK).all()
    window = windows.iloc[0]
    assert window.status == schema.OK
    assert window.error.startswith("warning:") and "corrupt packet" in window.error
    assert window.end_frame + 1 < 300  # frames were lost, and the row says so
    assert videos.iloc[0]["error"] == window.error
    stamps = decode_stamps(window.window_mp4)  # damaged frames show concealed garbage
    assert len(stamps) == window.end_frame + 1 and stamps[0] == 0 and stamps[-1] == 299


def test_truncated_file_with_its_index_up_front_is_flagged(tmp_path):
    full = tmp_path / "full.mp4"
    with av.open(str(full), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 176, 128, "yuv420p"
        for i in range(300):
            frame = av.VideoFrame.from_ndarray(stamped_frame(i, 176, 128), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: int(full.stat().st_size * 0.6)])
    videos, windows = _run(cut)
    assert videos.iloc[0]["status"] == schema.OK and videos.iloc[0]["num_frames"] == 300
    assert "expected frames decoded" in windows.iloc[0].error
    assert decode_stamps(windows.iloc[0].window_mp4) == list(range(windows.iloc[0].end_frame + 1))


def test_mpeg_program_stream_keeps_its_first_group_of_pictures(tmp_path):
    path = _write_frames(tmp_path / "mpeg2.mpg", 100, Fraction(25), codec="mpeg2video", fmt="mpeg")
    _, windows = _run(path)
    assert windows["status"].tolist() == [schema.OK]
    assert decode_stamps(windows.iloc[0].window_mp4) == list(range(100))


def test_stream_starting_late_is_measured_by_its_own_length(tmp_path):
    path = _write_frames(tmp_path / "offset.mkv", 240, Fraction(30), pts=[150 + i for i in range(240)])
    videos, windows = _run(path)
    video = videos.iloc[0]
    assert video.duration_s == pytest.approx(8.0, abs=0.05)
    assert (video.num_clips, video.num_windows) == (1, 1)
    assert decode_stamps(windows.iloc[0].window_mp4) == list(range(240))


def test_variable_frame_rate(tmp_path):
    rng = random.Random(3)
    pts, t = [], 0
    for _ in range(240):
        pts.append(t)
        t += rng.choice([16, 33, 50, 67])
    path = _write_frames(tmp_path / "vfr.mp4", 240, Fraction(30), pts=pts, time_base=Fraction(1, 1000))
    videos, windows = _run(path, clip_len_s=60.0)
    assert (windows["status"] == schema.OK).all()
    stamps = [s for w in windows.itertuples() for s in decode_stamps(w.window_mp4)]
    assert stamps == list(range(240))  # every frame once, in order


ODD_TIMING = {
    # No stored presentation times, and B-frames: FFmpeg's first frame comes out
    # a frame after the stream's start time, which shifted every later clip by one.
    "avi-b-frames": dict(suffix=".avi", codec="mpeg4", codec_options={"bf": "2"}),
    "m2v-b-frames": dict(suffix=".m2v", fmt="mpeg2video", codec="mpeg2video", codec_options={"bf": "2"}),
    # The raw demuxer's 25 fps is the average rate; the timestamps follow the stream's 29.97.
    "m2v-ntsc": dict(suffix=".m2v", fmt="mpeg2video", codec="mpeg2video", rate=Fraction(30000, 1001)),
    # No timestamps at all, and a demuxer that cannot seek: later clips decode from the start.
    "h264-elementary-stream": dict(suffix=".h264", fmt="h264", codec_options={"preset": "medium"}, rate=Fraction(30000, 1001)),
    # FFmpeg 8 gives DV its time base's 60000 as average rate.
    "dv": dict(suffix=".dv", fmt="dv", codec="dvvideo", width=720, height=576),
}


@pytest.mark.parametrize("case", sorted(ODD_TIMING))
def test_clips_of_odd_timing_get_their_own_frames(tmp_path, case):
    options = dict(ODD_TIMING[case])
    suffix, rate = options.pop("suffix"), options.pop("rate", Fraction(25))
    path = _write_frames(tmp_path / f"{case}{suffix}", 60, rate, gop=12, **options)
    videos, windows = _run(path, clip_len_s=0.8, min_clip_length_s=0.1)
    video = videos.iloc[0]
    assert (video.status, video.num_frames, video.fps) == (schema.OK, 60, pytest.approx(float(rate)))
    assert video.num_clips == 3 and (windows["status"] == schema.OK).all() and windows["error"].isna().all()
    for window in windows.itertuples():
        first = int(window.clip_start_s * video.fps)
        assert decode_stamps(window.window_mp4) == list(range(first + window.start_frame, first + window.end_frame + 1))
    assert sum(w.end_frame - w.start_frame + 1 for w in windows.itertuples()) == 60


def test_non_utf8_title_does_not_make_a_video_unreadable(tmp_path):
    path = _write_frames(tmp_path / "latin1.mp4", 60, Fraction(30), metadata={"title": "cafe CAFE"})
    raw = path.read_bytes()
    assert raw.count(b"cafe CAFE") == 1
    path.write_bytes(raw.replace(b"cafe CAFE", b"caf\xe9 CAFE"))
    videos, windows = _run(path)
    assert videos.iloc[0]["status"] == schema.OK and len(windows) == 1


def test_audio_only_file(tmp_path):
    path = write_audio_only(tmp_path / "audio.mp4")
    videos, windows = _run(path)
    assert videos.iloc[0]["status"] == schema.NO_VIDEO_STREAM and windows.empty


def test_short_windows_still_get_animated_previews(tmp_path):
    path = write_stamped_video(tmp_path / "fast.mp4", 720, 240)  # 3 s at 240 fps: windows under 2 s
    _, windows = _run(path)
    assert len(windows) == 3
    for window in windows.itertuples():
        webp = parse_webp(window.preview_webp)
        assert webp["animated"] and webp["loop"] == 0 and len(webp["frames"]) == 2


def test_extreme_aspect_ratio_fails_its_windows_clearly(tmp_path):
    path = _write_frames(tmp_path / "strip.mp4", 60, Fraction(30), codec="libx264", width=1680, height=8)
    videos, windows = _run(path)
    assert windows["status"].tolist() == [schema.ENCODE_FAILED]
    assert "aspect ratio" in windows.iloc[0].error
    assert videos.iloc[0]["status"] == schema.ENCODE_FAILED  # nothing usable: not "partial"
