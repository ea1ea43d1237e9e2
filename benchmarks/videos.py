"""Long benchmark inputs, generated once and cached: moving content at 30 fps.

    python benchmarks/videos.py DEST [--scale 1.0]

A large textured plane (smooth random blobs) pans under the camera, with
squares moving across it, so every frame differs and the encoder has real
motion to track. Frames are built straight in YUV 4:2:0 (no colour
conversion) and encoded with libx264 at a 2-second key-frame interval, like
camera or stream footage.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

FPS = 30
LONG_VIDEOS = ((1280, 720, 10.0), (1920, 1080, 30.0))  # width, height, minutes


def _blobs(rng: np.random.Generator, height: int, width: int, scale: int) -> np.ndarray:
    """Smooth random texture in [0, 255]: low-resolution noise, upsampled."""
    small = rng.random((height // scale + 2, width // scale + 2))
    rows = np.repeat(small, scale, axis=0)[:height]
    texture = np.repeat(rows, scale, axis=1)[:, :width]
    # A 1-2-1 blur, twice, each way, rounds the blocks off.
    for axis in (0, 1, 0, 1):
        texture = (np.roll(texture, 1, axis) + 2 * texture + np.roll(texture, -1, axis)) / 4
    return (texture * 200 + 28).astype(np.uint8)


def write_panning_video(path: Path, width: int, height: int, seconds: float, fps: int = FPS, seed: int = 0) -> Path:
    """Write ``seconds`` of panning, moving content to ``path`` (H.264 mp4)."""
    rng = np.random.default_rng(seed)
    luma = _blobs(rng, 2 * height, 2 * width, 24)
    chroma = [_blobs(rng, height, width, 12) // 2 + 64 for _ in range(2)]
    tmp = path.with_suffix(".partial.mp4")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "superfast", "crf": "23", "g": str(2 * fps)}
        stream.codec_context.thread_count = 0  # all cores
        plane = np.empty((height * 3 // 2, width), dtype=np.uint8)
        for index in range(int(seconds * fps)):
            t = index / fps
            # The camera drifts along a Lissajous path over the plane.
            x = int((math.sin(t * 0.21) + 1) / 2 * (width - 2)) & ~1
            y = int((math.sin(t * 0.13 + 1) + 1) / 2 * (height - 2)) & ~1
            plane[:height] = luma[y : y + height, x : x + width]
            plane[height : height + height // 4] = chroma[0][y // 2 : y // 2 + height // 2, x // 2 : x // 2 + width // 2].reshape(height // 4, width)
            plane[height + height // 4 :] = chroma[1][y // 2 : y // 2 + height // 2, x // 2 : x // 2 + width // 2].reshape(height // 4, width)
            for k in range(4):
                size = height // (6 + k)
                sx = int((t * (80 + 37 * k) + 300 * k) % (width - size))
                sy = int((height - size) * (0.5 + 0.45 * math.sin(t * (0.7 + 0.3 * k) + k)))
                plane[sy : sy + size, sx : sx + size] = 40 + 50 * k
            frame = av.VideoFrame.from_ndarray(plane, format="yuv420p")
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    tmp.rename(path)
    return path


def ensure_long_videos(dest: Path, scale: float = 1.0) -> list[Path]:
    """The long inputs under ``dest`` (``scale`` shortens them for a quick run), generated when missing."""
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for width, height, minutes in LONG_VIDEOS:
        minutes *= scale
        path = dest / f"pan_{height}p_{minutes:g}min.mp4"
        if not path.exists():
            start = time.perf_counter()
            print(f"generating {path} ({width}x{height}, {minutes:g} min at {FPS} fps) ...", file=sys.stderr, flush=True)
            write_panning_video(path, width, height, minutes * 60)
            print(f"  {time.perf_counter() - start:.0f} s, {path.stat().st_size / 1e6:.0f} MB", file=sys.stderr, flush=True)
        paths.append(path)
    return paths


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path)
    parser.add_argument("--scale", type=float, default=1.0, help="length factor (0.1: a tenth as long)")
    args = parser.parse_args(argv)
    for path in ensure_long_videos(args.dest, args.scale):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
