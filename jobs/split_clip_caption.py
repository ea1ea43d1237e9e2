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
Every flag of ``daskcap run`` is accepted too (--scheduler, --n-workers, --engine,
--engine-workers, --overwrite, --no-write-metas, ...), with NeMo Curator's
defaults where its script's differ (daskcap/flags.py lists them, with why).
"""

from __future__ import annotations

import argparse
import sys

from daskcap import ClipTranscodingStage, Pipeline
from daskcap.flags import add_flags, build_pipeline
from daskcap.run.job import JobError
from daskcap.stages._params import ParamError
from daskcap.stages.transcode import SUPPORTED_ENCODERS

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
    nemo = p.add_argument_group("NeMo Curator's job")
    nemo.add_argument("--video-dir", dest="input", required=True, help="input videos: directory, glob, Parquet list; local or fsspec URL")
    output = nemo.add_mutually_exclusive_group(required=True)
    output.add_argument("--output-path", dest="output", help="output directory")
    output.add_argument("--output-clip-path", dest="output", help="output directory (NeMo Curator's name before 1.2)")
    nemo.add_argument("--splitting-algorithm", default="fixed_stride", help="fixed_stride (transnetv2 is not available in daskcap)")
    nemo.add_argument("--transcode-cpus-per-worker", type=float, default=6.0, help="accepted; daskcap sizes workers at the cluster level")
    nemo.add_argument("--transcode-encoder", choices=SUPPORTED_ENCODERS, default="h264_nvenc",
                      help="clip mp4 encoder: h264_nvenc and libopenh264 fall back to libx264 where the worker lacks them")
    nemo.add_argument("--transcode-encoder-threads", type=int, default=1)
    nemo.add_argument("--transcode-ffmpeg-batch-size", type=int, default=16, help="accepted; daskcap sizes tasks with --windows-per-partition")
    nemo.add_argument("--transcode-use-hwaccel", action="store_true", help="refused: daskcap decodes on the CPU")
    nemo.add_argument("--transcode-use-input-video-bit-rate", action="store_true", help="encode clips at the source's bit rate")
    nemo.add_argument("--clip-re-chunk-size", type=int, default=32, help="accepted; daskcap's chunks are its partitions")
    nemo.add_argument("--no-generate-embeddings", dest="generate_embeddings", action="store_false",
                      help="daskcap computes no embeddings; pass this to say you do not expect them")
    nemo.add_argument("--enhanced-caption-models", default="qwen_lm", help="qwen_lm (the only choice, as in the reference)")
    # The flags this job shares with `daskcap run`, with NeMo Curator's defaults where
    # they differ (daskcap/flags.py says which, and why).
    add_flags(p, nemo=True)
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
    transcode = ClipTranscodingStage(
        num_cpus_per_worker=args.transcode_cpus_per_worker,
        encoder=args.transcode_encoder,
        encoder_threads=args.transcode_encoder_threads,
        encode_batch_size=args.transcode_ffmpeg_batch_size,
        use_hwaccel=args.transcode_use_hwaccel,
        use_input_bit_rate=args.transcode_use_input_video_bit_rate,
        num_clips_per_chunk=args.clip_re_chunk_size,
        verbose=args.verbose,
    )
    return build_pipeline(args, name="split-clip-caption", transcode=transcode,
                          caption_models=[args.captioning_algorithm], enhanced_caption_models=[args.enhanced_caption_models])


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        pipeline = build(args)
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
    print(f"windows: {summary['windows']}  output: {args.output}")
    return 1 if summary["failed_partitions"] else 0


if __name__ == "__main__":
    sys.exit(main())
