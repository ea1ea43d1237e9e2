"""Jobs of many videos: what grows with the input, measured (``make bench-scale``).

    python benchmarks/scale.py [--sizes 2000 20000] [--bookkeeping 1000000] [--out FILE]

1. ``--sizes``: that many small real videos (one 2 s, 64x48 H.264 file, copied
   under as many names: the cost is per item, not per pixel) through ``daskcap
   run`` on 2 CPU workers, end to end: wall time, the part of it beyond the
   stages' CPU time over the cores (per-video overhead), the client's peak RSS
   (the embedded scheduler runs in the same process), the most tasks the
   scheduler held, the most partitions in flight, and the time to the first
   written window. The ratio between the sizes shows what grows with the input.
2. ``--bookkeeping N``: N videos of a Parquet list through listing, planning,
   submission and bookkeeping, with probing and the partition work replaced by
   trivial stand-ins in the worker processes (no file is opened): the client's
   peak RSS (with its embedded scheduler), the scheduler's most-held tasks and
   the time to the first written window.
   Then the largest size once more through the same stages in 2 plain processes
   (a process pool, no Dask, no runner): the overhead no scheduler removes, and
   daskcap's wall time over that floor.
3. A captioned run where the engine is slower than preparation (a toy-size
   Qwen2.5-VL with random weights writing 128 tokens a window, one window per
   partition): the most partitions in
   flight (each is at most one prepared partition waiting for the engine), the
   requests the engine held per call on average (fed across partitions) and
   workers' peak RSS.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from record import save  # noqa: E402 (benchmarks/, the script's own folder)


def small_video(path: Path) -> Path:
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(20):
            image = np.full((48, 64, 3), (i * 12) % 255, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def videos_folder(base: Path, count: int) -> Path:
    folder = base / f"videos-{count}"
    if folder.exists() and len(list(folder.iterdir())) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    source = small_video(base / "one.mp4")
    for i in range(count):
        target = folder / f"v{i:07d}.mp4"
        if not target.exists():
            os.link(source, target)
    return folder


def run_videos(base: Path, count: int, workers: int) -> dict:
    folder = videos_folder(base, count)
    output = base / f"out-{count}"
    shutil.rmtree(output, ignore_errors=True)  # an earlier run's files: removing them is not the job's cost
    command = [sys.executable, "-m", "daskcap.cli", "run", str(folder), str(output), "--overwrite", "--n-workers", str(workers),
               "--quiet", "--no-report", "--no-write-metas", "--no-upload-clips"]
    started = time.time()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    wall = time.time() - started
    summary = json.loads((output / "summary.json").read_text())
    cpu = sum(summary["stage_cpu_seconds"].values())
    return {
        "videos": count,
        "windows": summary["windows"]["total"],
        "wall_s": round(wall, 1),
        "stage_cpu_s": round(cpu, 1),
        "overhead_share": round(max(0.0, wall - cpu / workers) / wall, 3),
        "per_video_overhead_ms": round(max(0.0, wall - cpu / workers) / count * 1000, 2),
        "client_peak_rss_mb": summary["client"]["peak_rss_mb"],
        "scheduler_most_tasks": summary["client"]["scheduler_most_tasks"],
        "most_partitions_in_flight": summary["most_partitions_in_flight"],
        "first_window_s": summary["client"]["first_window_s"],
        "shards": summary["shards"],
        "partitions": summary["partitions"],
    }


def _floor_chunk(paths: list[str], job, name: str) -> tuple[float, int]:
    """read -> clip -> prepare (with previews) -> write of some paths, in this process."""
    import pandas as pd

    from daskcap.meter import measure
    from daskcap.run.plan import probe_chunk
    from daskcap.run.tasks import prepare_partition
    from daskcap.stages.write import write_windows

    with measure() as used:
        _, clips = probe_chunk(pd.DataFrame({"video_path": paths}), job)
        windows = prepare_partition(clips, job)
        write_windows(windows, job.writer, name)
    return used.cpu_s, len(windows)


def run_floor(base: Path, count: int, workers: int) -> dict:
    """The same stages on the same videos in ``workers`` plain processes (a process pool, 8
    videos a call, as daskcap's partitions hold here), without Dask or daskcap's runner: the
    overhead no scheduler can remove (process pool, pickling, imports)."""
    import argparse as _argparse
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from daskcap.cli import _run_parser
    from daskcap.flags import build_pipeline

    folder = videos_folder(base, count)
    output = base / f"out-floor-{count}"
    shutil.rmtree(output, ignore_errors=True)
    parser = _argparse.ArgumentParser()
    _run_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["run", str(folder), str(output), "--no-write-metas", "--no-upload-clips"])
    job = build_pipeline(args).build()
    paths = sorted(str(p) for p in folder.iterdir())
    chunks = [paths[i : i + 8] for i in range(0, len(paths), 8)]
    started = time.time()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(_floor_chunk, chunks, [job] * len(chunks), [f"part-{i:06d}" for i in range(len(chunks))]))
    wall = time.time() - started
    cpu = sum(c for c, _ in results)
    return {"videos": count, "windows": sum(n for _, n in results), "wall_s": round(wall, 1), "stage_cpu_s": round(cpu, 1),
            "overhead_share": round(max(0.0, wall - cpu / workers) / wall, 3)}


def marginal_overhead(small: dict, large: dict, workers: int) -> dict:
    """Overhead of the videos between two sizes: the fixed costs (interpreter and cluster
    start, the first shard's probe before any window) cancel out."""
    wall = large["wall_s"] - small["wall_s"]
    beyond = wall - (large["stage_cpu_s"] - small["stage_cpu_s"]) / workers
    videos = large["videos"] - small["videos"]
    return {"overhead_share": round(beyond / wall, 3), "per_video_overhead_ms": round(beyond / videos * 1000, 2)}


def run_bookkeeping(base: Path, count: int) -> dict:
    """In a child process: the stand-ins must be in place before the cluster starts."""
    command = [sys.executable, str(Path(__file__)), "_bookkeeping", str(base), str(count)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def _bookkeeping(base: Path, count: int) -> dict:
    """The client and its embedded scheduler in this process; two worker processes run
    daskcap's tasks with probing and the partition work replaced (scale_standins.py)."""
    import pandas as pd
    from distributed import LocalCluster

    from daskcap.run.job import ClusterOptions, Job
    from daskcap.run.runner import run_job
    from daskcap.stages.clip import FixedStrideClipStage
    from daskcap.stages.prepare import CaptionPreparationStage
    from daskcap.stages.read import VideoReaderStage
    from daskcap.stages.write import ClipWriterStage

    listing = base / f"listing-{count}.parquet"
    pd.DataFrame({"path": [f"/standin/v{i:08d}.mp4" for i in range(count)]}).to_parquet(listing)
    output = base / f"out-bookkeeping-{count}"
    shutil.rmtree(output, ignore_errors=True)
    job = Job(reader=VideoReaderStage(str(listing)), clipper=FixedStrideClipStage(clip_len_s=10.0, min_clip_length_s=0.5),
              prepare=CaptionPreparationStage(), writer=ClipWriterStage(str(output), write_metas=False))
    standins = str(Path(__file__).with_name("scale_standins.py"))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", preload=[standins]) as cluster:
        started = time.time()
        summary = run_job(job, ClusterOptions(scheduler=cluster.scheduler_address, windows_per_partition=64), progress=False)
    return {
        "videos": count,
        "wall_s": round(time.time() - started, 1),
        "client_peak_rss_mb": summary["client"]["peak_rss_mb"],
        "scheduler_most_tasks": summary["client"]["scheduler_most_tasks"],
        "first_window_s": summary["client"]["first_window_s"],
        "listing_s": summary["client"]["listing_s"],
        "shards": summary["shards"],
        "partitions": summary["partitions"],
        "note": "stand-ins for probing and partition work in 2 worker processes (scale_standins.py), 64 windows per partition; "
                "the client and the embedded scheduler in one process",
    }


def run_slow_engine(base: Path) -> dict | None:
    """A toy-size Qwen2.5-VL with random weights: it writes to the token limit, so the engine
    is slower than preparation (the trained tiny VLM stops after one short sentence)."""
    from gpu import build_model  # benchmarks/gpu.py: the same builder, toy size, on the CPU

    model = base / "random-vlm"
    if not (model / "config.json").is_file():
        build_model(model, size="tiny", device="cpu")
    folder = base / "slow-engine"
    folder.mkdir(exist_ok=True)
    from daskcap.samples import write_synthetic

    for round_ in range(4):
        write_synthetic(folder / f"set{round_}")
    output = base / "out-slow-engine"
    command = [sys.executable, "-m", "daskcap.cli", "run", str(folder), str(output), "--overwrite", "--n-workers", "2", "--engine-workers", "1",
               "--captioning-model", str(model), "--captioning-max-output-tokens", "128", "--windows-per-partition", "1",
               "--quiet", "--no-report"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    summary = json.loads((output / "summary.json").read_text())
    return {
        "windows": summary["windows"]["total"],
        "engine_workers": summary["cluster"]["engine_workers"],
        "most_partitions_in_flight": summary["most_partitions_in_flight"],
        "windows_per_partition": 1,
        "worker_peak_rss_mb": max(w.get("peak_rss_mb", 0) for w in summary["workers"].values()),
        "caption_engine_s": summary.get("engines", {}).get("caption", {}).get("engine_s"),
        "engine_requests_per_call": summary.get("engines", {}).get("caption", {}).get("requests_per_call"),
        "engine_tasks_per_call": summary.get("engines", {}).get("caption", {}).get("tasks_per_call"),
        "wall_s": summary["wall_s"],
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_bookkeeping":
        print(json.dumps(_bookkeeping(Path(argv[1]), int(argv[2]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[2000, 20000])
    parser.add_argument("--bookkeeping", type=int, default=1_000_000)
    parser.add_argument("--work", type=Path, default=ROOT / "data" / "bench-scale")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--no-floor", dest="floor", action="store_false", help="skip the plain-process run of the largest size")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    record: dict = {"date": datetime.date.today().isoformat(), "cpu_cores": os.cpu_count(), "end_to_end": [], "bookkeeping": None}
    for size in args.sizes:
        entry = run_videos(args.work, size, 2)
        record["end_to_end"].append(entry)
        print(json.dumps(entry), flush=True)
    if len(record["end_to_end"]) >= 2:
        small, large = record["end_to_end"][0], record["end_to_end"][-1]
        record["growth"] = {k: round(large[k] / small[k], 2) for k in ("client_peak_rss_mb", "scheduler_most_tasks", "per_video_overhead_ms", "first_window_s") if small[k]}
        print("growth from", small["videos"], "to", large["videos"], "videos:", json.dumps(record["growth"]), flush=True)
        record["marginal"] = marginal_overhead(small, large, 2)
        print("the videos between the sizes:", json.dumps(record["marginal"]), flush=True)
    if args.floor and args.sizes:
        record["floor"] = run_floor(args.work, args.sizes[-1], 2)
        print("the same stages in 2 plain processes:", json.dumps(record["floor"]), flush=True)
        daskcap_run = record["end_to_end"][-1]
        record["floor"]["daskcap_wall_ratio"] = round(daskcap_run["wall_s"] / record["floor"]["wall_s"], 2)
    if args.bookkeeping:
        record["bookkeeping"] = run_bookkeeping(args.work, args.bookkeeping)
        print(json.dumps(record["bookkeeping"]), flush=True)
    record["slow_engine"] = run_slow_engine(args.work)
    print(json.dumps(record["slow_engine"]), flush=True)
    save(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
