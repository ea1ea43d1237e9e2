"""daskcap: caption, preview and window video clips at scale on Dask."""

from daskcap.pipeline import DaskExecutor, Pipeline
from daskcap.stages.caption import CaptionEnhancementStage, CaptionGenerationStage
from daskcap.stages.check import CaptionCheckStage
from daskcap.stages.clip import FixedStrideClipStage
from daskcap.stages.prepare import CaptionPreparationStage
from daskcap.stages.preview import PreviewStage
from daskcap.stages.read import VideoReaderStage
from daskcap.stages.transcode import ClipTranscodingStage
from daskcap.stages.write import ClipWriterStage

# NeMo Curator's names for the same classes, so its users change only their imports.
VideoReader = VideoReaderStage
FixedStrideExtractorStage = FixedStrideClipStage

__version__ = "0.1.0"

__all__ = [
    "CaptionCheckStage",
    "CaptionEnhancementStage",
    "CaptionGenerationStage",
    "CaptionPreparationStage",
    "ClipTranscodingStage",
    "ClipWriterStage",
    "DaskExecutor",
    "FixedStrideClipStage",
    "FixedStrideExtractorStage",
    "Pipeline",
    "PreviewStage",
    "VideoReader",
    "VideoReaderStage",
]
