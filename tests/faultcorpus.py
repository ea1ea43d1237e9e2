"""The bad-input corpus for the fault-injection tests, generated with PyAV and plain file writes.

``build_corpus(folder)`` returns {path: expected video status}.
"""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

from videogen import write_audio_only, write_stamped_video


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

    faststart = write_stamped_video(folder / "faststart.tmp", 30, container_format="mp4", container_options={"movflags": "faststart"})
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
    write_stamped_video(folder / "raw.h264", 60, container_format="h264")
    raw_h264.write_bytes((folder / "raw.h264").read_bytes())
    (folder / "raw.h264").unlink()
    expected[raw_h264] = "ok"

    steps, t = [], 0
    jitter = random.Random(3)
    for _ in range(120):
        steps.append(t)
        t += jitter.choice([16, 33, 50, 67])
    expected[write_stamped_video(folder / "variable rate.mp4", 120, pts=steps, time_base=Fraction(1, 1000))] = "ok"
    expected[write_stamped_video(folder / "rotated.mp4", 60, rotation=90)] = "ok"
    expected[write_stamped_video(folder / "strip 4000x16.mp4", 60, width=4000, height=16)] = "encode_failed"
    expected[write_stamped_video(folder / "8k.mp4", 6, Fraction(2), width=7680, height=4320)] = "ok"  # 3 s at 2 fps

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
