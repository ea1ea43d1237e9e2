"""Captions and previews for a folder of videos: the reference's quickstart as a daskcap Pipeline.

    python jobs/caption_preview.py --input videos/ --output out/ [--scheduler tcp://host:8786]

Captions use Qwen/Qwen2.5-VL-7B-Instruct (weights under --model-dir, downloaded
once if missing); --enhance-model adds enhanced captions; --no-captions stops
at windows and previews.
"""

from __future__ import annotations

import argparse
import json
import sys

from daskcap import (
    CaptionEnhancementStage,
    CaptionGenerationStage,
    CaptionPreparationStage,
    ClipWriterStage,
    FixedStrideClipStage,
    Pipeline,
    PreviewStage,
    VideoReaderStage,
)
from daskcap.report import build_report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="directory, glob or Parquet list of videos (local or fsspec URL)")
    parser.add_argument("--output", required=True, help="output directory (local or fsspec URL)")
    parser.add_argument("--scheduler", default=None, help="existing Dask scheduler address (default: embedded cluster)")
    parser.add_argument("--n-workers", type=int, default=None, help="embedded cluster workers (default: one per core)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--model-dir", default="models", help="folder of <org>/<name> model weights")
    parser.add_argument("--captioning-model", default="Qwen/Qwen2.5-VL-7B-Instruct", help="caption model: HF id or local path")
    parser.add_argument("--enhance-model", default=None, help="text model for enhanced captions: HF id or local path")
    parser.add_argument("--max-output-tokens", type=int, default=512, help="caption length limit, in tokens")
    parser.add_argument("--no-captions", action="store_true", help="windows and previews only")
    args = parser.parse_args()

    pipeline = Pipeline(name="caption-preview", scheduler=args.scheduler, n_workers=args.n_workers, overwrite=args.overwrite)
    pipeline.add_stage(VideoReaderStage(input_video_path=args.input))
    pipeline.add_stage(FixedStrideClipStage(clip_len_s=10.0, min_clip_length_s=2.0))
    pipeline.add_stage(CaptionPreparationStage(prompt_variant="default"))  # default windows and sampling
    pipeline.add_stage(PreviewStage(target_fps=1.0, target_height=240))
    if not args.no_captions:
        pipeline.add_stage(
            CaptionGenerationStage(
                model_dir=args.model_dir,
                model=args.captioning_model,
                max_output_tokens=args.max_output_tokens,
                generate_stage2_caption=True,
                # As `daskcap run` (and the reference's scripts) without --captioning-use-vllm-mmcache,
                # so both submit the same engine config and reuse a loaded engine.
                disable_mmcache=True,
            )
        )
        if args.enhance_model:
            pipeline.add_stage(
                CaptionEnhancementStage(model_dir=args.model_dir, model=args.enhance_model, max_output_tokens=args.max_output_tokens)
            )
    pipeline.add_stage(ClipWriterStage(output_path=args.output, input_path=args.input, upload_clips=True))
    summary = pipeline.run()
    report = build_report(args.output)

    shown = ("videos", "clips", "windows", "caption_flags", "enhance_flags", "wall_s", "stage_seconds", "workers")
    print(json.dumps({k: summary[k] for k in shown if k in summary}, indent=2))
    print(f"\nOutput written to {args.output}:")
    print(f"  {args.output}/windows/   window table (Parquet)")
    print(f"  {args.output}/videos/    video table (Parquet)")
    print(f"  {args.output}/previews/  animated WebP previews, <clip_id>/<start>_<end>.webp")
    print(f"  {args.output}/clips/     clip mp4s, <clip_id>.mp4")
    print(f"  {args.output}/summary.json")
    print(f"  {report}   review page: open it in a browser")
    return 0 if not summary["failed_partitions"] else 1


if __name__ == "__main__":
    sys.exit(main())
