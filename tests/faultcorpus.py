"""The bad-input corpus for the fault-injection tests, generated with PyAV and plain file writes.

``build_corpus(folder)`` returns {path: expected video status}.
"""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

import av
from videogen import stamped_frame, write_audio_only, write_stamped_video


def _encode(path: Path, frames: int, rate=Fraction(30), width=176, height=128, *, pts=None, time_base=None, options=None,
            rotation: int | None = None, fmt=None) -> Path:
    with av.open(str(path), "w", format=fmt, options=options or {}) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        if time_base is not None:
            stream.codec_context.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(stamped_frame(i, width, height), format="rgb24")
            frame.pts = i if pts is None else pts[i]
            frame.time_base = time_base or 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def build_corpus(folder: Path) -> dict[Path, str]:
    folder.mkdir(parents=True, exist_ok=True)
    expected: dict[Path, str] = {}
    good = write_stamped_video(folder / "good.mp4", 90, 30)
    expected[good] = "ok"

    zero = folder / "zero bytes.mp4"
    zero.write_bytes(b"")
    expected[zero] = "read_failed"

    data = good.read_bytes()
    truncated = folder / "truncated.mp4"  # cut mid-stream, index (moov) lost at the end
    truncated.write_bytes(data[: len(data) // 2])
    expected[truncated] = "read_failed"

    faststart = _encode(folder / "faststart.tmp", 30, options={"movflags": "faststart"}, fmt="mp4")
    raw = faststart.read_bytes()
    header_only = folder / "header only.mp4"  # ftyp + moov, no media data
    header_only.write_bytes(raw[: raw.find(b"mdat") - 4])
    faststart.unlink()
    expected[header_only] = "read_failed"

    text = folder / "notes.mp4"
    text.write_text("this is a text file with a video's name\n" * 20)
    expected[text] = "read_failed"

    audio = write_audio_only(folder / "audio only.mp4")
    expected[audio] = "no_video_stream"

    corrupt = bytearray(write_stamped_video(folder / "corrupt.tmp.mp4", 300, 30, width=320, height=240).read_bytes())
    rng = random.Random(7)
    middle = len(corrupt) // 2
    corrupt[middle : middle + 4096] = bytes(rng.getrandbits(8) for _ in range(4096))
    (folder / "corrupt.tmp.mp4").unlink()
    corrupt_path = folder / "corrupt middle.mp4"
    corrupt_path.write_bytes(bytes(corrupt))
    expected[corrupt_path] = "ok"  # the damaged frames are skipped; the row carries a warning

    expected[write_stamped_video(folder / "one frame.mp4", 1, 30)] = "too_short"
    expected[write_stamped_video(folder / "short 1s.mp4", 30, 30)] = "too_short"

    raw_h264 = folder / "no timestamps.mp4"  # an Annex-B H.264 stream: no container, no timestamps
    _encode(folder / "raw.h264", 60, fmt="h264")
    raw_h264.write_bytes((folder / "raw.h264").read_bytes())
    (folder / "raw.h264").unlink()
    expected[raw_h264] = "ok"

    steps, t = [], 0
    jitter = random.Random(3)
    for _ in range(120):
        steps.append(t)
        t += jitter.choice([16, 33, 50, 67])
    expected[_encode(folder / "variable rate.mp4", 120, pts=steps, time_base=Fraction(1, 1000))] = "ok"
    expected[_encode(folder / "rotated.mp4", 60, rotation=90)] = "ok"
    expected[_encode(folder / "strip 4000x16.mp4", 60, width=4000, height=16)] = "encode_failed"
    expected[_encode(folder / "8k.mp4", 6, rate=Fraction(2), width=7680, height=4320)] = "ok"  # 3 s at 2 fps

    unsupported = folder / "unsupported codec.mp4"
    data = good.read_bytes()
    tag = data.find(b"avc1", data.find(b"stsd"))
    unsupported.write_bytes(data[:tag] + b"zzzz" + data[tag + 4 :])
    expected[unsupported] = "read_failed"

    directory = folder / "a directory.mp4"  # exists, but cannot be read as a file
    directory.mkdir()
    expected[directory] = "read_failed"
    expected[folder / "missing.mp4"] = "read_failed"

    for name in ("quote's \"double\".mp4", "unicode vidéo 日本.mp4", "shell $(touch pwned); rm -rf x | y `z`.mp4"):
        expected[write_stamped_video(folder / name, 60, 30)] = "ok"
    return expected
