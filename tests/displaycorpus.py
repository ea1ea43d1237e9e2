"""Videos written the way phones, cameras, DVDs and editors write them, by Debian's ffmpeg CLI (not
PyAV: the point is metadata as other tools write it), and what ffmpeg itself shows for each.

Every picture is four coloured quadrants (orange, green, blue, grey: which is where tells the
orientation, their values the colour), stored at its case's size and pixel aspect. The
reference for a case is ffmpeg's own decode of the source, which turns it upright and
converts its colours by its tags, as players do, scaled to square pixels.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FFMPEG = shutil.which("ffmpeg")
QUADRANTS = {"orange": (255, 128, 0), "green": (32, 192, 64), "blue": (32, 64, 224), "grey": (200, 200, 200)}
_LAYOUT = ("orange", "green", "blue", "grey")  # top-left, top-right, bottom-left, bottom-right as stored


@dataclass(frozen=True)
class Case:
    name: str
    suffix: str
    encode: tuple[str, ...]  # ffmpeg output options of the first encode
    size: tuple[int, int] = (320, 180)
    then: tuple[str, ...] = ()  # a second pass over the file with -c copy (rotation tags, cuts)
    before: str = ""  # a still picture track first: "png" (mkv cover) or "mjpeg" (mp4 thumbnail)
    seconds: float = 2.0
    rate: int = 30
    pattern_filters: str = ""  # filters after the pattern (pixel aspect, colour matrix)
    # How players read what ffmpeg's CLI does not: untagged HD is BT.709 to players (mpv, browsers,
    # VLC), while ffmpeg 5.1's scaler assumes BT.601 for anything untagged.
    shown_as: str = ""
    # Frames unevenly spaced: by ``pattern_filters`` (setpts), else 4 s at 5 fps then 4 s at 30 fps (the pattern twice).
    variable_rate: bool = False


_H264 = ("-c:v", "libx264", "-pix_fmt", "yuv420p")
CASES = [
    *(Case(f"rot{r}_h264_mp4", ".mp4", _H264, then=("-metadata:s:v:0", f"rotate={r}")) for r in (90, 180, 270)),
    # iPhone-style HEVC in .mov, and ProRes from an editor.
    *(Case(f"rot{r}_hevc_mov", ".mov", ("-c:v", "libx265", "-tag:v", "hvc1", "-pix_fmt", "yuv420p", "-x265-params", "log-level=error"),
           then=("-metadata:s:v:0", f"rotate={r}")) for r in (90, 180, 270)),
    *(Case(f"rot{r}_prores_mov", ".mov", ("-c:v", "prores_ks", "-profile:v", "2"), then=("-metadata:s:v:0", f"rotate={r}"))
      for r in (90, 180, 270)),
    Case("sar_64_45_mpeg2", ".mpg", ("-c:v", "mpeg2video", "-q:v", "2", "-pix_fmt", "yuv420p"), size=(720, 576),
         rate=25, pattern_filters="setsar=64/45"),
    Case("sar_16_15_h264", ".mp4", _H264, size=(720, 576), rate=25, pattern_filters="setsar=16/15"),
    # The pixel aspect only in the container (mp4 'pasp', as a remux with -aspect writes it): players take it.
    Case("sar_container_only_mp4", ".mp4", _H264, size=(640, 360), then=("-aspect", "4:3")),
    Case("rot90_sar_container_mp4", ".mp4", _H264, size=(640, 360), then=("-aspect", "4:3", "-metadata:s:v:0", "rotate=90")),
    Case("cover_png_mkv", ".mkv", _H264, before="png"),
    Case("thumbnail_mjpeg_mp4", ".mp4", _H264, before="mjpeg"),
    Case("bt709_limited", ".mp4", ("-c:v", "libx264", "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
                                   "-color_range", "tv"), size=(1280, 720), pattern_filters="scale=out_color_matrix=bt709:out_range=tv,format=yuv420p"),
    Case("bt709_untagged_hd", ".mp4", _H264, size=(1280, 720), pattern_filters="scale=out_color_matrix=bt709:out_range=tv,format=yuv420p",
         shown_as="setparams=colorspace=bt709,"),
    Case("full_range_yuvj", ".mp4", ("-c:v", "libx264", "-colorspace", "bt709", "-color_range", "pc"), size=(640, 360),
         pattern_filters="scale=out_color_matrix=bt709:out_range=pc,format=yuvj420p"),
    Case("hdr10_hevc", ".mp4", ("-c:v", "libx265", "-pix_fmt", "yuv420p10le", "-color_primaries", "bt2020", "-color_trc", "smpte2084",
                                "-colorspace", "bt2020nc", "-x265-params", "log-level=error"),
         pattern_filters="scale=out_color_matrix=bt2020:out_range=tv"),
    Case("edit_list_cut", ".mp4", ("-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "60"), seconds=6.0, then=("-ss", "1")),
    # Camera-style interlacing: 50 pictures a second woven into 25 frames of two fields each (top first).
    Case("interlaced_mpeg2", ".mpg", ("-c:v", "mpeg2video", "-q:v", "2", "-flags", "+ilme+ildct", "-top", "1"), size=(720, 576),
         rate=50, pattern_filters="tinterlace=mode=interleave_top,setfield=tff,setsar=16/15"),
    # Variable frame rate as screen recorders and phones write it: each frame keeps its own time.
    Case("vfr_mp4", ".mp4", (*_H264, "-fps_mode", "vfr", "-enc_time_base", "1:90000"), seconds=4.0, variable_rate=True),
    Case("vfr_mkv", ".mkv", (*_H264, "-fps_mode", "vfr", "-enc_time_base", "1:90000"), seconds=4.0, variable_rate=True),
    # A pause: 25 fps with the clock jumping a second after frame 25 (a paused screen recording).
    Case("vfr_pause_mkv", ".mkv", (*_H264, "-fps_mode", "vfr"), rate=25, seconds=3.0,
         pattern_filters="setpts='(N/25+if(gte(N,25),1,0))/TB'", variable_rate=True),
    Case("interlaced_h264", ".mp4", ("-c:v", "libx264", "-flags", "+ilme+ildct", "-x264-params", "tff=1", "-pix_fmt", "yuv420p"),
         size=(720, 576), rate=50, pattern_filters="tinterlace=mode=interleave_top,setfield=tff"),
]


def _ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-v", "error", "-y", *args], check=True, capture_output=True, timeout=120)


def _pattern(case: Case, rate: int | None = None, tag: str = "") -> str:
    if case.variable_rate and rate is None and not case.pattern_filters:
        return f"{_pattern(case, 5, 'a')}[slow];{_pattern(case, 30, 'b')}[fast];[slow][fast]concat=n=2:v=1:a=0"
    rate = rate or case.rate
    width, height = case.size
    half = f"s={width // 2}x{height // 2}:d={case.seconds}:r={rate}"
    colours = [f"color=c=0x{'%02X%02X%02X' % QUADRANTS[name]}:{half}[{name}{tag}]" for name in _LAYOUT]
    # A bar moving down the grey quadrant for the first 0.9 s: motion, so an interlaced encode has fields
    # that differ; after it, a still picture, so any frame can be compared.
    # (fast: 40 lines a frame at 25 fps, so the two fields of an interlaced frame are 20 lines apart).
    bar = f"color=c=black:s={width // 2}x8:d={case.seconds}:r={rate}[bar{tag}]"
    graph = ";".join([*colours, bar]) + f";[grey{tag}][bar{tag}]overlay=x=0:y='if(lt(t,0.9),mod(t*1000,H),H)'[moving{tag}]"
    graph += f";[orange{tag}][green{tag}]hstack[top{tag}];[blue{tag}][moving{tag}]hstack[bottom{tag}];[top{tag}][bottom{tag}]vstack"
    return graph + (f",{case.pattern_filters}" if case.pattern_filters else "")


def build(case: Case, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{case.name}{case.suffix}"
    if target.exists():
        return target
    first = folder / f"{case.name}.first{case.suffix}"
    _ffmpeg("-f", "lavfi", "-i", _pattern(case), *case.encode, str(first))
    if case.before:
        still = folder / f"{case.name}.still.png"
        _ffmpeg("-f", "lavfi", "-i", "color=c=0xFF00FF:s=300x300:d=1", "-frames:v", "1", str(still))
        codec = ["-c:v:0", case.before] + (["-pix_fmt:v:0", "yuvj420p"] if case.before == "mjpeg" else [])
        _ffmpeg("-i", str(still), "-i", str(first), "-map", "0:v", "-map", "1:v", *codec, "-c:v:1", "copy", str(target))
    elif case.then:
        cut = [a for a in case.then if a in ("-ss",)]
        if cut:
            _ffmpeg(case.then[0], case.then[1], "-i", str(first), "-c", "copy", str(target))
        else:
            _ffmpeg("-i", str(first), "-c", "copy", *case.then, str(target))
    else:
        first.rename(target)
    first.unlink(missing_ok=True)
    return target


def reference_picture(source: Path, at_s: float = 0.0, stream: str = "v:0", shown_as: str = "") -> np.ndarray:
    """What ffmpeg shows of ``source``'s ``stream`` at ``at_s``: upright (autorotate), its colours by its tags,
    square pixels. (Given a cover picture larger than the video, ffmpeg's CLI would take the cover: the
    cases with one name the video stream.)"""
    out = source.with_suffix(".reference.png")
    _ffmpeg("-ss", str(at_s), "-i", str(source), "-map", f"0:{stream}", "-frames:v", "1", "-vf",
            f"{shown_as}scale=trunc(iw*sar/2)*2:ih,setsar=1", str(out))
    return read_png(out)


def decode_with_ffmpeg(data_path: Path, at_s: float = 0.0, shown_as: str = "") -> np.ndarray:
    """Our mp4 as ffmpeg (a player) shows it: rotation and pixel aspect applied (``shown_as``: as for its
    source, where the mp4 is a copy of it)."""
    out = data_path.with_suffix(".shown.png")
    _ffmpeg("-ss", str(at_s), "-i", str(data_path), "-frames:v", "1", "-vf", f"{shown_as}scale=trunc(iw*sar/2)*2:ih,setsar=1", str(out))
    return read_png(out)


def read_png(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def quadrant_colours(picture: np.ndarray) -> list[np.ndarray]:
    """The mean colour around the centre of each quadrant (top-left, top-right, bottom-left, bottom-right),
    away from edges and the moving bar."""
    height, width = picture.shape[:2]
    colours = []
    for y, x in ((0.25, 0.25), (0.25, 0.75), (0.75, 0.25), (0.75, 0.60)):
        cy, cx = int(y * height), int(x * width)
        dy, dx = max(1, height // 16), max(1, width // 32)
        colours.append(picture[cy - dy : cy + dy, cx - dx : cx + dx].reshape(-1, 3).astype(float).mean(axis=0))
    return colours


def orientation(picture: np.ndarray) -> tuple[str, ...]:
    """Which named colour each quadrant is nearest to."""
    names = list(QUADRANTS)
    return tuple(names[int(np.argmin([np.abs(c - np.array(QUADRANTS[n])).sum() for n in names]))] for c in quadrant_colours(picture))


def ffprobe_stream(path: Path) -> dict:
    result = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_streams", "-of", "json", str(path)],
                            check=True, capture_output=True, text=True, timeout=60)
    return json.loads(result.stdout)["streams"][0]
