"""``daskcap run INPUT OUTPUT [flags]``: flag names follow the reference's tutorial."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from daskcap.graph import JobError, UsageError
from daskcap.pipeline import Pipeline
from daskcap.prompts import CAPTION_PROMPTS
from daskcap.stages._params import ParamError
from daskcap.engines.base import BACKENDS, EngineError
from daskcap.engines.weights import DEFAULT_CAPTION_MODELS, DEFAULT_ENHANCE_MODELS
from daskcap.prompts import ENHANCE_PROMPTS
from daskcap.stages.caption import CaptionEnhancementStage, CaptionGenerationStage
from daskcap.stages.check import CaptionCheckStage
from daskcap.stages.clip import FixedStrideClipStage
from daskcap.stages.prepare import PREPROCESS_DTYPES, CaptionPreparationStage
from daskcap.stages.preview import PreviewStage
from daskcap.stages.read import VIDEO_EXTENSIONS, VideoReaderStage
from daskcap.stages.write import ClipWriterStage
from daskcap.storage import path_problems
from daskcap.video.encode import MP4_CRF, MP4_PRESET, X264_PRESETS

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PREPARE_DEFAULTS = CaptionPreparationStage()  # flag defaults are the stage's, written once there


def _run_parser(subparsers) -> argparse.ArgumentParser:  # noqa: PLR0915 (one flag per line)
    p = subparsers.add_parser(
        "run",
        help="window, preview and write every video under INPUT",
        description="Split videos into clips and caption windows; write window tables, previews and clips to OUTPUT.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("input", metavar="INPUT", nargs="?", help="directory (recursive), glob, video file, or Parquet file with a 'path' column; local path or fsspec URL (or `input` in --config)")
    p.add_argument("output", metavar="OUTPUT", nargs="?", help="output directory, local path or fsspec URL (or `output` in --config)")
    p.add_argument("--config", metavar="TOML", default=None, help="read settings from a TOML file: one key per flag (e.g. fixed-stride-split-duration = 5.0); flags on the command line win")

    g = p.add_argument_group("input and clipping")
    g.add_argument("--video-limit", type=int, default=-1, help="read at most this many videos (sorted by path); -1 reads all")
    g.add_argument("--fixed-stride-split-duration", type=float, default=10.0, help="clip length and stride, in seconds")
    g.add_argument("--fixed-stride-min-clip-length-s", type=float, default=2.0, help="drop tail clips shorter than this, in seconds")
    g.add_argument("--limit-clips", type=int, default=0, help="keep at most this many clips per video; 0 keeps all")
    g.add_argument("--video-extensions", default=" ".join(VIDEO_EXTENSIONS), help="file name endings a directory is searched for (case-insensitive; space- or comma-separated); a single file, a glob or a Parquet list takes any name")
    g.add_argument("--video-timeout-s", type=float, default=600.0, help="give up on a video's probe, or on one of its clips, after this many seconds (status timed_out)")

    g = p.add_argument_group("caption windows (CaptionPreparationStage)")
    g.add_argument("--captioning-window-size", type=int, default=PREPARE_DEFAULTS.window_size, help="frames per caption window, at the clip's own frame rate")
    g.add_argument("--captioning-remainder-threshold", type=int, default=PREPARE_DEFAULTS.remainder_threshold, help="a leftover of at least this many frames becomes its own window; a smaller one joins the last window")
    g.add_argument("--captioning-sampling-fps", type=float, default=2.0, help="frames per second sampled for the model")
    g.add_argument("--captioning-prompt-variant", choices=sorted(CAPTION_PROMPTS), default="default", help="caption prompt")
    g.add_argument("--captioning-prompt-text", default=None, help="custom caption prompt (overrides the variant)")
    g.add_argument("--captioning-preprocess-dtype", choices=PREPROCESS_DTYPES, default="float32", help="dtype the engine builds pixel values in")
    g.add_argument("--captioning-model-does-preprocess", action="store_true", help="keep sampled frames at source size; the model's processor resizes them")
    g.add_argument("--mp4-preset", choices=X264_PRESETS, default=MP4_PRESET, help="libx264 preset of clip and window mp4s: faster presets make bigger files")
    g.add_argument("--mp4-crf", type=int, default=MP4_CRF, help="libx264 quality target of clip and window mp4s (0 lossless .. 51 worst)")

    g = p.add_argument_group("captions (CaptionGenerationStage)")
    g.add_argument("--generate-captions", action=argparse.BooleanOptionalAction, default=False, help="caption every window with a vision-language model")
    g.add_argument("--model-dir", default="models", help="folder of <org>/<name> model weights; missing hub models are downloaded here once per node")
    g.add_argument("--captioning-algorithm", choices=sorted(DEFAULT_CAPTION_MODELS), default="qwen", help="caption model family: qwen or qwen2.5 (Qwen2.5-VL; NeMo Curator's old and new names) or qwen3 (Qwen3-VL, vLLM only)")
    g.add_argument("--captioning-model", default=None, help="HF id or local path of the caption model (default: the algorithm's, e.g. Qwen/Qwen2.5-VL-7B-Instruct); implies --generate-captions")
    g.add_argument("--captioning-batch-size", type=int, default=16, help="windows per forward pass of the transformers engine (vLLM takes the whole partition at once)")
    g.add_argument("--captioning-use-fp8-weights", action="store_true", help="fp8 weights (vLLM engine only)")
    g.add_argument("--captioning-max-output-tokens", type=int, default=512, help="caption length limit, in tokens; a cut caption is marked finish_reason=length")
    g.add_argument("--captioning-use-vllm-mmcache", action="store_true", help="keep vLLM's multimodal processor cache (off unless given, as in the reference's scripts)")
    g.add_argument("--captioning-stage2-caption", action="store_true", help="refine each caption in a second pass over the same frames")
    g.add_argument("--captioning-stage2-prompt-text", default=None, help="custom stage-2 prompt (the stage-1 caption is appended)")

    g = p.add_argument_group("enhanced captions (CaptionEnhancementStage)")
    g.add_argument("--enhance-captions", action="store_true", help="rewrite each caption with a text LLM")
    g.add_argument("--enhance-captions-algorithm", choices=sorted(DEFAULT_ENHANCE_MODELS), default="qwen", help="enhancement model family: qwen or qwen2.5 (Qwen2.5-14B) or qwen3 (Qwen3-14B)")
    g.add_argument("--enhance-captions-model", default=None, help="HF id or local path of the text model (default: Qwen/Qwen2.5-14B-Instruct)")
    g.add_argument("--enhance-captions-batch-size", type=int, default=128, help="captions per forward pass of the transformers engine")
    g.add_argument("--enhance-captions-use-fp8-weights", action="store_true", help="fp8 weights (vLLM engine only)")
    g.add_argument("--enhance-captions-max-output-tokens", type=int, default=512, help="enhanced caption length limit, in tokens")
    g.add_argument("--enhance-captioning-prompt-variant", choices=sorted(ENHANCE_PROMPTS), default="default", help="enhancement prompt")
    g.add_argument("--enhance-captions-prompt-text", default=None, help="custom enhancement prompt (the caption is appended)")

    _check_flags(p)

    g = p.add_argument_group("engines")
    g.add_argument("--engine", choices=BACKENDS, default="auto", help="auto: vLLM when importable and a CUDA device is visible, else transformers")
    g.add_argument("--engine-workers", type=int, default=None, help="engine workers of the embedded cluster (default: one per GPU, else 1)")
    g.add_argument("--vllm-kwargs", type=json_object, default=None, help="JSON object of vllm.LLM arguments for both model stages, over daskcap's own (e.g. '{\"enforce_eager\": true}')")

    g = p.add_argument_group("previews (PreviewStage)")
    g.add_argument("--generate-previews", action=argparse.BooleanOptionalAction, default=True, help="make an animated WebP preview per window")
    g.add_argument("--preview-target-fps", type=float, default=1.0, help="preview frame rate")
    g.add_argument("--preview-target-height", type=int, default=240, help="preview height in pixels (even); width keeps the aspect ratio")
    g.add_argument("--preview-quality", type=int, default=50, help="WebP quality, 0-100")
    g.add_argument("--preview-compression-level", type=int, default=6, help="WebP compression effort, 0 (fast) - 6 (small)")

    g = p.add_argument_group("output")
    g.add_argument("--upload-clips", action=argparse.BooleanOptionalAction, default=True, help="write each clip's mp4 to OUTPUT/clips/")
    g.add_argument("--write-model-input", action="store_true", help="keep the sampled frames (model input) in the window table; large")
    g.add_argument("--write-metas", action=argparse.BooleanOptionalAction, default=True, help="also write NeMo Curator's JSON: metas/v0/<clip_id>.json, processed_videos/, processed_clip_chunks/")
    g.add_argument("--overwrite", action="store_true", help="start over: replace an existing output (by default a rerun with the same settings resumes it)")
    g.add_argument("--retry-failed", action="store_true", help="rerun into an earlier output, reprocessing only the videos and windows that failed")
    g.add_argument("--dry-run", action="store_true", help="process everything, write nothing")
    g.add_argument("--report", action=argparse.BooleanOptionalAction, default=True, help="write OUTPUT/report/index.html, a page to review previews and captions")

    g = p.add_argument_group("cluster")
    g.add_argument("--scheduler", default=os.environ.get("DASK_SCHEDULER_ADDRESS"), help="address of an existing Dask scheduler (default: $DASK_SCHEDULER_ADDRESS, else an embedded cluster)")
    g.add_argument("--n-workers", type=int, default=None, help="worker processes of the embedded cluster (default: one per core)")
    g.add_argument("--windows-per-partition", type=int, default=8, help="caption windows per task; bounds memory per task")
    g.add_argument("--videos-per-shard", type=int, default=1000, help="videos listed, probed and planned together; the client keeps only each shard's counts (a resume keeps the first run's shards)")

    g = p.add_argument_group("display")
    g.add_argument("--verbose", action="store_true", help="log per-video and per-clip details")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def json_object(text: str) -> dict:
    """An argparse type: a JSON object (``--vllm-kwargs '{"enforce_eager": true}'``)."""
    import json

    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object of vllm.LLM arguments, got {text}")
    return value


def _check_flags(parser: argparse.ArgumentParser, switch: bool = True) -> None:
    """The caption checks' thresholds (README "Caption checks"): `daskcap run` and `daskcap check` share them."""
    defaults = CaptionCheckStage()
    g = parser.add_argument_group("caption checks (flags in caption_flags / enhance_flags; a window's status is not changed)")
    if switch:
        g.add_argument("--caption-checks", action=argparse.BooleanOptionalAction, default=True, help="flag empty, truncated, repetitive, refused, duplicate, too short, non-English and invalid captions")
    g.add_argument("--check-repetition-ngram", type=int, default=defaults.repetition_ngram, help="repetitive: word n-grams of this length that occur more than once ...")
    g.add_argument("--check-repetition-share", type=float, default=defaults.repetition_share, help="... cover at least this share of the words")
    g.add_argument("--check-min-words", type=int, default=defaults.min_words, help="too_short: fewer words than this ...")
    g.add_argument("--check-short-ratio", type=float, default=defaults.short_ratio, help="... or than this times the median of the clip's other windows")
    g.add_argument("--check-duplicate-similarity", type=float, default=defaults.duplicate_similarity, help="duplicate: two windows of a clip whose word pairs overlap this much (Jaccard; 1 = identical only)")
    g.add_argument("--check-language", action=argparse.BooleanOptionalAction, default=defaults.check_language, help="not_english: flag text in another language (skipped when the prompt asks for one)")


def check_stage(args: argparse.Namespace) -> CaptionCheckStage:
    return CaptionCheckStage(
        repetition_ngram=args.check_repetition_ngram,
        repetition_share=args.check_repetition_share,
        min_words=args.check_min_words,
        short_ratio=args.check_short_ratio,
        duplicate_similarity=args.check_duplicate_similarity,
        check_language=args.check_language,
    )


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


def preparation_stage(args: argparse.Namespace) -> CaptionPreparationStage:
    """CaptionPreparationStage from the reference's --captioning-* flags (shared with jobs/split_clip_caption.py)."""
    return CaptionPreparationStage(
        model_variant=args.captioning_algorithm,
        prompt_variant=args.captioning_prompt_variant,
        prompt_text=args.captioning_prompt_text,
        sampling_fps=args.captioning_sampling_fps,
        window_size=args.captioning_window_size,
        remainder_threshold=args.captioning_remainder_threshold,
        model_does_preprocess=args.captioning_model_does_preprocess,
        preprocess_dtype=args.captioning_preprocess_dtype,
        generate_previews=args.generate_previews,
        verbose=args.verbose,
        timeout_s=getattr(args, "video_timeout_s", 600.0),
        mp4_preset=getattr(args, "mp4_preset", MP4_PRESET),
        mp4_crf=getattr(args, "mp4_crf", MP4_CRF),
    )


def wants_captions(args: argparse.Namespace) -> bool:
    return bool(args.generate_captions or args.captioning_model or args.enhance_captions)


def model_stages(args: argparse.Namespace) -> list:
    """The caption and enhancement stages that the reference's caption flags ask for.

    Shared with jobs/split_clip_caption.py, whose flags have the same names.
    Raises ParamError listing every bad value.
    """
    stages, problems = [], []

    def make(factory, **kwargs) -> None:
        try:
            stages.append(factory(**kwargs))
        except ParamError as exc:
            problems.extend(exc.problems)

    if wants_captions(args):
        make(
            CaptionGenerationStage,
            model_dir=args.model_dir,
            model_variant=args.captioning_algorithm,
            model=args.captioning_model,
            caption_batch_size=args.captioning_batch_size,
            fp8=args.captioning_use_fp8_weights,
            max_output_tokens=args.captioning_max_output_tokens,
            model_does_preprocess=args.captioning_model_does_preprocess,
            disable_mmcache=not args.captioning_use_vllm_mmcache,
            generate_stage2_caption=args.captioning_stage2_caption,
            stage2_prompt_text=args.captioning_stage2_prompt_text,
            engine=args.engine,
            vllm_kwargs=args.vllm_kwargs or {},
            verbose=args.verbose,
        )
    if args.enhance_captions:
        make(
            CaptionEnhancementStage,
            model_dir=args.model_dir,
            model_variant=args.enhance_captions_algorithm,
            model=args.enhance_captions_model,
            prompt_variant=args.enhance_captioning_prompt_variant,
            prompt_text=args.enhance_captions_prompt_text,
            model_batch_size=args.enhance_captions_batch_size,
            fp8=args.enhance_captions_use_fp8_weights,
            max_output_tokens=args.enhance_captions_max_output_tokens,
            engine=args.engine,
            vllm_kwargs=args.vllm_kwargs or {},
            verbose=args.verbose,
        )
    if problems:
        raise ParamError(problems)
    return stages


def build_pipeline(args: argparse.Namespace) -> Pipeline:
    """Turn parsed flags into a pipeline; raise ParamError with every bad flag."""
    problems = []
    try:
        pipeline = Pipeline(
            name="daskcap-run",
            scheduler=args.scheduler,
            n_workers=args.n_workers,
            engine_workers=args.engine_workers,
            windows_per_partition=args.windows_per_partition,
            videos_per_shard=args.videos_per_shard,
            overwrite=args.overwrite,
            retry_failed=args.retry_failed,
            progress=not args.quiet,
            caption_checks=args.caption_checks,
        )
    except ParamError as exc:
        problems.extend(exc.problems)
        pipeline = Pipeline(name="daskcap-run")  # keeps collecting the stages' problems
    for name in ("input", "output"):
        if not getattr(args, name):
            problems.append(f"{name.upper()} is required (as an argument or as `{name}` in --config)")
    if args.input and args.output:
        problems += path_problems(args.input, args.output)

    def add(factory, **kwargs):
        try:
            pipeline.add_stage(factory(**kwargs))
        except ParamError as exc:
            problems.extend(exc.problems)

    add(VideoReaderStage, input_video_path=args.input, video_limit=args.video_limit, verbose=args.verbose, timeout_s=args.video_timeout_s, video_extensions=args.video_extensions)
    add(
        FixedStrideClipStage,
        clip_len_s=args.fixed_stride_split_duration,
        min_clip_length_s=args.fixed_stride_min_clip_length_s,
        limit_clips=args.limit_clips,
    )
    add(preparation_stage, args=args)
    if args.generate_previews:
        add(
            PreviewStage,
            target_fps=args.preview_target_fps,
            target_height=args.preview_target_height,
            quality=args.preview_quality,
            compression_level=args.preview_compression_level,
            verbose=args.verbose,
        )
    try:
        for stage in model_stages(args):
            pipeline.add_stage(stage)
    except ParamError as exc:
        problems.extend(exc.problems)
    if wants_captions(args) and args.caption_checks:
        add(check_stage, args=args)
    add(
        ClipWriterStage,
        output_path=args.output,
        input_path=args.input,
        upload_clips=args.upload_clips,
        dry_run=args.dry_run,
        generate_previews=args.generate_previews,
        generate_captions=wants_captions(args),
        write_model_input=args.write_model_input,
        write_metas=args.write_metas,
        verbose=args.verbose,
    )
    if problems:
        raise ParamError(problems)
    pipeline.build()  # stage-list problems (e.g. captions requested) surface here
    return pipeline


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
    print(f"output:  {summary['output']}  (summary.json, windows/, videos/, previews/, clips/)")


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
    _check_flags(check, switch=False)
    try:
        args = apply_config(parser, run_parser, argv)
    except ParamError as exc:
        for problem in exc.problems:
            print(f"daskcap: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "tiny-models":
        from daskcap.engines.tiny import main as tiny_main

        return tiny_main(args.directory)
    if args.command == "check":
        from daskcap.check_output import check_output, format_table

        try:
            result = check_output(args.output, check_stage(args), write=args.write)
        except (FileNotFoundError, ParamError) as exc:
            print(f"daskcap: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        print(format_table(result))
        return EXIT_OK
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
        pipeline = build_pipeline(args)
    except ParamError as exc:
        for problem in exc.problems:
            print(f"daskcap: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        summary = pipeline.run()
    except (JobError, FileNotFoundError, ParamError, EngineError) as exc:
        print(f"daskcap: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, (FileNotFoundError, ParamError, UsageError)) else EXIT_FAILED
    _print_result(summary)
    if args.report and not args.dry_run:
        from daskcap.report import build_report

        print(f"report:  {build_report(args.output)}")
    return EXIT_FAILED if summary["failed_partitions"] else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
