"""``daskcap export OUTPUT DEST --format webdataset|lance``: its flags and what it prints."""

from __future__ import annotations

import argparse
import os
import sys

from daskcap.training_data.params import CAPTION_FIELDS, FORMATS


def add_export_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that choose what an export writes and keeps (also read by ``daskcap run --export``)."""
    group = parser.add_argument_group("export")
    group.add_argument("--prefix", default="shard", help="shard names: PREFIX-000000.tar ..., PREFIX-stats.json")
    group.add_argument("--samples-per-shard", type=int, default=1000, help="samples (windows) per tar shard, at most")
    group.add_argument("--shard-size-mb", type=float, default=None, help="also end a shard before it passes this many MB")
    group.add_argument("--caption-field", choices=CAPTION_FIELDS, default=None,
                       help="the caption each sample's .txt holds (default: enhanced_caption, else caption, else stage1_caption)")
    group.add_argument("--with-preview", action="store_true", help="add each window's animated WebP preview as {key}.webp")
    group.add_argument("--include-flagged", action="store_true", help="keep windows whose caption has a caption-check flag")
    group.add_argument("--min-frames", type=int, default=0, help="leave out windows of fewer frames")
    group.add_argument("--min-seconds", type=float, default=0.0, help="leave out windows shorter than this")


def export_settings(args: argparse.Namespace) -> dict:
    """The ``ExportParams`` keywords the export flags set."""
    names = ("prefix", "samples_per_shard", "shard_size_mb", "caption_field", "with_preview", "include_flagged", "min_frames", "min_seconds")
    return {name: getattr(args, name) for name in names}


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export",
        help="write a run's captioned windows as WebDataset shards or a Lance table, for training",
        description="Write the windows of the daskcap output OUTPUT that are ok, captioned and unflagged to DEST: "
        "WebDataset tar shards ({key}.mp4, {key}.txt, {key}.json[, {key}.webp]) and PREFIX-stats.json (written last), "
        "or a Lance dataset (appended to by a later export of the same output). Runs on the cluster (embedded, or --scheduler).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("output", metavar="OUTPUT", help="a daskcap output (local path or fsspec URL)")
    parser.add_argument("dest", metavar="DEST", help="where to write (local path or fsspec URL), outside OUTPUT")
    parser.add_argument("--format", choices=FORMATS, default="webdataset")
    add_export_flags(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace an export with other settings in DEST (only files daskcap wrote)")
    parser.add_argument("--scheduler", default=os.environ.get("DASK_SCHEDULER_ADDRESS"),
                        help="address of an existing Dask scheduler (default: $DASK_SCHEDULER_ADDRESS, else an embedded cluster)")
    parser.add_argument("--n-workers", type=int, default=None, help="worker processes of the embedded cluster (default: one per core)")
    return parser


def print_stats(stats: dict) -> None:
    left_out = stats["left_out"]
    reasons = ", ".join(f"{n} {reason}" for reason, n in left_out["by_reason"].items()) or "none"
    print(f"samples: {stats['samples']} of {stats['windows']} windows ({left_out['total']} left out: {reasons})")
    if stats["format"] == "lance":
        print(f"table:   {stats['dest']} ({stats['table_rows']} rows, version {stats['version']}; "
              f"{stats['parts_read']} window parts read, {stats['parts_in_table']} already in it)")
    else:
        print(f"shards:  {stats['shards_written'] + stats['shards_kept']} in {stats['dest']} ({stats['bytes'] / 2**20:.1f} MB; "
              f"{stats['shards_written']} written, {stats['shards_kept']} kept from an earlier export)")


def main(args: argparse.Namespace) -> int:
    from daskcap.run.job import JobError
    from daskcap.stages._params import ParamError
    from daskcap.storage import is_output_error, output_error_line
    from daskcap.training_data.places import ExportError
    from daskcap.training_data.runner import export

    try:
        stats = export(args.output, args.dest, format=args.format, scheduler=args.scheduler, n_workers=args.n_workers,
                       overwrite=args.overwrite, **export_settings(args))
    except (ExportError, ParamError, JobError, ImportError) as exc:
        for line in str(exc).splitlines():
            print(f"daskcap: error: {line}", file=sys.stderr)
        return 2
    except OSError as exc:
        if not is_output_error(exc):
            raise
        print(f"daskcap: error: {output_error_line(exc)}; a rerun finishes the export once that is fixed", file=sys.stderr)
        return 1
    print_stats(stats)
    return 0
