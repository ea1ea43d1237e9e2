"""The Python API, shaped like the reference's quickstart::

    pipeline = Pipeline(name="captions")
    pipeline.add_stage(VideoReaderStage(input_video_path="videos/"))
    pipeline.add_stage(FixedStrideClipStage(clip_len_s=10.0))
    pipeline.add_stage(CaptionPreparationStage())
    pipeline.add_stage(PreviewStage())
    pipeline.add_stage(ClipWriterStage(output_path="out/"))
    summary = pipeline.run()
"""

from __future__ import annotations

import dataclasses

from daskcap.graph import ClusterOptions, Job, run_job
from daskcap.stages._params import ParamError
from daskcap.stages.caption import CaptionEnhancementStage, CaptionGenerationStage
from daskcap.stages.check import CaptionCheckStage
from daskcap.stages.clip import FixedStrideClipStage
from daskcap.stages.prepare import CaptionPreparationStage
from daskcap.stages.preview import PreviewStage
from daskcap.stages.read import VideoReaderStage
from daskcap.stages.write import ClipWriterStage

# Stage kinds in the order a pipeline must list them, and whether each is required.
_ORDER = (
    (VideoReaderStage, True),
    (FixedStrideClipStage, True),
    (CaptionPreparationStage, True),
    (PreviewStage, False),
    (CaptionGenerationStage, False),
    (CaptionEnhancementStage, False),
    (CaptionCheckStage, False),
    (ClipWriterStage, True),
)


class Pipeline:
    """An ordered list of stages, run on an embedded or existing Dask cluster."""

    def __init__(
        self,
        name: str,
        description: str = "",
        *,
        scheduler: str | None = None,
        n_workers: int | None = None,
        engine_workers: int | None = None,
        windows_per_partition: int = 8,
        overwrite: bool = False,
        retry_failed: bool = False,
        progress: bool = True,
        caption_checks: bool = True,
    ):
        self.name = name
        self.description = description
        self.stages: list = []
        self.cluster = ClusterOptions(
            scheduler=scheduler, n_workers=n_workers, engine_workers=engine_workers, windows_per_partition=windows_per_partition
        )
        self.overwrite = overwrite
        self.retry_failed = retry_failed
        self.progress = progress
        # Captions are checked with the default thresholds unless a CaptionCheckStage
        # sets others or this is False.
        self.caption_checks = caption_checks

    def add_stage(self, stage) -> Pipeline:
        if not any(isinstance(stage, kind) for kind, _ in _ORDER):
            raise TypeError(f"{type(stage).__name__} is not a daskcap stage")
        self.stages.append(stage)
        return self

    def describe(self) -> str:
        return "\n".join([f"Pipeline {self.name!r}"] + [f"  {i + 1}. {stage!r}" for i, stage in enumerate(self.stages)])

    def build(self) -> Job:
        """Check the stage list and turn it into a job; raise ParamError listing every problem."""
        problems = []
        kinds = [type(stage) for stage in self.stages]
        found = {}
        for kind, required in _ORDER:
            count = kinds.count(kind)
            if count > 1:
                problems.append(f"{kind.__name__} is added {count} times; add it once")
            elif count == 1:
                found[kind] = self.stages[kinds.index(kind)]
            elif required:
                problems.append(f"the pipeline needs a {kind.__name__}")
        expected = [kind for kind, _ in _ORDER if kind in found]
        if not problems and kinds != expected:
            problems.append(
                "stages are out of order: expected " + " -> ".join(k.__name__ for k in expected)
            )
        if CaptionEnhancementStage in found and CaptionGenerationStage not in found:
            problems.append("CaptionEnhancementStage rewrites captions: add a CaptionGenerationStage before it")
        if CaptionCheckStage in found and CaptionGenerationStage not in found:
            problems.append("CaptionCheckStage checks captions: add a CaptionGenerationStage before it")
        if CaptionCheckStage in found and not self.caption_checks:
            problems.append("a CaptionCheckStage is added but Pipeline(caption_checks=False) turns the checks off: do one or the other")
        prepare = found.get(CaptionPreparationStage)
        if PreviewStage in found and prepare is not None and not prepare.generate_previews:
            problems.append("PreviewStage needs CaptionPreparationStage(generate_previews=True) (previews are made from window mp4s)")
        if problems:
            raise ParamError(problems)
        writer = found[ClipWriterStage]
        caption = found.get(CaptionGenerationStage)
        if caption is not None:
            # The engine builds pixel values in the dtype the preparation stage names.
            caption = dataclasses.replace(caption, preprocess_dtype=prepare.preprocess_dtype)
        return Job(
            reader=found[VideoReaderStage],
            clipper=found[FixedStrideClipStage],
            prepare=dataclasses.replace(prepare, clip_mp4=writer.upload_clips),
            preview=found.get(PreviewStage),
            caption=caption,
            enhance=found.get(CaptionEnhancementStage),
            check=found.get(CaptionCheckStage, CaptionCheckStage() if caption is not None and self.caption_checks else None),
            writer=writer,
        )

    def run(self) -> dict:
        """Run the pipeline; return the summary that is also written to summary.json."""
        return run_job(self.build(), self.cluster, overwrite=self.overwrite, retry_failed=self.retry_failed, progress=self.progress)
