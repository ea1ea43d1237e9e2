"""`daskcap export` at scale against a plain tarfile baseline of the same bytes, in the same run.

A real run (`daskcap run`, no models) over daskcap's synthetic clips gives real window rows
(mp4s, previews, display sizes); its rows are then reused to synthesize an output of
``--windows`` windows (new clip ids, a caption per window, since the run had no models;
parts of 8 windows, as `daskcap run` writes them). Measured, per size:

- `daskcap export --format webdataset` (embedded cluster, ``--n-workers`` workers): wall time
  of the export itself (from its stats: after the cluster is up), MB/s and windows/s, and
  the client's peak RSS (the export's own process, in its stats);
- the baseline: one process reading the same parts with pyarrow and writing the same
  members (mp4, txt, json) into tar shards of the same size with Python's tarfile.

    python benchmarks/export.py --windows 1000 10000 --json benchmarks/results/<date>-export.json
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import save  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PART_ROWS = 8


def real_run(folder: Path) -> Path:
    from daskcap.samples import write_synthetic

    write_synthetic(folder / "videos")
    out = folder / "run"
    subprocess.run([sys.executable, "-m", "daskcap.cli", "run", str(folder / "videos"), str(out), "--quiet", "--no-report",
                    "--n-workers", "2"], check=True, cwd=ROOT)
    return out


def synthesize(run: Path, dest: Path, windows: int) -> int:
    """An output of ``windows`` windows made of ``run``'s ok rows, reused; its bytes."""
    table = pq.read_table(run / "windows")
    table = table.filter(pa.compute.equal(table["status"], "ok"))
    (dest / "windows").mkdir(parents=True)
    shutil.copytree(run / "_daskcap", dest / "_daskcap")  # job.json and the plan (display sizes)
    total = 0
    for part in range(-(-windows // PART_ROWS)):
        rows = [table.slice((part * PART_ROWS + i) % table.num_rows, 1) for i in range(min(PART_ROWS, windows - part * PART_ROWS))]
        chunk = pa.concat_tables(rows)
        ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench-{part}-{i}")) for i in range(chunk.num_rows)]
        chunk = chunk.set_column(chunk.schema.get_field_index("clip_id"), "clip_id", pa.array(ids))
        captions = pa.array([f"A coloured square crosses a grey field, window {part * PART_ROWS + i}." for i in range(chunk.num_rows)])
        chunk = chunk.set_column(chunk.schema.get_field_index("caption"), "caption", captions)
        chunk = chunk.set_column(chunk.schema.get_field_index("caption_flags"), "caption_flags",
                                 pa.array([[]] * chunk.num_rows, pa.list_(pa.string())))
        pq.write_table(chunk, dest / "windows" / f"part-00000-{part:05d}.parquet", compression="zstd")
        total += sum(len(b) for b in chunk["window_mp4"].to_pylist())
    return total


def daskcap_export(output: Path, dest: Path, samples_per_shard: int, n_workers: int) -> dict:
    subprocess.run([sys.executable, "-m", "daskcap.cli", "export", str(output), str(dest), "--samples-per-shard",
                    str(samples_per_shard), "--n-workers", str(n_workers)], check=True, cwd=ROOT, capture_output=True)
    return json.loads((dest / "shard-stats.json").read_text())


def plain_tar(output: Path, dest: Path, samples_per_shard: int) -> dict:
    """The same members into tar shards, one process, no filter, no Dask: the floor."""
    dest.mkdir()
    started = time.perf_counter()
    shard, held, written, samples = None, 0, 0, 0
    columns = ["clip_id", "window_index", "window_mp4", "caption", "video_path", "start_frame", "end_frame", "fps"]
    for part in sorted((output / "windows").glob("*.parquet")):
        for row in pq.read_table(part, columns=columns).to_pylist():
            if shard is None:
                shard = tarfile.open(dest / f"plain-{written:06d}.tar", "w", format=tarfile.USTAR_FORMAT)
            key = f"{row['clip_id']}_{row['window_index']}"
            meta = json.dumps({k: row[k] for k in ("video_path", "start_frame", "end_frame", "fps")}).encode()
            for name, data in ((f"{key}.mp4", row["window_mp4"]), (f"{key}.txt", row["caption"].encode()), (f"{key}.json", meta)):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                shard.addfile(info, io.BytesIO(data))
            held += 1
            samples += 1
            if held == samples_per_shard:
                shard.close()
                shard, held, written = None, 0, written + 1
    if shard is not None:
        shard.close()
    wall = time.perf_counter() - started
    size = sum(path.stat().st_size for path in dest.glob("*.tar"))
    return {"wall_s": round(wall, 3), "bytes": size, "samples": samples}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--samples-per-shard", type=int, default=1000)
    parser.add_argument("--n-workers", type=int, default=2)
    parser.add_argument("--work", type=Path, default=ROOT / "data" / "bench" / "export")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    run = real_run(args.work)
    record = {"windows_per_part": PART_ROWS, "samples_per_shard": args.samples_per_shard, "n_workers": args.n_workers, "sizes": []}
    print(f"{'windows':>8} {'MB':>8} {'export s':>9} {'MB/s':>7} {'win/s':>7} {'tar s':>7} {'MB/s':>7} {'ratio':>6} {'client MB':>9}")
    for windows in args.windows:
        output = args.work / f"out-{windows}"
        synthesize(run, output, windows)
        stats = daskcap_export(output, args.work / f"shards-{windows}", args.samples_per_shard, args.n_workers)
        baseline = plain_tar(output, args.work / f"plain-{windows}", args.samples_per_shard)
        mb = stats["bytes"] / 2**20
        row = {
            "windows": windows, "samples": stats["samples"], "export_bytes": stats["bytes"], "export_wall_s": stats["wall_s"],
            "export_mb_s": round(mb / stats["wall_s"], 1), "export_windows_s": round(stats["samples"] / stats["wall_s"], 1),
            "client_peak_rss_mb": stats["client_peak_rss_mb"], "tar_wall_s": baseline["wall_s"], "tar_bytes": baseline["bytes"],
            "tar_mb_s": round(baseline["bytes"] / 2**20 / baseline["wall_s"], 1),
            "export_over_tar_wall": round(stats["wall_s"] / baseline["wall_s"], 2),
        }
        record["sizes"].append(row)
        print(f"{windows:>8} {mb:>8.0f} {row['export_wall_s']:>9.1f} {row['export_mb_s']:>7.1f} {row['export_windows_s']:>7.0f} "
              f"{row['tar_wall_s']:>7.1f} {row['tar_mb_s']:>7.1f} {row['export_over_tar_wall']:>6.2f} {row['client_peak_rss_mb']:>9.0f}")
        for folder in (output, args.work / f"shards-{windows}", args.work / f"plain-{windows}"):
            shutil.rmtree(folder)
    save(args.json, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
