"""What the model sees, the previews show and the mp4s play is what a viewer sees: files written by
Debian's ffmpeg the way phones, cameras, DVDs and editors write them (tests/displaycorpus.py), run
through ``daskcap run``, compared with ffmpeg's own decode of each source (rotation applied, colours
by their tags, square pixels): orientation by coloured quadrants, aspect within 5%, colours within a
few levels; the real video taken over covers and thumbnails; edit lists honoured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import displaycorpus as dc
from daskcap.schema import unpack_frames

pytestmark = pytest.mark.skipif(dc.FFMPEG is None, reason="Debian's ffmpeg is not installed (make test installs it)")
CASES = {case.name: case for case in dc.CASES}
# Levels a colour may differ by: the model input is resized (bicubic) 4:2:0; the preview is also a lossy WebP.
MODEL_LEVELS, PREVIEW_LEVELS, MP4_LEVELS = 6, 12, 8


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    """Every case through one ``daskcap run`` (model input written), its videos and windows tables."""
    folder = tmp_path_factory.mktemp("display")
    for case in dc.CASES:
        dc.build(case, folder / "videos")
    out = folder / "out"
    result = subprocess.run(
        [sys.executable, "-m", "daskcap.cli", "run", str(folder / "videos"), str(out), "--write-model-input",
         # Several windows a clip, so window mp4s are cut from the clip's encode at key frames.
         "--fixed-stride-split-duration", "3", "--captioning-window-size", "32", "--captioning-remainder-threshold", "16",
         "--quiet", "--no-report", "--n-workers", "2"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    videos = pd.read_parquet(out / "videos").set_index("video_path")
    windows = pd.read_parquet(out / "windows")
    return folder, videos, windows


def _case_path(folder: Path, name: str) -> Path:
    return folder / "videos" / f"{name}{CASES[name].suffix}"


def _first_window(windows: pd.DataFrame, path: Path) -> pd.Series:
    rows = windows[(windows["video_path"] == str(path)) & (windows["clip_index"] == 0) & (windows["window_index"] == 0)]
    assert len(rows) == 1, f"no first window for {path.name}"
    return rows.iloc[0]


def _reference(folder: Path, name: str, at_s: float = 0.0) -> np.ndarray:
    case = CASES[name]
    return dc.reference_picture(_case_path(folder, name), at_s, stream="v:1" if case.before else "v:0", shown_as=case.shown_as)


def _untagged(mp4: Path) -> bool:
    return dc.ffprobe_stream(mp4).get("color_space") in (None, "unknown")


def _model_picture(window: pd.Series) -> np.ndarray:
    return unpack_frames(window["sampled_frames"], window["num_sampled_frames"], window["sampled_height"], window["sampled_width"])[0]


def _preview_picture(window: pd.Series, tmp_path: Path) -> np.ndarray:
    # Pillow's libwebp, as a browser shows it (Debian's ffmpeg 5.1 does not decode animated WebP).
    import io

    from PIL import Image

    with Image.open(io.BytesIO(window["preview_webp"])) as image:
        return np.asarray(image.convert("RGB"))


def _clip_picture(folder: Path, window: pd.Series, name: str) -> np.ndarray:
    clip = folder / "out" / "clips" / f"{window['clip_id']}.mp4"
    return dc.decode_with_ffmpeg(clip, shown_as=CASES[name].shown_as if _untagged(clip) else "")


def _assert_same_picture(ours: np.ndarray, reference: np.ndarray, levels: float, what: str) -> None:
    assert dc.orientation(ours) == dc.orientation(reference), f"{what}: {dc.orientation(ours)} shown as {dc.orientation(reference)}"
    ours_aspect, reference_aspect = ours.shape[1] / ours.shape[0], reference.shape[1] / reference.shape[0]
    assert ours_aspect == pytest.approx(reference_aspect, rel=0.05), f"{what}: aspect {ours_aspect:.3f}, shown {reference_aspect:.3f}"
    for mine, theirs in zip(dc.quadrant_colours(ours), dc.quadrant_colours(reference)):
        assert np.abs(mine - theirs).max() <= levels, f"{what}: colour {mine.round()} where ffmpeg shows {theirs.round()}"


PICTURE_CASES = [c.name for c in dc.CASES if c.name != "hdr10_hevc" and not c.variable_rate]
VFR_CASES = [c.name for c in dc.CASES if c.variable_rate]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", PICTURE_CASES)
def test_model_input_previews_and_clips_show_what_ffmpeg_shows(corpus_run, name, tmp_path):
    folder, videos, windows = corpus_run
    path = _case_path(folder, name)
    assert videos.loc[str(path), "status"] == "ok", videos.loc[str(path), "error"]
    window = _first_window(windows, path)
    assert window["status"] == "ok" and pd.isna(window["error"]), window["error"]  # no false warning
    reference = _reference(folder, name)
    _assert_same_picture(_model_picture(window), reference, MODEL_LEVELS, f"{name} model input")
    _assert_same_picture(_preview_picture(window, tmp_path), reference, PREVIEW_LEVELS, f"{name} preview")
    _assert_same_picture(_clip_picture(folder, window, name), reference, MP4_LEVELS, f"{name} clip mp4")
    # A later window's own mp4, cut from the clip's encode: as shown at its first frame.
    later = windows[(windows["video_path"] == str(path)) & (windows["clip_index"] == 0) & (windows["window_index"] == 1)].iloc[0]
    assert later["status"] == "ok", later["error"]
    piece = tmp_path / "window1.mp4"
    piece.write_bytes(later["window_mp4"])
    at_s = later["start_frame"] / later["fps"]
    shown = dc.decode_with_ffmpeg(piece, shown_as=CASES[name].shown_as if _untagged(piece) else "")
    _assert_same_picture(shown, _reference(folder, name, at_s), MP4_LEVELS, f"{name} window 1 mp4")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_video_row_says_how_it_is_shown(corpus_run):
    folder, videos, _ = corpus_run
    row = lambda name: videos.loc[str(_case_path(folder, name))]  # noqa: E731
    rotated = row("rot90_h264_mp4")
    assert (rotated["width"], rotated["height"], rotated["rotation"]) == (320, 180, 90)  # stored size kept
    assert (rotated["display_width"], rotated["display_height"]) == (180, 320)
    dvd = row("sar_64_45_mpeg2")
    assert dvd["sample_aspect_ratio"] == "64:45" and (dvd["display_width"], dvd["display_height"]) == (1024, 576)
    assert row("bt709_limited")["color_space"] == "bt709" and row("full_range_yuvj")["color_range"] == "full"
    hdr = row("hdr10_hevc")
    assert (hdr["color_space"], hdr["color_transfer"], hdr["color_primaries"]) == ("bt2020", "smpte2084", "bt2020")
    assert row("interlaced_mpeg2")["field_order"] == "tt" and row("rot90_h264_mp4")["field_order"] == "progressive"


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", ["cover_png_mkv", "thumbnail_mjpeg_mp4"])
def test_a_cover_or_thumbnail_track_before_the_video_is_passed_over(corpus_run, name):
    folder, videos, windows = corpus_run
    video = videos.loc[str(_case_path(folder, name))]
    assert (video["status"], video["codec"], video["width"], video["stream_index"]) == ("ok", "h264", 320, 1)
    assert video["num_frames"] == 60


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_an_edit_listed_cut_has_its_true_duration_and_no_false_warning(corpus_run):
    folder, videos, windows = corpus_run
    path = _case_path(folder, "edit_list_cut")
    shown = dc.ffprobe_stream(path)
    video = videos.loc[str(path)]
    assert video["num_frames"] == 150 and video["duration_s"] == pytest.approx(5.0, abs=0.05)
    assert float(shown["duration"]) == pytest.approx(video["duration_s"], abs=0.05)
    mine = windows[windows["video_path"] == str(path)]
    assert (mine["status"] == "ok").all() and mine["error"].isna().all(), mine["error"].tolist()
    assert mine["clip_end_s"].max() == pytest.approx(5.0, abs=0.05)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_reencoded_mp4s_carry_the_sources_colour_and_aspect(corpus_run):
    folder, _, windows = corpus_run
    for name, expected in {
        "hdr10_hevc": {"color_space": "bt2020nc", "color_transfer": "smpte2084", "color_primaries": "bt2020"},
        "full_range_yuvj": {"color_range": "pc", "color_space": "bt709"},
        "bt709_limited": {"color_range": "tv", "color_space": "bt709", "color_primaries": "bt709"},
        "sar_64_45_mpeg2": {"sample_aspect_ratio": "64:45"},
    }.items():
        window = _first_window(windows, _case_path(folder, name))
        stream = dc.ffprobe_stream(folder / "out" / "clips" / f"{window['clip_id']}.mp4")
        assert {key: stream.get(key) for key in expected} == expected, name


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_an_hdr_source_is_tone_mapped_for_the_model_and_previews(corpus_run, tmp_path):
    """PQ codes shown as SDR would be washed out; tone-mapped, the quadrants keep their order of brightness
    and stay distinct colours, inside SDR's range."""
    folder, _, windows = corpus_run
    window = _first_window(windows, _case_path(folder, "hdr10_hevc"))
    for picture in (_model_picture(window), _preview_picture(window, tmp_path)):
        orange, green, blue, grey = dc.quadrant_colours(picture)
        assert orange[0] > orange[2] and green[1] > green[0] and blue[2] > blue[0]
        assert picture.min() >= 0 and picture.max() <= 255


def _combing(picture: np.ndarray) -> float:
    """How far rows differ from the mean of their neighbours in the moving quadrant (bottom right):
    high where the two fields of a frame, from two instants, interleave."""
    height, width = picture.shape[:2]
    grey = picture[height // 2 :, width // 2 :].astype(float).mean(axis=2)
    return float(np.abs(grey[1:-1] - (grey[:-2] + grey[2:]) / 2).mean())


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", ["interlaced_mpeg2", "interlaced_h264"])
def test_interlaced_sources_reach_the_model_deinterlaced(corpus_run, name):
    folder, _, windows = corpus_run
    path = _case_path(folder, name)
    window = windows[windows["video_path"] == str(path)].iloc[0]
    frames = unpack_frames(window["sampled_frames"], window["num_sampled_frames"], window["sampled_height"], window["sampled_width"])
    k = 1  # not the first frame, which a deinterlacer can only interpolate
    index = int(window["sampled_frame_indices"][k])
    size = f"{window['sampled_width']}:{window['sampled_height']}"
    woven = _ffmpeg_frame(path, index, f"scale={size}:flags=bicubic", "woven")
    deinterlaced = _ffmpeg_frame(path, index, f"bwdif=mode=send_frame,scale={size}:flags=bicubic", "bwdif")
    assert _combing(woven) > 2 * _combing(deinterlaced)  # the source does comb, and ffmpeg's bwdif removes it
    assert _combing(frames[k]) <= 1.25 * _combing(deinterlaced), (_combing(frames[k]), _combing(deinterlaced), _combing(woven))
    # The clip mp4 too (a whole H.264 file is re-encoded deinterlaced, not copied with its fields).
    clip = folder / "out" / "clips" / f"{window['clip_id']}.mp4"
    assert dc.ffprobe_stream(clip).get("field_order") in (None, "progressive")
    shown = _ffmpeg_frame(clip, index, f"scale={size}:flags=bicubic", "clip")
    assert _combing(shown) <= 1.25 * _combing(deinterlaced)


def _ffmpeg_frame(path: Path, index: int, filters: str, tag: str) -> np.ndarray:
    out = path.with_suffix(f".{tag}.png")
    subprocess.run([dc.FFMPEG, "-v", "error", "-y", "-i", str(path), "-vf", f"{filters},select=eq(n\\,{index})", "-frames:v", "1",
                    str(out)], check=True, capture_output=True, timeout=60)
    return dc.read_png(out)


def _frame_times(path: Path) -> np.ndarray:
    """Every shown frame's time from the first, as ffprobe decodes them."""
    result = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=best_effort_timestamp_time",
                             "-of", "csv=p=0", str(path)], check=True, capture_output=True, text=True, timeout=60)
    times = np.array(sorted(float(line.strip(",")) for line in result.stdout.split() if line.strip(",")))
    return times - times[0]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", VFR_CASES)
def test_a_variable_frame_rate_video_keeps_its_time(corpus_run, name, tmp_path):
    """4 s at 5 fps then 4 s at 30 fps, in 3 s clips: each clip holds the frames its span holds, its mp4 plays
    as long as its span, the model's frames are even in time, and nothing warns of lost frames."""
    folder, videos, windows = corpus_run
    path = _case_path(folder, name)
    times = _frame_times(path)
    video = videos.loc[str(path)]
    assert bool(video["variable_frame_rate"]) and video["num_frames"] == len(times)
    clips = windows[windows["video_path"] == str(path)].groupby("clip_index")
    assert clips.ngroups == video["num_clips"] >= 1
    for index, rows in clips:
        start_s, end_s = rows["clip_start_s"].iloc[0], rows["clip_end_s"].iloc[0]
        last = end_s >= video["duration_s"] - 0.001  # runs to the end of the stream
        held = times[(times >= start_s - 0.002) & ((times < end_s - 0.002) | last)]
        assert (rows["status"] == "ok").all() and rows["error"].isna().all(), rows["error"].tolist()  # no false warning
        assert rows["end_frame"].max() + 1 == len(held), f"clip {index}: {rows['end_frame'].max() + 1} frames, its span holds {len(held)}"
        clip = folder / "out" / "clips" / f"{rows['clip_id'].iloc[0]}.mp4"
        shown = _frame_times(clip)
        assert len(shown) == len(held)
        assert np.allclose(shown, held - held[0], atol=0.002)  # each frame at its own time: VFR stays VFR
        for window in rows.itertuples():  # the model's frames: the nearest to instants even in time
            own = held[window.start_frame : window.end_frame + 1]
            sampled = held[np.asarray(window.sampled_frame_indices)]
            for instant, chosen in zip(np.linspace(own[0], own[-1], len(sampled)), sampled):
                assert abs(chosen - instant) <= np.abs(own - instant).min() + 0.002, f"clip {index}: sampled at {sampled.round(2)}"


@pytest.fixture(scope="module")
def whole_vfr_run(corpus_run) -> tuple[Path, pd.DataFrame]:
    """The variable-rate files as one clip each (the default 10 s clips): an H.264 file that is its own clip is
    copied, packet for packet."""
    folder, _, _ = corpus_run
    videos = folder / "vfr-only"
    videos.mkdir()
    for name in VFR_CASES:
        (videos / _case_path(folder, name).name).symlink_to(_case_path(folder, name))
    out = folder / "out-whole"
    result = subprocess.run([sys.executable, "-m", "daskcap.cli", "run", str(videos), str(out), "--quiet", "--no-report"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, pd.read_parquet(out / "windows")


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", VFR_CASES)
def test_a_whole_variable_rate_video_as_one_clip_keeps_its_time(corpus_run, whole_vfr_run, name):
    folder, _, _ = corpus_run
    out, windows = whole_vfr_run
    path = folder / "vfr-only" / _case_path(folder, name).name
    rows = windows[windows["video_path"] == str(path)]
    assert (rows["status"] == "ok").all() and rows["error"].isna().all(), rows["error"].tolist()
    times = _frame_times(_case_path(folder, name))
    assert rows["end_frame"].max() + 1 == len(times)
    assert np.allclose(_frame_times(out / "clips" / f"{rows['clip_id'].iloc[0]}.mp4"), times, atol=0.002)
    for window in rows.itertuples():  # each window's own mp4 plays its frames at their times
        piece = out / f"window-{window.window_index}.mp4"
        piece.write_bytes(window.window_mp4)
        held = times[window.start_frame : window.end_frame + 1]
        assert np.allclose(_frame_times(piece), held - held[0], atol=0.002), window.window_index
