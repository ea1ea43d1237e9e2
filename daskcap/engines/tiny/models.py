"""The tiny models' architectures: a Qwen2.5-VL whose vision front end starts from
designed weights (a low-order filter bank, motion detectors, a frame-wide motion
head, a merger that passes colour and motion), and a Qwen2 text model."""

from __future__ import annotations

from daskcap.engines.tiny.text import SPECIAL_TOKENS

VISION_HIDDEN = 32
TEXT_HIDDEN = 64
# The text heads are 32 wide: vLLM's CPU attention takes head sizes of 32, 64, 80, ...
# and refuses 16 at the first generate. M-RoPE's sections (time, height, width) split
# the rotary half of each head, so they sum to 16.
TEXT_HEADS = 2
MROPE_SECTION = [4, 6, 6]


def build_vlm(tokenizer):
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": TEXT_HIDDEN,
            "intermediate_size": 2 * TEXT_HIDDEN,
            "num_hidden_layers": 2,
            "num_attention_heads": TEXT_HEADS,
            "num_key_value_heads": TEXT_HEADS,
            "max_position_embeddings": 32768,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": MROPE_SECTION},
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


def build_lm(tokenizer):
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

