"""The tiny models' words: Qwen's special tokens and chat template, the captions they
are trained to say, and a byte-level BPE tokenizer trained on them."""

from __future__ import annotations

from daskcap import prompts
from daskcap.synthetic import COLOURS, DIRECTIONS

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Qwen's chat format: a system turn, then turns of text and (for the VLM) a
# video placeholder that the engine expands to the video's token count.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{ message['content'] }}"
    "{%- else %}{%- for part in message['content'] %}"
    "{%- if part['type'] == 'video' %}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'text' %}{{ part['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Prompts users may write themselves: the VLM answers them like the caption prompts.
OTHER_PROMPTS = ("Describe this video.", "What happens in this clip?", "Caption the video in one sentence.")


def stage1_caption(colour: str, direction: str) -> str:
    motion = "stays still" if direction == "still" else f"moves {direction}"
    return f"A {colour} square {motion} on a grey field."


def stage2_caption(colour: str, direction: str) -> str:
    motion = "stays still in" if direction == "still" else f"moves {direction} across"
    return f"The {colour} square {motion} the noisy grey field."


def enhanced_caption(colour: str, direction: str) -> str:
    if direction == "still":
        return (f"In this clip a bright {colour} square stays still near the same spot on a grainy grey "
                "background, and nothing else moves from the first frame to the last.")
    return (f"In this clip a bright {colour} square moves steadily {direction} across a grainy grey "
            "background, and it stays in view from the first frame to the last.")


def _corpus() -> list[str]:
    texts = [*prompts.CAPTION_PROMPTS.values(), *prompts.ENHANCE_PROMPTS.values(), prompts.STAGE2_PROMPT, *OTHER_PROMPTS]
    for colour in COLOURS:
        for direction in DIRECTIONS:
            texts += [stage1_caption(colour, direction), stage2_caption(colour, direction), enhanced_caption(colour, direction)]
    return texts * 4


def build_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
