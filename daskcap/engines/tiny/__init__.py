"""Tiny Qwen models, built and briefly trained offline, saved like real checkpoints.

``daskcap tiny-models DIR`` writes ``DIR/vlm`` (a Qwen2.5-VL of a few hundred
KB, with the preprocessor config vLLM builds its processors from) and ``DIR/lm``
(a Qwen2 text model), each with a byte-level BPE tokenizer trained here, Qwen's
special tokens and a chat template with a video branch. Their attention heads are
32 and 64 wide, sizes vLLM's CPU backend takes. daskcap loads them through exactly
the code that loads real weights, in the transformers engine and in vLLM; only the
weights differ.

They are trained for about a minute of CPU on synthetic clips
(:mod:`daskcap.synthetic`: a coloured square moving over grey noise), so their
outputs can be checked:

- the VLM names the square's colour and the direction it moves in a short
  sentence ("A red square moves left on a grey field."); asked for a stage-2
  refinement it answers in another sentence with the same two words;
- the text model rewrites such a caption as a longer sentence that keeps them.

Training is seeded and deterministic, and ``DIR`` is reused while its
recorded content hash (this code, the prompts, the pixel pipeline and the
library versions) matches. Real captions need real weights.
"""

from daskcap.lazy import lazy_names

# What callers use, each from the module that defines it (loaded on first use).
_HOMES = {
    "RECORD": "daskcap.engines.tiny.build:RECORD",
    "build_tiny_models": "daskcap.engines.tiny.build:build_tiny_models",
    "content_hash": "daskcap.engines.tiny.build:content_hash",
    "evaluate": "daskcap.engines.tiny.build:evaluate",
    "main": "daskcap.engines.tiny.build:main",
    "words_in": "daskcap.engines.tiny.build:words_in",
    "TrainingPlan": "daskcap.engines.tiny.training:TrainingPlan",
    "train_vlm": "daskcap.engines.tiny.training:train_vlm",
    "train_lm": "daskcap.engines.tiny.training:train_lm",
    "SPECIAL_TOKENS": "daskcap.engines.tiny.text:SPECIAL_TOKENS",
    "build_tokenizer": "daskcap.engines.tiny.text:build_tokenizer",
    "stage1_caption": "daskcap.engines.tiny.text:stage1_caption",
    "stage2_caption": "daskcap.engines.tiny.text:stage2_caption",
    "enhanced_caption": "daskcap.engines.tiny.text:enhanced_caption",
}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_names(__name__, _HOMES)
