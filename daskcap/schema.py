"""Arrow schemas of the rows daskcap passes between stages and writes out.

Three row kinds flow through a job: one *video* row per input file, one *clip*
row per fixed-stride span of a video, one *window* row per caption window of a
clip. Every row carries ``status`` and ``error`` so nothing is dropped silently.
Stages build their output frames with :func:`frame_from_rows`, and the Dask
layer builds ``meta`` with :func:`empty_frame`; both go through Arrow, so the
pandas dtypes always agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

# DataFrame.attrs keys: seconds spent per stage on a partition so far, and
# [wall, CPU] seconds a stage function spent doing another stage's work (prepare
# builds previews).
STAGE_SECONDS = "daskcap_stage_seconds"
LENT_SECONDS = "daskcap_lent_seconds"

# Row statuses. Documented in README.md ("Status values").
OK = "ok"
TOO_SHORT = "too_short"  # video: shorter than the minimum clip length, no clips
NO_WINDOWS = "no_windows"  # video: clips exist but all have < 4 frames
READ_FAILED = "read_failed"  # video: missing, unreadable, not a container
NO_VIDEO_STREAM = "no_video_stream"  # video: container without a video stream
BAD_METADATA = "bad_metadata"  # video: no usable frame rate / frame size
TIMED_OUT = "timed_out"  # video or window: gave up after the per-video time limit
PARTIAL = "partial"  # video: some of its windows failed
TASK_FAILED = "task_failed"  # video: a task processing it crashed (a bug: please report)
DECODE_FAILED = "decode_failed"  # window: its clip could not be decoded
ENCODE_FAILED = "encode_failed"  # window: mp4 or model input could not be made
PREVIEW_FAILED = "preview_failed"  # window: the WebP preview could not be made
CAPTION_FAILED = "caption_failed"  # window: the caption model failed on it
ENHANCE_FAILED = "enhance_failed"  # window: captioned, but the enhancement model failed on it

# Video statuses decided when reading: --retry-failed probes these videos again.
READ_STATUSES = frozenset({READ_FAILED, NO_VIDEO_STREAM, BAD_METADATA, TIMED_OUT})

FAILED_STATUSES = frozenset(
    {READ_FAILED, NO_VIDEO_STREAM, BAD_METADATA, TIMED_OUT, PARTIAL, TASK_FAILED, DECODE_FAILED, ENCODE_FAILED, PREVIEW_FAILED, CAPTION_FAILED, ENHANCE_FAILED}
)

# How the video is shown (video/display.py), on video rows and on the clip rows decoded from them.
DISPLAY_FIELDS = [
    ("stream_index", pa.int32()),  # the container's stream that was taken (a player's choice)
    ("rotation", pa.int32()),  # degrees counterclockwise its display matrix turns the stored picture
    ("display_width", pa.int32()),  # as shown: the pixel aspect applied, then the rotation
    ("display_height", pa.int32()),
    ("sample_aspect_ratio", pa.string()),  # "64:45"
    ("color_space", pa.string()),  # the YUV matrix: bt601, bt709, bt2020 (untagged: by size, as players decide)
    ("color_range", pa.string()),  # limited or full
    ("color_transfer", pa.string()),  # bt709 (SDR), smpte2084 (PQ), arib-std-b67 (HLG), srgb
    ("color_primaries", pa.string()),
    ("field_order", pa.string()),  # progressive, tt, bb, tb, bt
    ("variable_frame_rate", pa.bool_()),  # frames unevenly spaced in time: clips, samples and mp4s follow timestamps
]

VIDEO_SCHEMA = pa.schema(
    [
        ("video_path", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("size_bytes", pa.int64()),
        ("container", pa.string()),
        ("codec", pa.string()),
        ("duration_s", pa.float64()),
        ("fps", pa.float64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("num_frames", pa.int64()),
        ("frame_count_source", pa.string()),  # "header" or "counted"
        ("pixel_format", pa.string()),
        ("audio_codec", pa.string()),  # the first audio stream's; null without audio
        *DISPLAY_FIELDS,
        ("num_clips", pa.int32()),
        ("num_windows", pa.int32()),
    ]
)

CLIP_SCHEMA = pa.schema(
    [
        ("video_path", pa.string()),
        ("clip_id", pa.string()),
        ("clip_index", pa.int32()),
        ("clip_start_s", pa.float64()),
        ("clip_end_s", pa.float64()),
        # Source-video frame span, end exclusive (int(start_s * fps),
        # int(end_s * fps)); the clip id is built from it.
        ("source_start_frame", pa.int64()),
        ("source_end_frame", pa.int64()),
        # The clip runs to the end of the video: decode to the end of the
        # stream, whatever the last frames' timestamps say.
        ("reaches_end", pa.bool_()),
        ("fps", pa.float64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("num_frames", pa.int32()),  # expected frames in the clip
        *DISPLAY_FIELDS,
        ("status", pa.string()),
        ("error", pa.string()),
    ]
)

_WINDOW_FIELDS = [
    ("video_path", pa.string()),
    ("clip_id", pa.string()),
    ("clip_index", pa.int32()),
    ("clip_start_s", pa.float64()),
    ("clip_end_s", pa.float64()),
    ("window_index", pa.int32()),
    ("start_frame", pa.int32()),  # clip-relative, inclusive
    ("end_frame", pa.int32()),  # clip-relative, inclusive
    ("fps", pa.float64()),
    ("num_sampled_frames", pa.int32()),
    ("sampled_frame_indices", pa.list_(pa.int32())),  # clip-relative
    ("sampled_width", pa.int32()),
    ("sampled_height", pa.int32()),
    ("window_mp4", pa.binary()),
    ("prompt", pa.string()),
    ("caption", pa.string()),  # the final caption (stage 2's when it ran)
    ("stage1_caption", pa.string()),
    ("enhanced_caption", pa.string()),
    ("caption_model", pa.string()),
    ("caption_prompt_tokens", pa.int32()),  # of the final caption's request
    ("caption_output_tokens", pa.int32()),
    ("caption_finish_reason", pa.string()),  # "stop", or "length" when cut at max tokens
    ("enhance_model", pa.string()),
    ("enhance_prompt_tokens", pa.int32()),
    ("enhance_output_tokens", pa.int32()),
    ("enhance_finish_reason", pa.string()),
    # Caption checks (daskcap.stages.check): flag names, [] when clean, null when not checked.
    ("caption_flags", pa.list_(pa.string())),
    ("enhance_flags", pa.list_(pa.string())),
    ("preview_path", pa.string()),
    ("preview_webp", pa.binary()),
    ("status", pa.string()),
    ("error", pa.string()),
]

# Columns that live only in memory between stages: the model input (sampled
# frames, see pack_frames) and the clip's own mp4 (on window 0 of each clip;
# written to clips/<clip_id>.mp4, not into the table).
_TRANSIENT_FIELDS = [
    ("sampled_frames", pa.binary()),
    ("clip_mp4", pa.binary()),
]

WINDOW_OUTPUT_SCHEMA = pa.schema(_WINDOW_FIELDS)
WINDOW_SCHEMA = pa.schema(_WINDOW_FIELDS + _TRANSIENT_FIELDS)


# Integer and bool columns may hold nulls (a failed window has no frame
# count): use pandas' nullable types so an empty frame and a full one share dtypes.
_NULLABLE_TYPES = {
    pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
}


def table_to_frame(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(types_mapper=_NULLABLE_TYPES.get)


def frame_from_rows(rows: Iterable[Mapping[str, Any]], schema: pa.Schema) -> pd.DataFrame:
    """Build a pandas frame with exactly ``schema``'s columns and dtypes."""
    return table_to_frame(pa.Table.from_pylist(list(rows), schema=schema))


def empty_frame(schema: pa.Schema) -> pd.DataFrame:
    """An empty frame for ``schema``: Dask ``meta`` and empty stage outputs."""
    return table_to_frame(schema.empty_table())


def to_table(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """Convert a stage frame to Arrow with ``schema`` (extra columns dropped)."""
    return pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)


# Model input: the sampled frames, already at the model's grid size, stored as
# one uint8 YUV 4:2:0 array (T, H * 3 / 2, W), zstd-packed. Video is 4:2:0 at
# the source, so RGB would triple the bytes without adding information (a
# float32 RGB tensor, as the reference keeps, is 8x); zstd takes 1.3-2.8x more.
_FRAMES_CODEC = "zstd"


def pack_frames(planes: np.ndarray) -> bytes:
    """Pack a (T, H * 3 / 2, W) uint8 yuv420p stack into the ``sampled_frames`` column."""
    if planes.dtype != np.uint8 or planes.ndim != 3 or planes.shape[1] % 3:
        raise ValueError(f"expected a (T, H * 3 / 2, W) uint8 yuv420p stack, got {planes.dtype} {planes.shape}")
    return pa.compress(np.ascontiguousarray(planes).tobytes(), codec=_FRAMES_CODEC, asbytes=True)


def unpack_planes(packed: bytes, num_frames: int, height: int, width: int) -> np.ndarray:
    """The (T, H * 3 / 2, W) yuv420p stack of a ``sampled_frames`` value."""
    size = num_frames * height * 3 // 2 * width
    raw = pa.decompress(packed, decompressed_size=size, codec=_FRAMES_CODEC, asbytes=True)
    return np.frombuffer(raw, dtype=np.uint8).reshape(num_frames, height * 3 // 2, width)


def unpack_frames(packed: bytes, num_frames: int, height: int, width: int) -> np.ndarray:
    """The sampled frames as a (T, H, W, 3) uint8 RGB array, as models take them."""
    import av  # the conversion matches FFmpeg's, as the decoder's own would

    planes = unpack_planes(packed, num_frames, height, width)
    rgb = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for i, plane in enumerate(planes):
        rgb[i] = av.VideoFrame.from_ndarray(plane, format="yuv420p").to_ndarray(format="rgb24")
    return rgb
