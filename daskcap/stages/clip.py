"""FixedStrideClipStage: split each video into fixed-length clips."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np
import pandas as pd

from daskcap import schema
from daskcap.stages._params import Checks


@dataclass(frozen=True)
class FixedStrideClipStage:
    """Clips of ``clip_len_s`` seconds every ``clip_stride_s`` (default: the
    clip length); tails shorter than ``min_clip_length_s`` are dropped;
    ``limit_clips`` > 0 keeps only the first clips of each video."""

    clip_len_s: float = 10.0
    clip_stride_s: float | None = None
    min_clip_length_s: float = 2.0
    limit_clips: int = 0
    verbose: bool = False

    def __post_init__(self) -> None:
        checks = Checks("FixedStrideClipStage")
        length_ok = checks.number("clip_len_s", self.clip_len_s, above=0)
        if self.clip_stride_s is not None:
            checks.number("clip_stride_s", self.clip_stride_s, above=0)
        minimum_ok = checks.number("min_clip_length_s", self.min_clip_length_s, 0)
        checks.number("limit_clips", self.limit_clips, 0, integer=True)
        if length_ok and minimum_ok and self.min_clip_length_s > self.clip_len_s:
            checks.fail(f"min_clip_length_s ({self.min_clip_length_s}) is longer than clip_len_s ({self.clip_len_s}): no clip could pass")
        checks.done()

    @property
    def stride_s(self) -> float:
        return self.clip_len_s if self.clip_stride_s is None else self.clip_stride_s


def clip_id(video_path: str, start_frame: int, end_frame: int) -> str:
    """The reference's clip id: stable across runs and machines."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{video_path}_{start_frame}_{end_frame}"))


def clip_spans(duration_s: float, params: FixedStrideClipStage) -> list[tuple[float, float]]:
    spans = []
    for start in np.arange(0.0, duration_s, params.stride_s):
        start = float(start)
        end = min(start + params.clip_len_s, duration_s)
        if end - start >= params.min_clip_length_s:
            spans.append((start, end))
    if params.limit_clips > 0:
        spans = spans[: params.limit_clips]
    return spans


def make_clips(videos: pd.DataFrame, params: FixedStrideClipStage) -> pd.DataFrame:
    """One clip row per span of every readable video."""
    rows = []
    for video in videos.itertuples(index=False):
        if video.status != schema.OK:
            continue
        fps = float(video.fps)
        for index, (start_s, end_s) in enumerate(clip_spans(float(video.duration_s), params)):
            start_frame, end_frame = int(start_s * fps), int(end_s * fps)
            reaches_end = end_s >= float(video.duration_s)
            # Expected frames; prepare re-plans on the frames it really decodes.
            last_frame = int(video.num_frames) if reaches_end else min(end_frame, int(video.num_frames))
            rows.append(
                {
                    "video_path": video.video_path,
                    "clip_id": clip_id(video.video_path, start_frame, end_frame),
                    "clip_index": index,
                    "clip_start_s": start_s,
                    "clip_end_s": end_s,
                    "source_start_frame": start_frame,
                    "source_end_frame": end_frame,
                    "reaches_end": reaches_end,
                    "fps": fps,
                    "width": video.width,
                    "height": video.height,
                    "num_frames": max(0, last_frame - start_frame),
                    **{name: getattr(video, name) for name, _ in schema.DISPLAY_FIELDS},
                    "status": schema.OK,
                    "error": None,
                }
            )
    return schema.frame_from_rows(rows, schema.CLIP_SCHEMA)
