"""PreviewStage: an animated, looping WebP per window.

Previews are made where the frames are decoded: ``prepare_windows`` shrinks the
few frames a window's preview shows as they pass (``preview_plan`` says which and
how big) and encodes them here (``encode_preview``); a window whose preview fails
is marked ``preview_failed``, keeping everything else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import av
import pandas as pd

from daskcap.stages._params import Checks
from daskcap.video.encode import encode_webp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreviewStage:
    """The reference's preview parameters. ``num_cpus_per_worker`` is kept for
    compatibility; daskcap sizes its workers at the cluster level."""

    target_fps: float = 1.0
    target_height: int = 240
    compression_level: int = 6
    quality: int = 50
    num_cpus_per_worker: float = 4.0
    verbose: bool = False

    def __post_init__(self) -> None:
        checks = Checks("PreviewStage")
        checks.number("target_fps", self.target_fps, above=0)
        if checks.number("target_height", self.target_height, 2, integer=True) and self.target_height % 2:
            checks.fail(f"target_height must be even, got {self.target_height}")
        checks.number("compression_level", self.compression_level, 0, 6, integer=True)
        checks.number("quality", self.quality, 0, 100, integer=True)
        checks.number("num_cpus_per_worker", self.num_cpus_per_worker, above=0)
        checks.done()


def preview_size(width: int, height: int, target_height: int) -> tuple[int, int]:
    """Width keeping the aspect ratio, rounded to even, at ``target_height``."""
    target_width = max(2, int(round(width * target_height / height / 2)) * 2)
    return target_width, target_height


def preview_positions(num_frames: int, source_fps: float, target_fps: float) -> list[int]:
    """Window frame positions shown at ``target_fps``: the frame nearest each tick.

    At least two, first and last, so a window shorter than one tick still
    gives an animated WebP (one image would make a still one).
    """
    duration_s = num_frames / source_fps
    ticks = int(duration_s * target_fps + 1e-9)
    if ticks < 2:
        return [0, num_frames - 1]
    return [min(num_frames - 1, int(round(k * source_fps / target_fps))) for k in range(ticks)]


def preview_plan(num_frames: int, fps: float, width: int, height: int, params: PreviewStage) -> tuple[list[int], tuple[int, int]]:
    """The window positions a preview shows and its (width, height)."""
    return preview_positions(num_frames, fps, params.target_fps), preview_size(width, height, params.target_height)


def encode_preview(frames: list[av.VideoFrame], size: tuple[int, int], params: PreviewStage) -> bytes:
    return encode_webp(frames, *size, params.target_fps, params.quality, params.compression_level)


def below_preview(videos: pd.DataFrame, params: PreviewStage) -> dict:
    """Of the videos that got windows, those whose source is below the preview's rate or height: counts and
    one example each, said once per job by the client rather than once per video by every worker."""
    made = videos[videos["num_windows"] > 0]
    counts = {}
    for key, column, target in (("fps", "fps", params.target_fps), ("height", "display_height", params.target_height)):
        low = made[made[column] < target]  # the height as shown: a portrait phone video is tall
        counts[key] = {"videos": len(low), "example": str(low["video_path"].iloc[0]) if len(low) else None}
    return counts
