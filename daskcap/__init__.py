"""daskcap: caption, preview and window video clips at scale on Dask.

The public API (``from daskcap import Pipeline, VideoReaderStage, ...``) is loaded
on first use, so importing one of daskcap's modules never imports all the others
(and no module imports, through this package, a module that imports it back).
"""

from daskcap.lazy import lazy_names

__version__ = "0.1.0"

# Name -> the module that defines it. VideoReader and FixedStrideExtractorStage are
# NeMo Curator's names for the same classes, so its users change only their imports.
_HOMES = {
    "DaskExecutor": "daskcap.pipeline:DaskExecutor",
    "Pipeline": "daskcap.pipeline:Pipeline",
    "export": "daskcap.training_data.runner:export",
    "CaptionEnhancementStage": "daskcap.stages.caption:CaptionEnhancementStage",
    "CaptionGenerationStage": "daskcap.stages.caption:CaptionGenerationStage",
    "CaptionCheckStage": "daskcap.stages.check:CaptionCheckStage",
    "FixedStrideClipStage": "daskcap.stages.clip:FixedStrideClipStage",
    "FixedStrideExtractorStage": "daskcap.stages.clip:FixedStrideClipStage",
    "CaptionPreparationStage": "daskcap.stages.prepare:CaptionPreparationStage",
    "PreviewStage": "daskcap.stages.preview:PreviewStage",
    "VideoReaderStage": "daskcap.stages.read:VideoReaderStage",
    "VideoReader": "daskcap.stages.read:VideoReaderStage",
    "ClipTranscodingStage": "daskcap.stages.transcode:ClipTranscodingStage",
    "ClipWriterStage": "daskcap.stages.write:ClipWriterStage",
}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_names(__name__, _HOMES)
