"""Tiny Qwen models, built and briefly trained offline, saved like real checkpoints.

``daskcap tiny-models DIR`` writes ``DIR/vlm`` (a Qwen2.5-VL of a few hundred
KB) and ``DIR/lm`` (a Qwen2 text model with head_dim 64, which vLLM's CPU
backend needs), each with a byte-level BPE tokenizer trained here, Qwen's
special tokens and a chat template with a video branch. daskcap loads them
through exactly the code that loads real weights; only the weights differ.

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

import importlib

# What callers use, each from the module that defines it (loaded on first use).
_HOMES = {
    "RECORD": "build", "build_tiny_models": "build", "content_hash": "build", "evaluate": "build", "main": "build", "words_in": "build",
    "TrainingPlan": "training", "train_vlm": "training", "train_lm": "training",
    "SPECIAL_TOKENS": "text", "build_tokenizer": "text", "stage1_caption": "text", "stage2_caption": "text", "enhanced_caption": "text",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f"daskcap.engines.tiny.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'daskcap.engines.tiny' has no attribute {name!r}")
