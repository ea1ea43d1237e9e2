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
from dataclasses import dataclass

from daskcap.run.job import ClusterOptions, Job
from daskcap.run.runner import run_job
from daskcap.stages._params import ParamError
from daskcap.stages.caption import CaptionEnhancementStage, CaptionGenerationStage
from daskcap.stages.check import CaptionCheckStage
from daskcap.stages.clip import FixedStrideClipStage
from daskcap.stages.prepare import CaptionPreparationStage
from daskcap.stages.preview import PreviewStage
from daskcap.stages.read import VideoReaderStage
from daskcap.stages.transcode import ClipTranscodingStage
from daskcap.stages.write import ClipWriterStage

# Stage kinds in the order a pipeline must list them, and whether each is required.
_ORDER = (
    (VideoReaderStage, True),
    (FixedStrideClipStage, True),
    (ClipTranscodingStage, False),
    (CaptionPreparationStage, True),
    (PreviewStage, False),
    (CaptionGenerationStage, False),
    (CaptionEnhancementStage, False),
    (CaptionCheckStage, False),
    (ClipWriterStage, True),
)


@dataclass(frozen=True)
class DaskExecutor:
    """Where ``Pipeline.run(executor)`` runs, as NeMo Curator's executors say it: the
    Dask scheduler at ``scheduler`` (an existing cluster), or, with none, an embedded
    cluster of ``n_workers`` CPU workers and ``engine_workers`` engine workers.
    ``windows_per_partition`` sizes each task (and each engine call); ``videos_per_shard``
    the pieces the client keeps track of. An embedded cluster listens on ``listen_host``
    (loopback unless asked), its dashboard on ``dashboard_address``."""

    scheduler: str | None = None
    n_workers: int | None = None
    engine_workers: int | None = None
    windows_per_partition: int = 8
    videos_per_shard: int = 1000
    listen_host: str = "127.0.0.1"
    dashboard_address: str | None = None
    tls_ca_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    def __post_init__(self) -> None:
        self.cluster_options()  # the same checks as ClusterOptions, raised here

    def cluster_options(self) -> ClusterOptions:
        return ClusterOptions(self.scheduler, self.n_workers, self.engine_workers, self.windows_per_partition, self.videos_per_shard,
                              self.listen_host, self.dashboard_address, self.tls_ca_file, self.tls_cert, self.tls_key)


class Pipeline:
    """An ordered list of stages, run on an embedded or existing Dask cluster."""

    def __init__(
        self,
        name: str,
        description: str | None = "",
        stages: list | None = None,
        config: dict | None = None,
        *,
        scheduler: str | None = None,
        n_workers: int | None = None,
        engine_workers: int | None = None,
        windows_per_partition: int = 8,
        videos_per_shard: int = 1000,
        listen_host: str = "127.0.0.1",
        dashboard_address: str | None = None,
        tls_ca_file: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        overwrite: bool = False,
        retry_failed: bool = False,
        progress: bool = True,
        caption_checks: bool = True,
    ):
        if config:
            raise ParamError(
                f"Pipeline(config=...) holds NeMo Curator executor settings, which daskcap does not read; got {config!r}: "
                "set the cluster with DaskExecutor(...) or Pipeline(scheduler=..., n_workers=...)"
            )
        self.name = name
        self.description = description or ""
        self.stages: list = []
        self.cluster = ClusterOptions(
            scheduler=scheduler, n_workers=n_workers, engine_workers=engine_workers, windows_per_partition=windows_per_partition,
            videos_per_shard=videos_per_shard, listen_host=listen_host, dashboard_address=dashboard_address,
            tls_ca_file=tls_ca_file, tls_cert=tls_cert, tls_key=tls_key,
        )
        self.overwrite = overwrite
        self.retry_failed = retry_failed
        self.progress = progress
        # Captions are checked with the default thresholds unless a CaptionCheckStage
        # sets others or this is False.
        self.caption_checks = caption_checks
        for stage in stages or ():
            self.add_stage(stage)

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
        caption = found.get(CaptionGenerationStage)
        if caption is not None and prepare is not None and caption.endpoint and caption.endpoint_video == "mp4" and not prepare.window_mp4s:
            problems.append("CaptionGenerationStage(endpoint_video='mp4') sends each window's mp4, which CaptionPreparationStage"
                            "(generate_previews=False) does not make: make them (--generate-previews) or send endpoint_video='frames'")
        if problems:
            raise ParamError(problems)
        writer = found[ClipWriterStage]
        if caption is not None:
            # The engine builds pixel values in the dtype the preparation stage names.
            caption = dataclasses.replace(caption, preprocess_dtype=prepare.preprocess_dtype)
        transcode = found.get(ClipTranscodingStage)
        if transcode is not None:
            prepare = dataclasses.replace(
                prepare,
                clip_encoder=transcode.encoder,
                clip_encoder_threads=transcode.encoder_threads,
                clip_use_input_bit_rate=transcode.use_input_bit_rate,
            )
        enhance = found.get(CaptionEnhancementStage)
        if writer.caption_models is None or writer.enhanced_caption_models is None:
            # NeMo's metas name captions by model; unset, they take the stages' names.
            writer = dataclasses.replace(
                writer,
                caption_models=writer.caption_models if writer.caption_models is not None else ([caption.model_variant] if caption else []),
                enhanced_caption_models=writer.enhanced_caption_models if writer.enhanced_caption_models is not None else (["qwen_lm"] if enhance else []),
            )
        return Job(
            reader=found[VideoReaderStage],
            clipper=found[FixedStrideClipStage],
            prepare=dataclasses.replace(prepare, clip_mp4=writer.upload_clips),
            preview=found.get(PreviewStage),
            caption=caption,
            enhance=enhance,
            check=found.get(CaptionCheckStage, CaptionCheckStage() if caption is not None and self.caption_checks else None),
            writer=writer,
        )

    def run(self, executor: DaskExecutor | None = None, *, export=None) -> dict:
        """Run the pipeline on ``executor``'s cluster (default: the one this pipeline was
        made with, embedded unless ``scheduler`` was given); return the summary that is
        also written to summary.json. ``export`` (``daskcap.training_data.ExportParams``)
        then exports the output for training on the same cluster."""
        if executor is None:
            cluster = self.cluster
        elif isinstance(executor, DaskExecutor):
            cluster = executor.cluster_options()
        else:
            kind = type(executor)
            raise TypeError(
                f"daskcap runs pipelines on Dask: pass daskcap.DaskExecutor(scheduler=...) for an existing cluster, or "
                f"nothing (or DaskExecutor()) for an embedded one; got {kind.__module__}.{kind.__qualname__}"
            )
        return run_job(self.build(), cluster, overwrite=self.overwrite, retry_failed=self.retry_failed, progress=self.progress,
                       export=export)
