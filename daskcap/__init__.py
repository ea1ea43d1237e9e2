"""daskcap: caption, preview and window video clips at scale on Dask."""

from daskcap.pipeline import Pipeline
from daskcap.stages.caption import CaptionEnhancementStage, CaptionGenerationStage
from daskcap.stages.check import CaptionCheckStage
from daskcap.stages.clip import FixedStrideClipStage
from daskcap.stages.prepare import CaptionPreparationStage
from daskcap.stages.preview import PreviewStage
from daskcap.stages.read import VideoReaderStage
from daskcap.stages.write import ClipWriterStage

__version__ = "0.1.0"

__all__ = [
    "CaptionCheckStage",
    "CaptionEnhancementStage",
    "CaptionGenerationStage",
    "CaptionPreparationStage",
    "ClipWriterStage",
    "FixedStrideClipStage",
    "Pipeline",
    "PreviewStage",
    "VideoReaderStage",
]
