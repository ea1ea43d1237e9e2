"""Caption windows and frame sampling, and the Qwen-VL pixel grid (docs/design.md, "Windows and model inputs").

Pure arithmetic, no video I/O, so every rule here is table-tested.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_WINDOW_FRAMES = 4  # a clip (or window) with fewer frames gets no window
MIN_SAMPLED_FRAMES = 4
MAX_SAMPLED_FRAMES = 768
TEMPORAL_PATCH = 2  # Qwen-VL packs frames in pairs: sampled counts are even


def split_windows(num_frames: int, window_size: int, remainder_threshold: int) -> list[tuple[int, int]]:
    """Clip-relative ``(start, end)`` frame windows, end inclusive.

    Full windows of ``window_size``; a leftover of at least
    ``remainder_threshold`` frames is its own window, a smaller one joins the
    last full window. A leftover shorter than 4 frames always joins, since a
    window needs 4 frames to sample.
    """
    if num_frames < MIN_WINDOW_FRAMES:
        return []
    if num_frames <= window_size:
        return [(0, num_frames - 1)]
    full, leftover = divmod(num_frames, window_size)
    windows = [(i * window_size, (i + 1) * window_size - 1) for i in range(full)]
    if leftover:
        if leftover >= max(remainder_threshold, MIN_WINDOW_FRAMES):
            windows.append((full * window_size, num_frames - 1))
        else:
            windows[-1] = (windows[-1][0], num_frames - 1)
    return windows


def _round_even(value: float) -> int:
    return int(round(value / TEMPORAL_PATCH)) * TEMPORAL_PATCH


def _floor_even(value: float) -> int:
    return int(math.floor(value / TEMPORAL_PATCH)) * TEMPORAL_PATCH


def num_sampled_frames(frames_in_window: int, video_fps: float, sampling_fps: float) -> int:
    """How many frames a window sends to the model (even, 4 … min(768, frames))."""
    upper = _floor_even(min(MAX_SAMPLED_FRAMES, frames_in_window))
    wanted = frames_in_window / video_fps * sampling_fps
    wanted = min(max(wanted, MIN_SAMPLED_FRAMES), upper)
    return _round_even(wanted)


def sample_indices(start: int, end: int, count: int) -> list[int]:
    """``count`` frame indices spread evenly over ``[start, end]``, both ends included."""
    return [int(i) for i in np.linspace(start, end, count).round()]


def sample_by_time(frame_times: list[float], start: int, end: int, count: int) -> list[int]:
    """``count`` of the frames ``start`` .. ``end`` spread evenly in time (``frame_times``: each frame's),
    both ends included: the frame nearest each of ``count`` even instants, each frame once. With evenly
    spaced frames, the same as :func:`sample_indices`."""
    times = np.asarray(frame_times[start : end + 1], dtype=np.float64)
    chosen: list[int] = []
    for instant in np.linspace(times[0], times[-1], count):
        nearest = int(np.abs(times - instant).argmin())
        # Where frames are sparse two instants can share one: take the next unused frame.
        while chosen and nearest <= chosen[-1] - start and nearest < len(times) - 1:
            nearest += 1
        chosen.append(start + nearest)
    return chosen


@dataclass(frozen=True)
class PatchSpec:
    """How a Qwen-VL vision tower cuts a video: square patches of ``patch_size``
    pixels, ``temporal_patch_size`` frames deep, merged ``merge_size`` x
    ``merge_size`` into one token. Every other figure derives from these."""

    patch_size: int = 14  # Qwen3-VL: 16
    temporal_patch_size: int = TEMPORAL_PATCH
    merge_size: int = 2

    @property
    def factor(self) -> int:
        """Frame sides are multiples of this: one merged token's width in pixels."""
        return self.patch_size * self.merge_size


@dataclass(frozen=True)
class PixelGrid:
    """Resize rules of a Qwen-VL vision tower: its patches and its token budgets."""

    patches: PatchSpec
    min_tokens: int  # per frame pair
    max_tokens: int  # per frame pair
    total_tokens: int  # over all frames of one video input
    max_aspect_ratio: float = 200.0

    @property
    def factor(self) -> int:
        return self.patches.factor

    @property
    def min_pixels(self) -> int:  # per frame
        return self.min_tokens * self.factor**2

    @property
    def max_pixels(self) -> int:  # per frame
        return self.max_tokens * self.factor**2

    @property
    def total_pixels(self) -> int:  # over all frames of one video input
        return self.total_tokens * self.factor**2


# Qwen2.5-VL: 14-pixel patches merged 2x2, so sides are multiples of 28.
QWEN2_5_VL = PixelGrid(PatchSpec(), min_tokens=128, max_tokens=768, total_tokens=24576)

# Qwen3-VL: 16-pixel patches merged 2x2, so sides are multiples of 32. The
# budgets keep Qwen2.5-VL's token counts (128-768 tokens per frame pair,
# 24576 per window); vLLM's processor re-checks them against the checkpoint.
QWEN3_VL = PixelGrid(PatchSpec(patch_size=16), min_tokens=128, max_tokens=768, total_tokens=24576)

# model_variant (the reference's captioning algorithm) -> pixel grid.
PIXEL_GRIDS = {"qwen": QWEN2_5_VL, "qwen2.5": QWEN2_5_VL, "qwen3": QWEN3_VL}


def frame_size_for_model(height: int, width: int, num_frames: int, grid: PixelGrid = QWEN2_5_VL) -> tuple[int, int]:
    """``(height, width)`` each sampled frame is resized to for the model.

    Keeps the aspect ratio, snaps both sides to ``grid.factor`` and keeps the
    frame inside the per-frame and per-window pixel budgets (720p and 1080p
    land on 560x1008).
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    if max(height, width) / min(height, width) > grid.max_aspect_ratio:
        raise ValueError(
            f"aspect ratio {max(height, width) / min(height, width):.0f}:1 of a {width}x{height} frame "
            f"is beyond the model's limit of {grid.max_aspect_ratio:.0f}:1"
        )
    f = grid.factor
    per_frame_max = max(
        min(grid.max_pixels, grid.total_pixels / num_frames * TEMPORAL_PATCH),
        int(grid.min_pixels * 1.05),
    )
    h_bar = max(f, round(height / f) * f)
    w_bar = max(f, round(width / f) * f)
    if h_bar * w_bar > per_frame_max:
        beta = math.sqrt(height * width / per_frame_max)
        h_bar = max(f, math.floor(height / beta / f) * f)
        w_bar = max(f, math.floor(width / beta / f) * f)
    elif h_bar * w_bar < grid.min_pixels:
        beta = math.sqrt(grid.min_pixels / (height * width))
        h_bar = math.ceil(height * beta / f) * f
        w_bar = math.ceil(width * beta / f) * f
    return h_bar, w_bar
