"""``daskcap run INPUT OUTPUT [flags]``, ``daskcap export``, ``daskcap check``, ``daskcap report``, ``daskcap tiny-models``, ``daskcap tls-certs``.

The run's flags (named as in the reference's tutorial) are declared once, in ``daskcap/flags.py``."""

from __future__ import annotations

import argparse
import logging
import sys

from daskcap.engines.base import EngineError
from daskcap.flags import CHECK_FLAGS, add_flags, build_pipeline, stage_args
from daskcap.run.job import JobError, UsageError
from daskcap.stages._params import ParamError
from daskcap.stages.check import CaptionCheckStage
from daskcap.storage import is_output_error, output_error_line
from daskcap.training_data import command as export_command
from daskcap.training_data.command import add_export_flags
from daskcap.training_data.places import ExportError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _run_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "run",
        help="window, preview and write every video under INPUT",
        description="Split videos into clips and caption windows; write window tables, previews and clips to OUTPUT.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("input", metavar="INPUT", nargs="?", help="directory (recursive), glob, video file, or Parquet file with a 'path' column; local path or fsspec URL (or `input` in --config)")
    p.add_argument("output", metavar="OUTPUT", nargs="?", help="output directory, local path or fsspec URL (or `output` in --config)")
    p.add_argument("--config", metavar="TOML", default=None, help="read settings from a TOML file: one key per flag (e.g. fixed-stride-split-duration = 5.0); flags on the command line win")
    add_flags(p)
    p.add_argument("--export", metavar="FORMAT:DEST", default=None,
                   help="then export the output for training on the same cluster (webdataset:DEST or lance:DEST; see `daskcap export`)")
    add_export_flags(p)
    return p


def apply_config(parser: argparse.ArgumentParser, run_parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``; with ``--config``, the file's keys become defaults that flags override."""
    args = parser.parse_args(argv)
    if getattr(args, "config", None) is None:
        return args
    import tomllib

    try:
        with open(args.config, "rb") as handle:
            settings = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ParamError(f"--config {args.config}: {exc}") from exc
    known = {action.dest for action in run_parser._actions if action.dest not in ("help", "config")}
    defaults, unknown = {}, []
    for key, value in settings.items():
        dest = key.replace("-", "_")
        (defaults.__setitem__(dest, value) if dest in known else unknown.append(key))
    if unknown:
        raise ParamError([f"--config {args.config}: unknown key {key!r} (keys are the flag names without --)" for key in unknown])
    run_parser.set_defaults(**defaults)
    return parser.parse_args(argv)


def _print_result(summary: dict) -> None:
    windows = summary["windows"]
    videos = summary["videos"]
    by = lambda counts: ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "none"  # noqa: E731
    print(f"videos:  {videos['total']} ({by(videos['by_status'])})")
    print(f"clips:   {summary['clips']['total']}")
    print(f"windows: {windows['total']} ({by(windows['by_status'])}) in {summary['wall_s']:.1f} s")
    for key, what in (("caption_flags", "captions"), ("enhance_flags", "enhanced captions")):
        counts = summary.get(key)
        if counts and counts["checked"]:
            flags = ", ".join(f"{n} {flag}" for flag, n in counts["by_flag"].items() if n) or "all clean"
            print(f"flagged: {counts['flagged']} of {counts['checked']} {what} ({flags})")
    if summary.get("dry_run"):
        print(f"output:  none written (--dry-run); a real run would write {summary['output']} "
              "(summary.json, windows/, videos/, previews/, clips/)")
    else:
        print(f"output:  {summary['output']}  (summary.json, windows/, videos/, previews/, clips/)")


def write_tls_certs(directory: str) -> list[str]:
    """DIR/ca.pem, cert.pem and key.pem of one cluster, from Dask's own temporary Security (the key readable by its owner only)."""
    import os

    from distributed.security import Security

    security = Security.temporary()
    os.makedirs(directory, exist_ok=True)
    written = []
    for name, text, mode in (("ca.pem", security.tls_ca_file, 0o644), ("cert.pem", security.tls_client_cert, 0o644),
                             ("key.pem", security.tls_client_key, 0o600)):
        path = os.path.join(directory, name)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
        os.chmod(path, mode)
        written.append(path)
    return written


def run_export_params(args: argparse.Namespace):
    """``daskcap run --export FORMAT:DEST``'s export settings, or None."""
    if args.export is None:
        return None
    from daskcap.training_data.params import ExportParams, parse_export_target

    try:
        format, dest = parse_export_target(args.export)
    except ValueError as exc:
        raise ParamError(str(exc)) from None
    if args.dry_run:
        raise ParamError("--export needs a run that writes its output: drop --dry-run")
    return ExportParams(output=args.output, dest=dest, format=format, **export_command.export_settings(args))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="daskcap", description="Caption, preview and window videos at scale on Dask.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    run_parser = _run_parser(subparsers)
    tiny = subparsers.add_parser(
        "tiny-models",
        help="train tiny Qwen models (DIR/vlm, DIR/lm) for offline tests and demos",
        description="Build and briefly train (a few minutes of CPU, seeded) a tiny Qwen2.5-VL (DIR/vlm) and Qwen2 text "
        "model (DIR/lm), loadable like real weights, on synthetic clips of a coloured square moving over grey noise: "
        "the VLM names the square's colour and direction, the text model enriches that caption. DIR is reused while "
        "its content hash matches. They know nothing else: real captions need real weights.",
    )
    tiny.add_argument("directory", metavar="DIR")
    report = subparsers.add_parser(
        "report",
        help="write OUTPUT/report/index.html for a finished run",
        description="Write OUTPUT/report/index.html: a self-contained page (no server, no network) with the run "
        "summary, every window's preview next to its captions, search, filters and the errors.",
    )
    certs = subparsers.add_parser(
        "tls-certs",
        help="write a CA, certificate and key (DIR/ca.pem, DIR/cert.pem, DIR/key.pem) for a TLS cluster",
        description="Write DIR/ca.pem, DIR/cert.pem and DIR/key.pem: a self-signed certificate made by Dask's "
        "Security.temporary() (cryptography), valid a year, for the scheduler, the workers and the clients of one "
        "cluster (dask scheduler/worker --tls-ca-file DIR/ca.pem --tls-cert DIR/cert.pem --tls-key DIR/key.pem; "
        "daskcap run --scheduler tls://... with the same three). Whoever holds key.pem can run code on the cluster.",
    )
    certs.add_argument("directory", metavar="DIR")
    report.add_argument("output", metavar="OUTPUT", help="a daskcap output directory (local path or fsspec URL)")
    check = subparsers.add_parser(
        "check",
        help="recompute the caption flags of a finished run and print their counts",
        description="Recompute caption_flags and enhance_flags of every window of OUTPUT with today's rules and the "
        "thresholds given here, write them back into its window tables and summary.json (and its report, if it has "
        "one), and print a table: flag, count, share, one example each.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    check.add_argument("output", metavar="OUTPUT", help="a daskcap output directory (local path or fsspec URL)")
    check.add_argument("--no-write", dest="write", action="store_false", help="print the table only; change nothing in OUTPUT")
    add_flags(check, CHECK_FLAGS)
    export_command.add_parser(subparsers)
    try:
        args = apply_config(parser, run_parser, argv)
    except ParamError as exc:
        for problem in exc.problems:
            print(f"daskcap: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "tiny-models":
        from daskcap.engines.tiny import main as tiny_main

        return tiny_main(args.directory)
    if args.command == "tls-certs":
        for path in write_tls_certs(args.directory):
            print(path)
        return EXIT_OK
    if args.command == "check":
        from daskcap.check_output import check_output, format_table

        try:
            result = check_output(args.output, CaptionCheckStage(**stage_args(args, CaptionCheckStage)), write=args.write)
        except (FileNotFoundError, ParamError) as exc:
            print(f"daskcap: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        print(format_table(result))
        return EXIT_OK
    if args.command == "export":
        return export_command.main(args)
    if args.command == "report":
        from daskcap.report import build_report

        try:
            print(build_report(args.output))
        except FileNotFoundError as exc:
            print(f"daskcap: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        return EXIT_OK
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        pipeline = build_pipeline(args, name="daskcap-run")
        export = run_export_params(args)
    except ParamError as exc:
        for problem in exc.problems:
            print(f"daskcap: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        summary = pipeline.run(export=export)
        _print_result(summary)
        if export is not None:
            export_command.print_stats(summary["export"])
        if args.report and not args.dry_run:
            from daskcap.report import build_report

            print(f"report:  {build_report(args.output)}")
    except (JobError, FileNotFoundError, ParamError, EngineError, ExportError) as exc:
        print(f"daskcap: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, (FileNotFoundError, ParamError, UsageError)) else EXIT_FAILED
    except OSError as exc:
        if not is_output_error(exc):
            raise
        # Here or on a worker: a full disk, a permission, a read-only output. A rerun with room resumes.
        print(f"daskcap: error: {output_error_line(exc)}; a rerun resumes once that is fixed", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_FAILED if summary["failed_partitions"] else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
