"""ClipWriterStage: write window tables, preview files and clip mp4s.

Layout (the reference's, so its users' tools keep working)::

    OUTPUT/windows/part-NNNNN.parquet        one row per window
    OUTPUT/videos/part-00000.parquet         one row per input video
    OUTPUT/previews/<clip_id>/<start>_<end>.webp
    OUTPUT/clips/<clip_id>.mp4
    OUTPUT/summary.json

A partition's files are written before its Parquet part, and each file is
renamed into place, so a part on disk means its previews and clips are too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from daskcap import schema
from daskcap.stages._params import Checks
from daskcap.stages.nemo_files import write_nemo_files
from daskcap.storage import atomic_write_bytes, atomic_write_parquet, output_fs, under_root

log = logging.getLogger(__name__)

# Columns of the light index returned to the client (no bytes, no frames).
INDEX_COLUMNS = [
    "video_path", "clip_id", "clip_index", "window_index", "start_frame", "end_frame",
    "num_sampled_frames", "preview_path", "status", "error", "caption_flags", "enhance_flags",
]


@dataclass(frozen=True)
class ClipWriterStage:
    """Where and what to write, with NeMo Curator's arguments. ``upload_clips`` writes
    ``clips/<clip_id>.mp4``; ``dry_run`` writes nothing; ``caption_models`` and
    ``enhanced_caption_models`` name the captions in ``metas/v0`` (``<model>_caption``;
    by default the caption stage's variant and ``qwen_lm``); ``input_path`` is what
    ``processed_videos/`` names are relative to. ``write_metas`` (daskcap) writes
    NeMo's JSON files beside the tables; ``write_model_input`` (daskcap) keeps the
    sampled frames in the window table (large: off by default). Embeddings are not
    made: ``generate_embeddings`` must be False."""

    output_path: str
    input_path: str | None = None
    upload_clips: bool = True
    dry_run: bool = False
    generate_embeddings: bool = False
    generate_previews: bool = True
    generate_captions: bool = False
    embedding_algorithm: str = "cosmos-embed1"
    caption_models: tuple[str, ...] | None = None
    enhanced_caption_models: tuple[str, ...] | None = None
    verbose: bool = False
    max_workers: int = 6
    log_stats: bool = False
    write_metas: bool = True
    write_model_input: bool = False

    def __post_init__(self) -> None:
        checks = Checks("ClipWriterStage")
        checks.text("output_path", self.output_path)
        if self.generate_embeddings:
            checks.fail("generate_embeddings=True: daskcap makes no embeddings (Cosmos-Embed1 is not part of it); pass False")
        for name in ("caption_models", "enhanced_caption_models"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, str) or not all(isinstance(m, str) and m for m in value):
                checks.fail(f"{name} must be a list of model names such as ['qwen2.5'], got {value!r}")
            else:
                object.__setattr__(self, name, tuple(value))
        checks.number("max_workers", self.max_workers, 1, integer=True)
        checks.done()

    # NeMo Curator's output layout, as its users' tools find it.
    @staticmethod
    def get_output_path_clips(output_path: str, *, filtered: bool = False) -> str:
        return _under(output_path, "filtered_clips" if filtered else "clips")

    @staticmethod
    def get_output_path_previews(output_path: str) -> str:
        return _under(output_path, "previews")

    @staticmethod
    def get_output_path_metas(output_path: str, version: str) -> str:
        return _under(output_path, f"metas/{version}")

    @staticmethod
    def get_output_path_processed_videos(output_path: str) -> str:
        return _under(output_path, "processed_videos")

    @staticmethod
    def get_output_path_processed_clip_chunks(output_path: str) -> str:
        return _under(output_path, "processed_clip_chunks")


def _under(output_path: str, folder: str) -> str:
    return output_path.rstrip("/") + "/" + folder.strip("/")


def preview_relpath(clip_id: str, start_frame: int, end_frame: int) -> str:
    return f"previews/{clip_id}/{start_frame}_{end_frame}.webp"


def clip_relpath(clip_id: str) -> str:
    return f"clips/{clip_id}.mp4"


def window_table_schema(params: ClipWriterStage) -> pa.Schema:
    if params.write_model_input:
        return schema.WINDOW_OUTPUT_SCHEMA.append(schema.WINDOW_SCHEMA.field("sampled_frames"))
    return schema.WINDOW_OUTPUT_SCHEMA


def write_windows(windows: pd.DataFrame, params: ClipWriterStage, part_name: str) -> pd.DataFrame:
    """Write one partition of window rows; return its light index rows."""
    windows = windows.copy()
    fs, root = output_fs(params.output_path)
    preview_paths = [None] * len(windows)
    for i, window in enumerate(windows.itertuples(index=False)):
        if params.generate_previews and window.preview_webp is not None:
            preview_paths[i] = preview_relpath(window.clip_id, window.start_frame, window.end_frame)
            if not params.dry_run:
                atomic_write_bytes(fs, under_root(root, preview_paths[i]), window.preview_webp)
        if params.upload_clips and window.clip_mp4 is not None and not params.dry_run:
            atomic_write_bytes(fs, under_root(root, clip_relpath(window.clip_id)), window.clip_mp4)
    windows["preview_path"] = pd.Series(preview_paths, index=windows.index, dtype=windows["preview_path"].dtype)
    if params.write_metas and not params.dry_run and len(windows):
        write_nemo_files(windows, params, fs, root)
    if not params.dry_run and len(windows):
        table = schema.to_table(windows, window_table_schema(params))
        atomic_write_parquet(fs, f"{root}/windows/{part_name}.parquet", table)
    if params.verbose:
        log.info("wrote %d windows to %s/windows/%s.parquet", len(windows), root, part_name)
    return windows[INDEX_COLUMNS]


def finish_videos(videos: pd.DataFrame, window_index: pd.DataFrame, clips: pd.DataFrame) -> pd.DataFrame:
    """Fill each video row's clip and window counts and its final status."""
    videos = videos.copy()
    clip_counts = clips.groupby("video_path").size()
    window_counts = window_index.groupby("video_path").size()
    failed = window_index[window_index["status"] != schema.OK]
    failed_counts = failed.groupby("video_path").size()
    first_error = failed.groupby("video_path")["error"].first()
    main_failure = failed.groupby("video_path")["status"].agg(lambda s: s.value_counts().index[0])
    warned = window_index[(window_index["status"] == schema.OK) & window_index["error"].notna()]
    first_warning = warned.groupby("video_path")["error"].first()
    num_clips = videos["video_path"].map(clip_counts).fillna(0).astype("int32")
    num_windows = videos["video_path"].map(window_counts).fillna(0).astype("int32")
    statuses, errors = list(videos["status"]), list(videos["error"])
    for i, path in enumerate(videos["video_path"]):
        if statuses[i] != schema.OK:
            continue
        if num_clips.iloc[i] == 0:
            statuses[i] = schema.TOO_SHORT
            errors[i] = "shorter than the minimum clip length: no clips"
        elif num_windows.iloc[i] == 0:
            statuses[i] = schema.NO_WINDOWS
            errors[i] = "every clip has fewer than 4 frames: no windows"
        elif path in failed_counts.index and failed_counts[path] == num_windows.iloc[i]:
            # Nothing usable came out: the video takes its windows' failure.
            statuses[i] = main_failure[path]
            errors[i] = f"all {num_windows.iloc[i]} windows failed: {first_error[path]}"
        elif path in failed_counts.index:
            statuses[i] = schema.PARTIAL
            errors[i] = f"{failed_counts[path]} of {num_windows.iloc[i]} windows failed; first: {first_error[path]}"
        elif path in first_warning.index:
            errors[i] = first_warning[path]
    videos["num_clips"] = num_clips.to_numpy()
    videos["num_windows"] = num_windows.to_numpy()
    videos["status"] = pd.Series(statuses, index=videos.index, dtype=videos["status"].dtype)
    videos["error"] = pd.Series(errors, index=videos.index, dtype=videos["error"].dtype)
    return videos


def write_videos(videos: pd.DataFrame, params: ClipWriterStage, part_name: str = "part-00000") -> None:
    """One part of the videos table (a shard's videos)."""
    if params.dry_run:
        return
    fs, root = output_fs(params.output_path)
    atomic_write_parquet(fs, f"{root}/videos/{part_name}.parquet", schema.to_table(videos, schema.VIDEO_SCHEMA))
