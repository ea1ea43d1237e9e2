"""NeMo Curator's JSON files beside daskcap's tables, for the tools its users already have.

Written per partition by the writer, before the partition's Parquet part (so a part
on disk means its JSON is there too), each file atomically and named by ids, so a
rerun or a resume rewrites the same files::

    OUTPUT/metas/v0/<clip_id>.json                    one per clip: span, source, windows and captions
    OUTPUT/processed_videos/<video>.json              one per video (written with its first clips)
    OUTPUT/processed_clip_chunks/<video>_<chunk>.json one per partition holding the video's clips

``<video>`` is the video's path relative to the input folder, extension kept
(``sub/a.mp4.json``). NeMo's chunks are groups of a video's clips; daskcap's are
the partitions that hold them, numbered per video from 0. The Parquet tables stay
the primary output: ``ClipWriterStage(write_metas=False)`` or ``--no-write-metas``
turns these off.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import defaultdict

import pandas as pd

from daskcap import schema
from daskcap.storage import atomic_write_bytes, resolve_dots, under_root

PARTITION_VIDEOS = "daskcap_partition_videos"  # frame attrs: what the writer needs to know of each video
METAS_VERSION = "v0"


def video_relpath(video_path: str, input_path: str | None) -> str:
    """The video's path under the input folder, or without its scheme and root when it is not
    under it; never with a ``.`` or ``..`` segment, so the files named by it stay in OUTPUT."""
    relpath = video_path.split("://", 1)[-1]
    if input_path:
        base = input_path.rstrip("/") + "/"
        if video_path.startswith(base):
            relpath = video_path[len(base) :]
    relpath = resolve_dots(relpath.replace("\x00", "")).strip("/")
    return relpath or "video-" + hashlib.blake2b(video_path.encode(), digest_size=8).hexdigest()


def partition_videos(clips: pd.DataFrame, videos: pd.DataFrame) -> dict[int, dict[str, dict]]:
    """Per partition number, per video with clips in it: the partition's chunk index among
    the video's partitions, their count, the video's clip count, and its metadata."""
    rows = videos.set_index("video_path")
    result: dict[int, dict[str, dict]] = defaultdict(dict)
    for path, group in clips.groupby("video_path", sort=False):
        numbers = sorted(int(n) for n in group["partition"].unique())
        video = rows.loc[path] if path in rows.index else None
        meta = {} if video is None else {
            "height": _plain(video["height"]), "width": _plain(video["width"]), "framerate": _plain(video["fps"]),
            "num_frames": _plain(video["num_frames"]), "duration": _plain(video["duration_s"]),
            "video_codec": _plain(video["codec"]),
            "pixel_format": _plain(video["pixel_format"]) if "pixel_format" in video else None,
            "audio_format": _plain(video["audio_codec"]) if "audio_codec" in video else None,
        }
        for chunk, number in enumerate(numbers):
            result[number][path] = {"clip_chunk_index": chunk, "num_clip_chunks": len(numbers), "num_total_clips": len(group), **meta}
    return dict(result)


def _plain(value):
    """A JSON value: numpy and pandas scalars as Python's, missing as None."""
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    return value.item() if hasattr(value, "item") else value


def _clip_file_meta(data: bytes) -> dict:
    """What NeMo records of a clip's own mp4 (its extract_metadata)."""
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        return {
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "framerate": float(stream.average_rate) if stream.average_rate else None,
            "num_frames": int(stream.frames),
            "video_codec": stream.codec_context.name,
            "num_bytes": len(data),
        }


def _window_entry(window, caption_models: tuple[str, ...], enhanced_models: tuple[str, ...]) -> dict:
    entry = {"start_frame": int(window.start_frame), "end_frame": int(window.end_frame)}
    if isinstance(window.caption, str):
        entry.update({f"{model}_caption": window.caption for model in caption_models})
    if isinstance(window.enhanced_caption, str):
        entry.update({f"{model}_enhanced_caption": window.enhanced_caption for model in enhanced_models})
    return entry


def clip_meta(windows: list, clip_mp4: bytes | None, output_path: str, video: dict, caption_models, enhanced_models, expect_mp4: bool = True) -> dict:
    """``metas/v0/<clip_id>.json`` of one clip (its windows in order)."""
    first = windows[0]
    meta = {
        "span_uuid": first.clip_id,
        "source_video": first.video_path,
        "duration_span": [float(first.clip_start_s), float(first.clip_end_s)],
        "width_source": video.get("width"),
        "height_source": video.get("height"),
        "framerate_source": float(first.fps) if first.fps == first.fps else video.get("framerate"),
        "clip_location": f"{output_path.rstrip('/')}/clips/{first.clip_id}.mp4",
    }
    if clip_mp4 is not None:
        meta.update(_clip_file_meta(clip_mp4))
    failed = [f"window-{w.window_index}: {w.status}" for w in windows if w.status != schema.OK]
    if failed:
        meta["errors"] = failed
    meta["windows"] = [_window_entry(w, caption_models, enhanced_models) for w in windows]
    # NeMo: the clip has its mp4 and windows; daskcap asks every window to be ok, and the
    # mp4 to be there when clips are written.
    meta["valid"] = not failed and (clip_mp4 is not None or not expect_mp4)
    return meta


def write_nemo_files(windows: pd.DataFrame, writer, fs, root: str) -> None:
    """Write one partition's metas, processed-video and clip-chunk files."""
    videos = windows.attrs.get(PARTITION_VIDEOS, {})
    caption_models = tuple(writer.caption_models or ())
    enhanced_models = tuple(writer.enhanced_caption_models or ())
    by_clip: dict[str, list] = defaultdict(list)
    clip_mp4: dict[str, bytes] = {}
    for window in windows.itertuples(index=False):
        by_clip[window.clip_id].append(window)
        if window.clip_mp4 is not None:
            clip_mp4[window.clip_id] = window.clip_mp4
    chunks: dict[str, list] = defaultdict(list)
    for clip_id, rows in by_clip.items():
        rows.sort(key=lambda w: w.window_index)
        video = videos.get(rows[0].video_path, {})
        mp4 = clip_mp4.get(clip_id) if writer.upload_clips else None
        meta = clip_meta(rows, mp4, writer.output_path, video, caption_models, enhanced_models, writer.upload_clips)
        _write_json(fs, under_root(root, f"metas/{METAS_VERSION}/{clip_id}.json"), meta)
        chunks[rows[0].video_path].append((rows, meta))
    for path, clips in chunks.items():
        video = videos.get(path, {})
        relpath = video_relpath(path, writer.input_path)
        chunk = video.get("clip_chunk_index", 0)
        if chunk == 0 and video:
            processed = {"video": path, **{k: video.get(k) for k in (
                "height", "width", "framerate", "num_frames", "duration", "video_codec", "pixel_format", "audio_format",
                "num_total_clips", "num_clip_chunks")}}
            _write_json(fs, under_root(root, f"processed_videos/{relpath}.json"), processed)
        _write_json(fs, under_root(root, f"processed_clip_chunks/{relpath}_{chunk}.json"), _clip_chunk(path, chunk, clips, caption_models, enhanced_models))


def _clip_chunk(path: str, chunk: int, clips: list, caption_models, enhanced_models) -> dict:
    durations = [float(rows[0].clip_end_s) - float(rows[0].clip_start_s) for rows, _ in clips]
    windows_of = lambda column: {  # noqa: E731
        rows[0].clip_id: {f"{w.start_frame}_{w.end_frame}": getattr(w, column) for w in rows if isinstance(getattr(w, column), str)}
        for rows, _ in clips
    }
    return {
        "video": path,
        "clip_chunk_index": chunk,
        "num_clips_filtered_by_motion": 0,
        "num_clips_filtered_by_aesthetic": 0,
        "num_clips_passed": len(clips),
        "num_clips_transcoded": sum("num_bytes" in meta for _, meta in clips),
        "num_clips_with_embeddings": 0,
        "num_clips_with_caption": sum(any(isinstance(w.caption, str) for w in rows) for rows, _ in clips) if caption_models else 0,
        "num_clips_with_webp": sum(any(w.preview_webp is not None for w in rows) for rows, _ in clips),
        "total_clip_duration": sum(durations),
        "max_clip_duration": max(durations, default=0.0),
        "clips": [rows[0].clip_id for rows, _ in clips],
        "filtered_clips": [],
        "all_windows": windows_of("caption") if caption_models else {},
        "all_windows_enhanced_caption": windows_of("enhanced_caption") if enhanced_models else {},
    }


def _write_json(fs, path: str, payload: dict) -> None:
    atomic_write_bytes(fs, path, json.dumps(payload, indent=4, ensure_ascii=False).encode())
