"""Baseline: time NVIDIA NeMo Curator 1.4.0's own CPU windowing and preview functions.

Runs under the venv made by ``benchmarks/setup_nemo.sh`` (not daskcap's venv).
For every clip mp4, in a pool worker, it times

* ``nemo_curator.utils.windowing_utils.split_video_into_windows`` (window
  frame sampling with PyAV plus one ffmpeg cut per window), and
* ``PreviewStage._generate_preview`` on every window (one ffmpeg webp encode
  each),

and records the CPU seconds of the worker and of its ffmpeg children. One clip
that fails is recorded with its error; the run goes on.

Usage::

    /tmp/nemo-venv/bin/python benchmarks/nemo_baseline.py \\
        --clips clips.json --processes 8 --out nemo.json
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import multiprocessing as mp
import resource
import time
import traceback
from pathlib import Path
from typing import Any

_PARAMS: dict[str, Any] = {}
_PREVIEW: Any = None  # the worker's PreviewStage


def _cpu_seconds() -> float:
    """User+system CPU of this process plus its waited-for children (ffmpeg)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def _init_worker(params: dict[str, Any], ready: Any) -> None:
    """Import NeMo (untimed), build the worker's PreviewStage, report ready."""
    global _PREVIEW
    import nemo_curator.tasks.video  # noqa: F401
    import nemo_curator.utils.windowing_utils  # noqa: F401
    from nemo_curator.stages.video.preview.preview import PreviewStage

    _PARAMS.update(params)
    # The dataclass __post_init__ sets .resources, whose cpus is ffmpeg's -threads.
    _PREVIEW = PreviewStage(
        target_fps=params["target_fps"],
        target_height=params["target_height"],
        num_cpus_per_worker=params["preview_cpus"],
        compression_level=params["compression_level"],
        quality=params["quality"],
    )
    ready.put(True)


def _process_clip(clip: dict[str, str]) -> dict[str, Any]:
    """Window and preview one clip; return its timings and sizes."""
    from nemo_curator.tasks.video import _Window
    from nemo_curator.utils.windowing_utils import split_video_into_windows

    p = _PARAMS
    rec: dict[str, Any] = {
        "id": clip["id"], "split_s": None, "preview_s": None, "cpu_s": None,
        "windows": [], "sampled_frames": [], "window_mp4_sizes": [], "webp_sizes": [],
        "error": None,
    }
    cpu0 = _cpu_seconds()
    try:
        data = Path(clip["path"]).read_bytes()

        t0 = time.perf_counter()
        mp4s, frames, infos = split_video_into_windows(
            data, p["window_size"], p["remainder_threshold"], p["sampling_fps"],
            return_bytes=True,
        )
        rec["split_s"] = time.perf_counter() - t0
        rec["windows"] = [[w.start, w.end] for w in infos]
        rec["sampled_frames"] = [0 if f is None else len(f) for f in frames]
        rec["window_mp4_sizes"] = [len(b) for b in mp4s]

        windows = [_Window(w.start, w.end, mp4_bytes=b) for w, b in zip(infos, mp4s)]
        t0 = time.perf_counter()
        for window in windows:
            _PREVIEW._generate_preview(window)
        rec["preview_s"] = time.perf_counter() - t0
        # _generate_preview logs ffmpeg failures and leaves webp_bytes None.
        rec["webp_sizes"] = [len(w.webp_bytes) if w.webp_bytes else 0 for w in windows]
        failed = [i for i, w in enumerate(windows) if w.webp_bytes is None]
        if failed:
            rec["error"] = f"preview failed for windows {failed}"
    except Exception as exc:  # noqa: BLE001 - one bad clip must not end the run
        rec["error"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    rec["cpu_s"] = _cpu_seconds() - cpu0
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=Path, required=True, help='JSON list of {"id", "path"}')
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--window-size", type=int, default=256)
    ap.add_argument("--remainder-threshold", type=int, default=128)
    ap.add_argument("--sampling-fps", type=float, default=2.0)
    ap.add_argument("--target-fps", type=float, default=1.0)
    ap.add_argument("--target-height", type=int, default=240)
    ap.add_argument("--quality", type=int, default=50)
    ap.add_argument("--compression-level", type=int, default=6)
    ap.add_argument("--preview-cpus", type=float, default=4.0,
                    help="PreviewStage num_cpus_per_worker = ffmpeg -threads (NeMo default 4)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    clips: list[dict[str, str]] = json.loads(args.clips.read_text())
    params = {
        "window_size": args.window_size, "remainder_threshold": args.remainder_threshold,
        "sampling_fps": args.sampling_fps, "target_fps": args.target_fps,
        "target_height": args.target_height, "quality": args.quality,
        "compression_level": args.compression_level, "preview_cpus": args.preview_cpus,
    }

    ready = mp.Queue()
    with mp.Pool(args.processes, initializer=_init_worker, initargs=(params, ready)) as pool:
        for _ in range(args.processes):  # every worker has imported NeMo
            ready.get()
        t0 = time.perf_counter()
        results = list(pool.imap(_process_clip, clips, chunksize=1))
        wall = time.perf_counter() - t0

    out = {
        "nemo_curator_version": importlib.metadata.version("nemo-curator"),
        "processes": args.processes,
        "params": params,
        "wall_s": wall,
        "clips": results,
    }
    args.out.write_text(json.dumps(out, indent=1))
    bad = sum(r["error"] is not None for r in results)
    print(f"{len(results)} clips, {bad} errors, wall {wall:.2f}s -> {args.out}")


if __name__ == "__main__":
    main()
