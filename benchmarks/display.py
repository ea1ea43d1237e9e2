"""What deciding the picture as shown costs: the prepare stage (decode, mp4s, model input, previews)
on 10 s clips written by Debian's ffmpeg, untagged 720p, rotated 720p and full-range 1080p, timed
in one run against another checkout of daskcap (``--baseline-src``, e.g. a worktree of the commit
before), each in its own process, alternating, best of ``--repeats``.

    python benchmarks/display.py --baseline-src /tmp/old [--repeats 3] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_X264 = ["-c:v", "libx264", "-pix_fmt", "yuv420p"]
# name: (size, encode, a second pass with -c copy, clip length): a 10 s clip of a 10 s H.264 file is copied, 5 s clips are encoded.
INPUTS = {
    "720p untagged, copied": ("1280x720", _X264, [], 10.0),
    "720p untagged, encoded": ("1280x720", _X264, [], 5.0),
    "720p rotated 90": ("1280x720", _X264, ["-metadata:s:v:0", "rotate=90"], 5.0),
    "1080p untagged, encoded": ("1920x1080", _X264, [], 5.0),
    "1080p full range": ("1920x1080", ["-c:v", "libx264", "-pix_fmt", "yuvj420p", "-color_range", "pc", "-colorspace", "bt709"], [], 5.0),
}

_TIMER = r"""
import json, sys, time
import pandas as pd
from daskcap.stages.clip import FixedStrideClipStage, make_clips
from daskcap.stages.prepare import CaptionPreparationStage, prepare_windows
from daskcap.stages.preview import PreviewStage
from daskcap.stages.read import VideoReaderStage, read_videos
path = sys.argv[1]
videos = read_videos(pd.DataFrame({"video_path": [path]}), VideoReaderStage(input_video_path=path))
clips = make_clips(videos, FixedStrideClipStage(clip_len_s=float(sys.argv[2])))
start = time.perf_counter()
windows = prepare_windows(clips, CaptionPreparationStage(), PreviewStage())
wall = time.perf_counter() - start
assert (windows["status"] == "ok").all(), windows["error"].tolist()
print(json.dumps({"prepare_s": wall, "windows": len(windows)}))
"""


def make_inputs(folder: Path) -> dict[str, Path]:
    paths = {}
    for name, (size, encode, then, _) in INPUTS.items():
        target = folder / (name.replace(" ", "_").replace(",", "") + ".mp4")
        source = f"testsrc2=s={size}:r=30:d=10"
        first = target.with_suffix(".first.mp4") if then else target
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", source, *encode, str(first)], check=True)
        if then:
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(first), "-c", "copy", *then, str(target)], check=True)
        paths[name] = target
    return paths


def time_prepare(src: Path, video: Path, clip_len_s: float) -> float:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", _TIMER, str(video), str(clip_len_s)], env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["prepare_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-src", type=Path, required=True, help="another checkout of daskcap (its root folder)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        inputs = make_inputs(Path(tmp))
        figures = {}
        for name, video in inputs.items():
            times = {"this": [], "baseline": []}
            for _ in range(args.repeats):
                clip_len_s = INPUTS[name][3]
                times["this"].append(time_prepare(REPO, video, clip_len_s))
                times["baseline"].append(time_prepare(args.baseline_src, video, clip_len_s))
            this, baseline = min(times["this"]), min(times["baseline"])
            figures[name] = {"this_s": round(this, 3), "baseline_s": round(baseline, 3), "ratio": round(this / baseline, 3)}
            print(f"{name:24s}  this {this:6.2f} s   baseline {baseline:6.2f} s   ratio {this / baseline:5.3f}")
    if args.out:
        args.out.write_text(json.dumps({"prepare_10s_clip": figures, "repeats": args.repeats}, indent=2) + "\n")


if __name__ == "__main__":
    main()
