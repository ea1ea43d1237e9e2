"""Parameters of the model stages (CaptionGenerationStage, CaptionEnhancementStage).

Their parameters, defaults and checks follow the reference so pipelines can
be written against them today; running them needs the engine layer
(``daskcap/engines``), which this version does not ship yet, and a pipeline
that includes them is refused before any video is read.
"""

from __future__ import annotations

from dataclasses import dataclass

from daskcap.stages._params import Checks

CAPTION_MODEL_VARIANTS = ("qwen",)
ENHANCE_PROMPT_VARIANTS = ("default", "av-surveillance")


@dataclass(frozen=True)
class CaptionGenerationStage:
    model_dir: str = "models/qwen"
    model_variant: str = "qwen"
    caption_batch_size: int = 16
    fp8: bool = False
    max_output_tokens: int = 512
    model_does_preprocess: bool = False
    disable_mmcache: bool = False
    generate_stage2_caption: bool = False
    stage2_prompt_text: str | None = None
    verbose: bool = False

    def __post_init__(self) -> None:
        checks = Checks("CaptionGenerationStage")
        checks.text("model_dir", self.model_dir)
        checks.choice("model_variant", self.model_variant, CAPTION_MODEL_VARIANTS)
        checks.number("caption_batch_size", self.caption_batch_size, 1, integer=True)
        checks.number("max_output_tokens", self.max_output_tokens, 1, integer=True)
        checks.text("stage2_prompt_text", self.stage2_prompt_text, optional=True)
        checks.done()


@dataclass(frozen=True)
class CaptionEnhancementStage:
    model_dir: str = "models/qwen"
    model_variant: str = "qwen"
    prompt_variant: str = "default"
    prompt_text: str | None = None
    model_batch_size: int = 128
    fp8: bool = False
    max_output_tokens: int = 512
    verbose: bool = False

    def __post_init__(self) -> None:
        checks = Checks("CaptionEnhancementStage")
        checks.text("model_dir", self.model_dir)
        checks.choice("model_variant", self.model_variant, CAPTION_MODEL_VARIANTS)
        checks.choice("prompt_variant", self.prompt_variant, ENHANCE_PROMPT_VARIANTS)
        checks.text("prompt_text", self.prompt_text, optional=True)
        checks.number("model_batch_size", self.model_batch_size, 1, integer=True)
        checks.number("max_output_tokens", self.max_output_tokens, 1, integer=True)
        checks.done()
