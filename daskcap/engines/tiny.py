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

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from daskcap import prompts, synthetic
from daskcap.synthetic import COLOURS, DIRECTIONS

log = logging.getLogger(__name__)

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
_OTHER_PROMPTS = ("Describe this video.", "What happens in this clip?", "Caption the video in one sentence.")


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
    texts = [*prompts.CAPTION_PROMPTS.values(), *prompts.ENHANCE_PROMPTS.values(), prompts.STAGE2_PROMPT, *_OTHER_PROMPTS]
    for colour in COLOURS:
        for direction in DIRECTIONS:
            texts += [stage1_caption(colour, direction), stage2_caption(colour, direction), enhanced_caption(colour, direction)]
    return texts * 4


def _tokenizer(vocab_size: int):
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


VISION_HIDDEN = 32
TEXT_HIDDEN = 64

def _vlm(tokenizer):
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": TEXT_HIDDEN,
            "intermediate_size": 2 * TEXT_HIDDEN,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 32768,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 2,
            "hidden_size": VISION_HIDDEN,
            "intermediate_size": 2 * VISION_HIDDEN,
            "num_heads": 2,
            "out_hidden_size": TEXT_HIDDEN,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            # Both blocks attend over whole frames: windowed attention loops over
            # dozens of small windows per frame, which dominates CPU training.
            "window_size": 112,
            "fullatt_block_indexes": [0, 1],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    model = Qwen2_5_VLForConditionalGeneration(config)
    _filter_bank(model.model.visual.patch_embed.proj.weight)
    _steady_norms(model.model.visual)
    _motion_units(model.model.visual.blocks[0].mlp, model.model.visual.patch_embed.proj.weight)
    _spread_motion(model.model.visual.blocks[1].attn, VISION_HIDDEN)
    _merger_passes(model.model.visual.merger, VISION_HIDDEN)
    model.generation_config = GenerationConfig(eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"], do_sample=False)
    return model


def _filter_bank(weight) -> None:
    """Start the patch embedding from a fixed low-order basis instead of noise.

    Per colour channel: the patch's mean, its change between the two frames of
    the temporal patch, its left-right and top-bottom slopes, and those slopes'
    change; the remaining filters keep their random start. Motion shows up in
    products of these (a slope times a change), which the vision blocks' gated
    MLPs form readily; from noise, a tiny model trained for a minute does not
    find them. Training refines every filter.
    """
    import torch

    hidden, channels, frames, size, _ = weight.shape
    ramp = torch.linspace(-1.0, 1.0, size)
    change = torch.tensor([-1.0, 1.0]).view(frames, 1, 1)
    spatial = [torch.ones(size, size), ramp.view(1, size).expand(size, size), ramp.view(size, 1).expand(size, size)]
    shapes = [s.expand(frames, size, size) for s in spatial] + [change * s for s in spatial]
    with torch.no_grad():
        index = 0
        for shape in shapes:
            for channel in range(channels):
                if index >= hidden:
                    return
                filt = torch.zeros(channels, frames, size, size)
                filt[channel] = shape
                weight[index] = filt / shape.abs().sum()
                index += 1


# Where _filter_bank puts each basis filter: FILTER[shape] + colour channel.
_MEAN, _SLOPE_X, _SLOPE_Y, _CHANGE, _CHANGE_X, _CHANGE_Y = 0, 3, 6, 9, 12, 15
_MOTION_X, _MOTION_Y = 18, 19  # the channels the motion units write to
_STEADY = 31  # a constant channel that keeps every patch's RMS norm nearly the same
STEADY_LEVEL = 15.0


def _steady_norms(visual) -> None:
    """Keep the designed channels clean through the vision blocks' RMS norms.

    Each block normalises every patch by its own RMS before attention and MLP.
    A coloured patch's RMS is several times a grey one's, so a frame-wide average
    of motion, taken after the norm, weighs quiet background patches most and
    can flip sign (measured: a black square moving left read as moving right).
    A constant channel, large against the others and added by the first
    attention's output bias, makes every patch's RMS nearly the same, so what the
    blocks and the merger read is the designed signal times one factor. The
    random parts of the blocks are also kept from writing into the designed
    channels (mean colour, motion, the constant).
    """
    import torch

    designed = [_MEAN + c for c in range(3)] + [_MOTION_X, _MOTION_Y, _STEADY]
    with torch.no_grad():
        visual.patch_embed.proj.weight[_STEADY].zero_()
        for block in visual.blocks:
            for linear in (block.attn.proj, block.mlp.down_proj):
                linear.weight[designed] = 0.0
                linear.bias[designed] = 0.0
        visual.blocks[0].attn.proj.bias[_STEADY] = STEADY_LEVEL
        merged_inputs = visual.merger.mlp[0].weight  # four patches' channels side by side
        for patch in range(merged_inputs.shape[1] // VISION_HIDDEN):
            merged_inputs[:, patch * VISION_HIDDEN + _STEADY] = 0.0  # a constant says nothing


def _motion_units(mlp, patch_embed_weight, gain: float = 16.0) -> None:
    """Start 12 of the first vision block's gated-MLP units as motion detectors.

    A patch whose colour changes between the two frames (``change``) where the
    colour also slopes across it (``slope``) sits on a moving edge; the sign of
    change x slope says which way the edge moves, whatever the colour. A gated
    unit computes silu(a) * b, and silu(z) - silu(-z) = z, so a pair of units
    gives change * slope exactly. Summed over the three colour channels, they
    are written to one channel per axis. Training refines them.
    """
    import torch

    with torch.no_grad():
        for out in (_MOTION_X, _MOTION_Y):
            patch_embed_weight[out].zero_()  # the channels start clean: the units write there
        unit = 0
        for slope, out in ((_SLOPE_X, _MOTION_X), (_SLOPE_Y, _MOTION_Y)):
            for channel in range(3):
                for sign in (1.0, -1.0):
                    for proj in (mlp.gate_proj, mlp.up_proj):
                        proj.weight[unit].zero_()
                        proj.bias[unit] = 0.0
                    mlp.gate_proj.weight[unit, _CHANGE + channel] = sign * gain
                    mlp.up_proj.weight[unit, slope + channel] = gain
                    mlp.down_proj.weight[:, unit].zero_()
                    mlp.down_proj.weight[out, unit] = sign
                    unit += 1


def _spread_motion(attn, hidden: int, gain: float = 8.0) -> None:
    """Start the second vision block's last head as a frame-wide average of the motion channels.

    With its queries and keys at zero, the head attends to every patch of the
    frame pair alike; its values carry only the motion channels, and its output
    adds their average back to every patch. So each visual token, not only the
    few on the square's edges, tells the language model how the frame moves.
    """
    import torch

    heads = attn.num_heads
    head_dim = hidden // heads
    last = slice(hidden - head_dim, hidden)  # the channels of the last head, where the motion channels sit
    if not (last.start <= _MOTION_X and _MOTION_Y < last.stop):
        raise ValueError("the motion channels must fall in the last attention head")
    with torch.no_grad():
        for part in range(3):  # query, key, value rows of this head
            rows = slice(part * hidden + last.start, part * hidden + last.stop)
            attn.qkv.weight[rows] = 0.0
            attn.qkv.bias[rows] = 0.0
        for channel in (_MOTION_X, _MOTION_Y):
            attn.qkv.weight[2 * hidden + channel, channel] = gain
            attn.proj.weight[:, channel] = 0.0
            attn.proj.weight[channel].zero_()
            attn.proj.weight[channel, channel] = 1.0
            attn.proj.bias[channel] = 0.0


def _merger_passes(merger, hidden: int, gain: float = 4.0) -> None:
    """Start the patch merger so its first outputs carry the patches' mean colour and motion.

    Each passed channel gets two hidden units, +x and -x, summed over the four
    merged patches; GELU(z) - GELU(-z) = z, so the output is the channel's sum,
    with nothing else mixed in. The other outputs keep their random start.
    """
    import torch

    first, _, second = merger.mlp
    passed = [_MEAN + c for c in range(3)] + [_MOTION_X, _MOTION_Y]
    with torch.no_grad():
        for out, channel in enumerate(passed):
            second.weight[out].zero_()
            second.bias[out] = 0.0
            for sign, unit in ((1.0, 2 * out), (-1.0, 2 * out + 1)):
                first.weight[unit].zero_()
                first.bias[unit] = 0.0
                for patch in range(4):
                    first.weight[unit, patch * hidden + channel] = sign * gain / 4
                second.weight[:, unit].zero_()
                second.weight[out, unit] = sign


def _lm(tokenizer):
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    eos, pad = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=pad,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad, do_sample=False)
    return model


# --- synthetic examples -----------------------------------------------------

SOURCE_SIZES = ((160, 120), (192, 144), (176, 144), (128, 96), (240, 136), (96, 128))
# Window lengths trained on: 4 to 8 sampled frames at the default 2 fps.
WINDOW_SECONDS = (2.0, 2.5, 3.0, 3.5, 4.0)


@dataclass(frozen=True)
class _Example:
    square: synthetic.MovingSquare
    prompt: str
    target: str


def _window_frames(square: synthetic.MovingSquare, width: int, height: int, fps: int, seconds: float):
    """The frames the prepare stage would sample from such a clip, at the model grid, and their rate."""
    import av

    from daskcap.stages.prepare import RESIZE_INTERPOLATION
    from daskcap.video.windows import frame_size_for_model, num_sampled_frames, sample_indices

    total = max(4, round(seconds * fps))
    count = num_sampled_frames(total, fps, 2.0)
    grid_h, grid_w = frame_size_for_model(height, width, count)
    frames = []
    for index in sample_indices(0, total - 1, count):
        image = av.VideoFrame.from_ndarray(square.render(index / (total - 1), width, height, index), format="rgb24")
        small = image.reformat(grid_w, grid_h, format="yuv420p", interpolation=RESIZE_INTERPOLATION)
        frames.append(small.to_ndarray(format="rgb24"))
    return np.stack(frames), count / (total / fps)


def _caption_example(rng: np.random.Generator, stage2: bool) -> _Example:
    square = synthetic.random_square(rng)
    if not stage2:
        choices = [*prompts.CAPTION_PROMPTS.values(), *_OTHER_PROMPTS]
        return _Example(square, str(choices[rng.integers(len(choices))]), stage1_caption(square.colour, square.direction))
    # The stage-1 caption it is shown is right half of the time: the frames are what to trust.
    if rng.random() < 0.5:
        shown = stage1_caption(square.colour, square.direction)
    else:
        shown = stage1_caption(str(rng.choice(list(COLOURS))), str(rng.choice(list(DIRECTIONS))))
    return _Example(square, prompts.stage2_prompt(None, shown), stage2_caption(square.colour, square.direction))


def _caption_batches(seed: int, batch_size: int) -> Iterator[tuple[list, list[str]]]:
    """Endless batches of (VideoRequest, target) of one frame shape each."""
    from daskcap.engines.base import VideoRequest

    rng = np.random.default_rng(seed)
    while True:
        width, height = SOURCE_SIZES[rng.integers(len(SOURCE_SIZES))]
        fps = int(rng.choice([24, 25, 30]))
        seconds = float(rng.choice(WINDOW_SECONDS))
        stage2 = bool(rng.random() < 0.4)
        requests, targets = [], []
        for i in range(batch_size):
            example = _caption_example(rng, stage2)
            frames, sampled_fps = _window_frames(example.square, width, height, fps, seconds)
            requests.append(VideoRequest(str(i), frames, sampled_fps, example.prompt, 64))
            targets.append(example.target)
        yield requests, targets


def _enhance_batches(seed: int, batch_size: int) -> Iterator[tuple[list[str], list[str]]]:
    rng = np.random.default_rng(seed)
    variants = list(prompts.ENHANCE_PROMPTS)
    while True:
        texts, targets = [], []
        for _ in range(batch_size):
            colour, direction = str(rng.choice(list(COLOURS))), str(rng.choice(list(DIRECTIONS)))
            caption = (stage1_caption, stage2_caption)[int(rng.integers(2))](colour, direction)
            texts.append(prompts.enhance_prompt(variants[rng.integers(len(variants))], None, caption))
            targets.append(enhanced_caption(colour, direction))
        yield texts, targets


# --- training ---------------------------------------------------------------


ANSWER_WEIGHT = 10.0


def _answer_token_ids(tokenizer):
    """The tokens that carry the answer as captions spell them (" red", " left", and " moves" or
    " stays", where a still square is told apart from a moving one)."""
    import torch

    words = (*COLOURS, *DIRECTIONS, "moves", "stays")
    return torch.tensor(sorted({tokenizer.convert_tokens_to_ids(tokenizer.tokenize(" " + word))[0] for word in words}))


def _first_answer(labels: list[int]) -> int:
    """Where the answer starts in a row of labels."""
    return next(i for i, label in enumerate(labels) if label != -100)


def _labelled(tokenizer, prompts_rendered: list[str], targets: list[str]):
    """input_ids, attention_mask and labels (the answer only), right-padded."""
    import torch

    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    rows = []
    for prompt, target in zip(prompts_rendered, targets):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer = tokenizer(target, add_special_tokens=False)["input_ids"] + [end]
        rows.append((prompt_ids + answer, [-100] * len(prompt_ids) + answer))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
    # The words that carry the answer weigh more than the template around them, and
    # so does each answer's first token, where the prompt picks the sentence to say.
    weights = torch.where(torch.isin(labels, _answer_token_ids(tokenizer)), ANSWER_WEIGHT, 1.0)
    for row, (_, row_labels) in enumerate(rows):
        weights[row, _first_answer(row_labels)] = ANSWER_WEIGHT
    return input_ids, mask, labels, weights


def _train(model, steps: int, learning_rate: float, step_inputs) -> list[float]:
    """AdamW with a short warm-up and cosine decay; returns the loss per step."""
    import math

    import torch

    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=learning_rate, weight_decay=0.01)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
    )
    return _train_steps(model, optimizer, schedule, step_inputs, steps)


def _train_steps(model, optimizer, schedule, step_inputs, steps: int) -> list[float]:
    """Weighted next-token loss on the answers only (see ``_labelled``)."""
    import torch

    model.train()
    losses = []
    for _ in range(steps):
        inputs = dict(next(step_inputs))
        labels, weights = inputs.pop("labels")[:, 1:], inputs.pop("label_weights")[:, 1:]
        logits = model(**inputs).logits[:, :-1].float()
        per_token = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
        weights = weights * (labels != -100)
        loss = (per_token * weights).sum() / weights.sum()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    model.eval()
    return losses


def _vlm_inputs(tokenizer, batches):
    import torch

    from daskcap.engines.hf_engine import video_inputs

    for requests, targets in batches:
        texts, video = video_inputs(tokenizer, requests)
        input_ids, mask, labels, weights = _labelled(tokenizer, texts, targets)
        yield dict(input_ids=input_ids, attention_mask=mask, labels=labels, label_weights=weights, **{k: torch.from_numpy(v) for k, v in video.items()})


def _lm_inputs(tokenizer, batches):
    from daskcap.engines.chat import render, text_messages

    for texts, targets in batches:
        rendered = [render(tokenizer, text_messages(text)) for text in texts]
        input_ids, mask, labels, weights = _labelled(tokenizer, rendered, targets)
        yield dict(input_ids=input_ids, attention_mask=mask, labels=labels, label_weights=weights)


@dataclass(frozen=True)
class TrainingPlan:
    seed: int = 0
    vlm_steps: int = 200
    vlm_batch: int = 8
    vlm_learning_rate: float = 5e-3
    lm_steps: int = 300
    lm_batch: int = 16
    lm_learning_rate: float = 1.5e-3  # 2e-3 already diverges now and then
    vocab_size: int = 700
    eval_windows: int = 120


class _Deterministic:
    """Seeded torch with deterministic kernels and a fixed thread count, restored on exit."""

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self):
        import torch

        self._saved = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(min(2, os.cpu_count() or 1))
        torch.manual_seed(self.seed)
        return self

    def __exit__(self, *exc):
        import torch

        torch.use_deterministic_algorithms(self._saved[0])
        torch.set_num_threads(self._saved[1])


def _prefetched(batches: Iterator, depth: int = 2) -> Iterator:
    """The same batches in the same order, made in a thread while the model trains on the last ones."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = [pool.submit(next, batches) for _ in range(depth)]
        while True:
            batch = pending.pop(0).result()
            pending.append(pool.submit(next, batches))
            yield batch


def train_vlm(path: Path, plan: TrainingPlan) -> dict:
    """Captions for synthetic clips; the designed vision front end stays fixed, the rest learns.

    The patch embedding, the motion units and the frame-wide motion head are
    frozen (training them at this learning rate overwrites the motion detectors
    before the language model has learned to read them); the patch merger and
    the whole language model are trained.
    """
    tokenizer = _tokenizer(plan.vocab_size)
    with _Deterministic(plan.seed):
        model = _vlm(tokenizer)
        for name, parameter in model.model.visual.named_parameters():
            parameter.requires_grad_(name.startswith("merger."))
        start = time.perf_counter()
        batches = _prefetched(_vlm_inputs(tokenizer, _caption_batches(plan.seed, plan.vlm_batch)))
        losses = _train(model, plan.vlm_steps, plan.vlm_learning_rate, batches)
        seconds = time.perf_counter() - start
        model.requires_grad_(True)
    _save(model, tokenizer, path, "Qwen2.5-VL (tiny), trained to name a square's colour and motion")
    return {"train_s": round(seconds, 1), "steps": plan.vlm_steps, "final_loss": round(float(np.mean(losses[-20:])), 4)}


def train_lm(path: Path, plan: TrainingPlan) -> dict:
    tokenizer = _tokenizer(plan.vocab_size)
    with _Deterministic(plan.seed + 1):
        model = _lm(tokenizer)
        start = time.perf_counter()
        losses = _train(model, plan.lm_steps, plan.lm_learning_rate, _lm_inputs(tokenizer, _enhance_batches(plan.seed + 1, plan.lm_batch)))
        seconds = time.perf_counter() - start
    _save(model, tokenizer, path, "Qwen2 text model (tiny), trained to enrich a colour-and-motion caption")
    return {"train_s": round(seconds, 1), "steps": plan.lm_steps, "final_loss": round(float(np.mean(losses[-20:])), 4)}


# --- checking what they learned ---------------------------------------------


def words_in(text: str) -> tuple[set[str], set[str]]:
    """The colour and direction words a caption names."""
    tokens = {word.strip(".,;:!?").lower() for word in text.split()}
    return tokens & set(COLOURS), tokens & set(DIRECTIONS)


def evaluate(directory: Path, plan: TrainingPlan) -> dict:
    """Held-out accuracy through the production engine: clips drawn from another seed."""
    from daskcap.engines.base import EngineConfig, LoadedModel, TextRequest, VideoRequest
    from daskcap.engines.hf_engine import TransformersEngine

    rng = np.random.default_rng(10_000 + plan.seed)
    vlm = TransformersEngine(EngineConfig(str(directory / "vlm"), "", batch_size=16), LoadedModel(str(directory / "vlm"), "qwen2.5-vl"))
    requests, truth = [], {}
    for i in range(plan.eval_windows):
        square = synthetic.random_square(rng)
        width, height = SOURCE_SIZES[i % len(SOURCE_SIZES)]
        frames, sampled_fps = _window_frames(square, width, height, 30, float(rng.choice(WINDOW_SECONDS)))
        requests.append(VideoRequest(str(i), frames, sampled_fps, prompts.CAPTION_PROMPTS["default"], 32))
        truth[str(i)] = (square.colour, square.direction)
    captions = vlm.caption(requests)
    colour_ok = sum(words_in(captions[k].text)[0] == {c} for k, (c, _) in truth.items())
    direction_ok = sum(words_in(captions[k].text)[1] == {d} for k, (_, d) in truth.items())
    refined = vlm.caption([replace(r, prompt=prompts.stage2_prompt(None, captions[r.request_id].text)) for r in requests])
    stage2_ok = sum(words_in(refined[k].text) == ({c}, {d}) for k, (c, d) in truth.items())
    lm = TransformersEngine(EngineConfig(str(directory / "lm"), "", role="enhance", batch_size=32), LoadedModel(str(directory / "lm"), "qwen-text"))
    texts = [TextRequest(k, prompts.enhance_prompt("default", None, g.text), 64) for k, g in captions.items()]
    enhanced = lm.complete(texts)
    kept = sum(words_in(enhanced[k].text) == words_in(captions[k].text) for k in captions)
    return {
        "windows": plan.eval_windows,
        "colour_accuracy": round(colour_ok / plan.eval_windows, 3),
        "direction_accuracy": round(direction_ok / plan.eval_windows, 3),
        "stage2_both_right": round(stage2_ok / plan.eval_windows, 3),
        "enhancement_keeps_words": round(kept / plan.eval_windows, 3),
    }


# --- saving and caching -----------------------------------------------------


def _save(model, tokenizer, path: Path, description: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "README.md").write_text(
        f"# {description}\n\nBuilt and trained offline by `daskcap tiny-models` for tests and the demo, on synthetic "
        "clips of one coloured square moving over grey noise. It only knows those clips: real captions need real weights.\n"
    )
    return path


def content_hash(plan: TrainingPlan) -> str:
    """What the models depend on: this code, the prompts, the pixel pipeline, the plan and the libraries."""
    import tokenizers
    import torch
    import transformers

    from daskcap.engines import chat, hf_engine, vision
    from daskcap.video import windows

    digest = hashlib.sha256()
    for module in (__import__(__name__, fromlist=["_"]), synthetic, prompts, chat, hf_engine, vision, windows):
        digest.update(Path(module.__file__).read_bytes())
    digest.update(repr((plan, torch.__version__, transformers.__version__, tokenizers.__version__)).encode())
    return digest.hexdigest()[:16]


RECORD = "tiny-models.json"


def build_tiny_models(directory: Path, plan: TrainingPlan = TrainingPlan()) -> dict[str, Path]:
    """DIR/vlm and DIR/lm, trained unless DIR already holds this very build."""
    from filelock import FileLock

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"vlm": directory / "vlm", "lm": directory / "lm"}
    wanted = content_hash(plan)
    with FileLock(str(directory / ".build.lock")):
        record = _read_record(directory)
        if record.get("content_hash") == wanted and all((p / "config.json").is_file() for p in paths.values()):
            return paths
        log.info("training tiny models into %s (about a minute)", directory)
        record = {"content_hash": wanted, "vlm": train_vlm(paths["vlm"], plan), "lm": train_lm(paths["lm"], plan)}
        record["held_out"] = evaluate(directory, plan)
        (directory / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return paths


def _read_record(directory: Path) -> dict:
    try:
        return json.loads((directory / RECORD).read_text())
    except (OSError, ValueError):
        return {}


def main(directory: str) -> int:
    paths = build_tiny_models(Path(directory))
    print(json.dumps({**{name: str(path) for name, path in paths.items()}, **_read_record(Path(directory))}, indent=2))
    return 0
