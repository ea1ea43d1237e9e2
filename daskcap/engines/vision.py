"""Qwen-VL video inputs in numpy: no torchvision, no transformers processor.

Frames arrive uint8 (T, H, W, 3), already resized to the model grid by the
prepare stage. This does what Qwen's processor does after resizing: rescale,
normalize with the CLIP mean/std, and cut into (temporal x spatial) patches
ordered so each spatial-merge group is contiguous. It is checked bit-exact
against ``Qwen2VLImageProcessorPil`` (an image is two identical frames).
"""

from __future__ import annotations

import numpy as np

from daskcap.video.windows import QWEN2_5_VL, QWEN3_VL, PatchSpec

# CLIP's mean and std, as Qwen-VL checkpoints write them in preprocessor_config.json.
CLIP_MEAN_VALUES = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD_VALUES = (0.26862954, 0.26130258, 0.27577711)
CLIP_MEAN = np.array(CLIP_MEAN_VALUES, dtype=np.float32)
CLIP_STD = np.array(CLIP_STD_VALUES, dtype=np.float32)


def _normalized_values() -> np.ndarray:
    """(3, 256) float32: every uint8 value of each channel after transformers' rescale
    (float64, then float32) and normalize (float32) steps, computed the same way."""
    values = (np.arange(256, dtype=np.float64) * (1 / 255)).astype(np.float32)
    return np.ascontiguousarray(((values[:, None] - CLIP_MEAN) / CLIP_STD).T)


_NORMALIZED = _normalized_values()


# The patch facts live with the pixel grids (daskcap/video/windows.py), stated once.
QWEN2_5_VL_PATCHES = QWEN2_5_VL.patches
QWEN3_VL_PATCHES = QWEN3_VL.patches


def video_patches(frames: np.ndarray, spec: PatchSpec = QWEN2_5_VL_PATCHES) -> tuple[np.ndarray, tuple[int, int, int]]:
    """``(pixel_values, (grid_t, grid_h, grid_w))`` for one video.

    ``pixel_values`` is float32 (grid_t * grid_h * grid_w, 3 * t * p * p).
    """
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected (T, H, W, 3) uint8 frames, got {frames.dtype} {frames.shape}")
    count, height, width, _ = frames.shape
    p, t, m = spec.patch_size, spec.temporal_patch_size, spec.merge_size
    grid_t, grid_h, grid_w = video_grid(count, height, width, spec)
    pixels = _NORMALIZED[np.arange(3), frames]  # a table lookup per uint8 value: the same floats, far fewer steps
    pixels = pixels.transpose(0, 3, 1, 2)  # T, C, H, W
    pixels = pixels.reshape(grid_t, t, 3, grid_h // m, m, p, grid_w // m, m, p)
    # -> grid_t, merge rows, merge cols, m, m, C, t, p, p
    pixels = pixels.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return np.ascontiguousarray(pixels.reshape(grid_t * grid_h * grid_w, 3 * t * p * p)), (grid_t, grid_h, grid_w)


def video_grid(count: int, height: int, width: int, spec: PatchSpec = QWEN2_5_VL_PATCHES) -> tuple[int, int, int]:
    """``(grid_t, grid_h, grid_w)``: the patches of ``count`` frames of ``width`` x ``height``."""
    p, t, m = spec.patch_size, spec.temporal_patch_size, spec.merge_size
    if count % t or height % (p * m) or width % (p * m):
        raise ValueError(f"{count} frames of {width}x{height} do not tile into {t}x{p * m}x{p * m} patches")
    return count // t, height // p, width // p


def video_token_count(grid_thw: tuple[int, int, int], spec: PatchSpec = QWEN2_5_VL_PATCHES) -> int:
    """How many ``<|video_pad|>`` tokens the LLM sees for a video of this grid."""
    grid_t, grid_h, grid_w = grid_thw
    return grid_t * grid_h * grid_w // (spec.merge_size**2)
