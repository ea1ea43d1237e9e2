"""Split, clip, preview and caption with NeMo Curator's command line.

Accepts the flags of NeMo Curator's ``video_split_clip_example.py`` that apply
to daskcap, with their defaults, so a NeMo user's command works with only the
script name changed::

    python jobs/split_clip_caption.py --video-dir videos/ --output-path out/ \\
        --splitting-algorithm fixed_stride --fixed-stride-split-duration 10.0 \\
        --generate-previews --generate-captions --no-generate-embeddings

``--output-path`` (NeMo's name since 1.2) and ``--output-clip-path`` (before) both
work. The transcode flags set how clip mp4s are encoded (ClipTranscodingStage).
Flags for features daskcap does not have (TransNetV2 splitting, motion and
aesthetic filters, embeddings) are refused with a message rather than ignored.
daskcap's own options (--scheduler, --n-workers, --engine, --engine-workers,
--overwrite, --no-write-metas) are accepted too.
"""

from __future__ import annotations

import argparse
import os
import sys

from daskcap import (
    ClipTranscodingStage,
    ClipWriterStage,
    FixedStrideExtractorStage,
    Pipeline,
    PreviewStage,
    VideoReader,
)
from daskcap.stages.transcode import SUPPORTED_ENCODERS
from daskcap.cli import PREPARE_DEFAULTS, json_object, model_stages, preparation_stage, wants_captions
from daskcap.graph import JobError
from daskcap.stages._params import ParamError

# NeMo flags for features daskcap lacks: flag -> takes a value.
UNSUPPORTED = {
    "--transnetv2-frame-decoder-mode": True, "--transnetv2-threshold": True, "--transnetv2-min-length-s": True,
    "--transnetv2-max-length-s": True, "--transnetv2-max-length-mode": True, "--transnetv2-crop-s": True,
    "--transnetv2-gpu-memory-gb": True, "--motion-filter": True,
    "--motion-global-mean-threshold": True, "--motion-per-patch-min-256-threshold": True,
    "--motion-decode-target-fps": True, "--motion-decode-target-duration-ratio": True,
    "--motion-decode-cpus-per-worker": True, "--motion-score-batch-size": True, "--motion-score-gpus-per-worker": True,
    "--clip-extraction-target-res": True, "--aesthetic-threshold": True, "--aesthetic-reduction": True,
    "--aesthetic-gpus-per-worker": True, "--embedding-algorithm": True, "--embedding-gpu-memory-gb": True,
}


class _Refuse(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        namespace.unsupported.append(option_string)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(unsupported=[])
    p.add_argument("--video-dir", required=True, help="input videos: directory, glob, Parquet list; local or fsspec URL")
    output = p.add_mutually_exclusive_group(required=True)
    output.add_argument("--output-path", dest="output_path", help="output directory")
    output.add_argument("--output-clip-path", dest="output_path", help="output directory (NeMo Curator's name before 1.2)")
    p.add_argument("--model-dir", default="./models", help="model weights folder (<org>/<name>)")
    p.add_argument("--video-limit", type=int, default=None, help="read at most this many videos")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--no-upload-clips", dest="upload_clips", action="store_false", help="do not write clips/<clip_id>.mp4")
    p.add_argument("--dry-run", action="store_true", help="process everything, write nothing")
    p.add_argument("--splitting-algorithm", default="fixed_stride", help="fixed_stride (transnetv2 is not available in daskcap)")
    p.add_argument("--fixed-stride-split-duration", type=float, default=10.0)
    p.add_argument("--fixed-stride-min-clip-length-s", type=float, default=2.0)
    p.add_argument("--limit-clips", type=int, default=0)
    p.add_argument("--transcode-cpus-per-worker", type=float, default=6.0, help="accepted; daskcap sizes workers at the cluster level")
    p.add_argument("--transcode-encoder", choices=SUPPORTED_ENCODERS, default="h264_nvenc",
                   help="clip mp4 encoder: h264_nvenc and libopenh264 fall back to libx264 where the worker lacks them")
    p.add_argument("--transcode-encoder-threads", type=int, default=1)
    p.add_argument("--transcode-ffmpeg-batch-size", type=int, default=16, help="accepted; daskcap sizes tasks with --windows-per-partition")
    p.add_argument("--transcode-use-hwaccel", action="store_true", help="refused: daskcap decodes on the CPU")
    p.add_argument("--transcode-use-input-video-bit-rate", action="store_true", help="encode clips at the source's bit rate")
    p.add_argument("--clip-re-chunk-size", type=int, default=32, help="accepted; daskcap's chunks are its partitions")
    p.add_argument("--no-generate-embeddings", dest="generate_embeddings", action="store_false",
                   help="daskcap computes no embeddings; pass this to say you do not expect them")
    p.add_argument("--generate-previews", action="store_true")
    p.add_argument("--preview-target-fps", type=float, default=1)
    p.add_argument("--preview-target-height", type=int, default=240)
    p.add_argument("--generate-captions", action="store_true")
    p.add_argument("--captioning-algorithm", default="qwen2.5", help="qwen2.5 (also qwen, its old name) or qwen3")
    p.add_argument("--captioning-window-size", type=int, default=PREPARE_DEFAULTS.window_size)
    p.add_argument("--captioning-remainder-threshold", type=int, default=PREPARE_DEFAULTS.remainder_threshold)
    p.add_argument("--captioning-prompt-variant", default="default")
    p.add_argument("--captioning-prompt-text", default=None)
    p.add_argument("--captioning-sampling-fps", type=float, default=2.0)
    p.add_argument("--captioning-preprocess-dtype", default="float16")
    p.add_argument("--captioning-model-does-preprocess", action="store_true")
    p.add_argument("--captioning-stage2-caption", action="store_true")
    p.add_argument("--captioning-stage2-prompt-text", default=None)
    p.add_argument("--captioning-batch-size", type=int, default=8)
    p.add_argument("--captioning-use-fp8-weights", action="store_true")
    p.add_argument("--captioning-max-output-tokens", type=int, default=512)
    p.add_argument("--captioning-use-vllm-mmcache", action="store_true")
    p.add_argument("--enhance-captions", action="store_true")
    p.add_argument("--enhance-captions-algorithm", default="qwen2.5", help="qwen2.5 (also qwen) or qwen3")
    p.add_argument("--enhance-captions-batch-size", type=int, default=128)
    p.add_argument("--enhance-captions-use-fp8-weights", action="store_true")
    p.add_argument("--enhance-captions-max-output-tokens", type=int, default=512)
    p.add_argument("--enhance-captioning-prompt-variant", default="default")
    p.add_argument("--enhance-captions-prompt-text", default=None)
    p.add_argument("--enhanced-caption-models", default="qwen_lm", help="qwen_lm (the only choice, as in the reference)")
    daskcap_own = p.add_argument_group("daskcap")
    daskcap_own.add_argument("--captioning-model", default=None, help="caption model: HF id or local path")
    daskcap_own.add_argument("--enhance-captions-model", default=None, help="enhancement model: HF id or local path")
    daskcap_own.add_argument("--scheduler", default=os.environ.get("DASK_SCHEDULER_ADDRESS"))
    daskcap_own.add_argument("--n-workers", type=int, default=None)
    daskcap_own.add_argument("--engine", default="auto")
    daskcap_own.add_argument("--engine-workers", type=int, default=None)
    daskcap_own.add_argument("--vllm-kwargs", type=json_object, default=None, help="JSON object of vllm.LLM arguments for both model stages")
    daskcap_own.add_argument("--overwrite", action="store_true")
    daskcap_own.add_argument("--no-write-metas", dest="write_metas", action="store_false",
                             help="do not write NeMo's metas/, processed_videos/ and processed_clip_chunks/ JSON")
    for flag, takes_value in UNSUPPORTED.items():
        p.add_argument(flag, action=_Refuse, nargs=1 if takes_value else 0, help=argparse.SUPPRESS)
    return p


def build(args: argparse.Namespace) -> Pipeline:
    problems = [f"{flag}: daskcap has no such feature (it splits by fixed stride and does not filter or embed); "
                "remove the flag" for flag in dict.fromkeys(args.unsupported)]
    if args.transcode_use_hwaccel:
        problems.append("--transcode-use-hwaccel: daskcap decodes with PyAV on the CPU; remove the flag")
    if args.splitting_algorithm != "fixed_stride":
        problems.append(f"--splitting-algorithm {args.splitting_algorithm}: only fixed_stride is available in daskcap")
    if args.enhanced_caption_models != "qwen_lm":
        problems.append(f"--enhanced-caption-models {args.enhanced_caption_models}: only qwen_lm is available")
    if problems:
        raise ParamError(problems)
    captions = wants_captions(args)
    pipeline = Pipeline(
        name="split-clip-caption",
        scheduler=args.scheduler,
        n_workers=args.n_workers,
        engine_workers=args.engine_workers,
        overwrite=args.overwrite,
    )
    pipeline.add_stage(VideoReader(input_video_path=args.video_dir, video_limit=args.video_limit, verbose=args.verbose))
    pipeline.add_stage(
        FixedStrideExtractorStage(
            clip_len_s=args.fixed_stride_split_duration,
            clip_stride_s=args.fixed_stride_split_duration,
            min_clip_length_s=args.fixed_stride_min_clip_length_s,
            limit_clips=args.limit_clips,
        )
    )
    pipeline.add_stage(
        ClipTranscodingStage(
            num_cpus_per_worker=args.transcode_cpus_per_worker,
            encoder=args.transcode_encoder,
            encoder_threads=args.transcode_encoder_threads,
            encode_batch_size=args.transcode_ffmpeg_batch_size,
            use_hwaccel=args.transcode_use_hwaccel,
            use_input_bit_rate=args.transcode_use_input_video_bit_rate,
            num_clips_per_chunk=args.clip_re_chunk_size,
            verbose=args.verbose,
        )
    )
    pipeline.add_stage(preparation_stage(args))  # the --captioning-* flags have daskcap run's names
    if args.generate_previews:
        pipeline.add_stage(
            PreviewStage(target_fps=args.preview_target_fps, target_height=args.preview_target_height, verbose=args.verbose)
        )
    for stage in model_stages(args):  # the caption flags have daskcap run's names
        pipeline.add_stage(stage)
    pipeline.add_stage(
        ClipWriterStage(
            output_path=args.output_path,
            input_path=args.video_dir,
            upload_clips=args.upload_clips,
            dry_run=args.dry_run,
            generate_previews=args.generate_previews,
            generate_captions=captions,
            caption_models=[args.captioning_algorithm],
            enhanced_caption_models=[args.enhanced_caption_models],
            write_metas=args.write_metas,
            verbose=args.verbose,
        )
    )
    return pipeline


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        pipeline = build(args)
        pipeline.build()
    except ParamError as exc:
        for problem in exc.problems:
            print(f"split_clip_caption: error: {problem}", file=sys.stderr)
        return 2
    if args.generate_embeddings:
        print("note: daskcap computes no embeddings (pass --no-generate-embeddings to silence this)", file=sys.stderr)
    print(pipeline.describe())
    try:
        summary = pipeline.run()
    except (JobError, FileNotFoundError) as exc:
        print(f"split_clip_caption: error: {exc}", file=sys.stderr)
        return 2
    print(f"windows: {summary['windows']}  output: {args.output_path}")
    return 1 if summary["failed_partitions"] else 0


if __name__ == "__main__":
    sys.exit(main())
