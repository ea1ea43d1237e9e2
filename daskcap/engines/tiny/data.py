"""Synthetic training and evaluation examples: windows of a coloured square moving
over grey noise, sampled and resized exactly as the prepare stage would, with the
caption the model should say."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from daskcap import prompts, synthetic
from daskcap.engines.tiny.text import OTHER_PROMPTS, enhanced_caption, stage1_caption, stage2_caption
from daskcap.synthetic import COLOURS, DIRECTIONS

SOURCE_SIZES = ((160, 120), (192, 144), (176, 144), (128, 96), (240, 136), (96, 128))
# Window lengths trained on: 4 to 8 sampled frames at the default 2 fps.
WINDOW_SECONDS = (2.0, 2.5, 3.0, 3.5, 4.0)


@dataclass(frozen=True)
class _Example:
    square: synthetic.MovingSquare
    prompt: str
    target: str


def window_frames(square: synthetic.MovingSquare, width: int, height: int, fps: int, seconds: float, grid=None):
    """The frames the prepare stage would sample from such a clip, at the model grid
    (``grid``: a ``video.windows.PixelGrid``, Qwen2.5-VL's by default), and their rate."""
    import av

    from daskcap.stages.clip_decode import RESIZE_INTERPOLATION
    from daskcap.video.windows import QWEN2_5_VL, frame_size_for_model, num_sampled_frames, sample_indices

    total = max(4, round(seconds * fps))
    count = num_sampled_frames(total, fps, 2.0)
    grid_h, grid_w = frame_size_for_model(height, width, count, grid or QWEN2_5_VL)
    frames = []
    for index in sample_indices(0, total - 1, count):
        image = av.VideoFrame.from_ndarray(square.render(index / (total - 1), width, height, index), format="rgb24")
        small = image.reformat(grid_w, grid_h, format="yuv420p", interpolation=RESIZE_INTERPOLATION)
        frames.append(small.to_ndarray(format="rgb24"))
    return np.stack(frames), count / (total / fps)


def _caption_example(rng: np.random.Generator, stage2: bool) -> _Example:
    square = synthetic.random_square(rng)
    if not stage2:
        choices = [*prompts.CAPTION_PROMPTS.values(), *OTHER_PROMPTS]
        return _Example(square, str(choices[rng.integers(len(choices))]), stage1_caption(square.colour, square.direction))
    # The stage-1 caption it is shown is right half of the time: the frames are what to trust.
    if rng.random() < 0.5:
        shown = stage1_caption(square.colour, square.direction)
    else:
        shown = stage1_caption(str(rng.choice(list(COLOURS))), str(rng.choice(list(DIRECTIONS))))
    return _Example(square, prompts.stage2_prompt(None, shown), stage2_caption(square.colour, square.direction))


def caption_batches(seed: int, batch_size: int) -> Iterator[tuple[list, list[str]]]:
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
            frames, sampled_fps = window_frames(example.square, width, height, fps, seconds)
            requests.append(VideoRequest(str(i), frames, sampled_fps, example.prompt, 64))
            targets.append(example.target)
        yield requests, targets


def enhance_batches(seed: int, batch_size: int) -> Iterator[tuple[list[str], list[str]]]:
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

