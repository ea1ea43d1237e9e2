"""Windows -> training samples: which windows are kept (and why the others are not), and
each kept window's key, text and metadata. Plain pandas on one partition; no dask here."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd

from daskcap import schema
from daskcap.training_data.params import CAPTION_FIELDS, FLAGS_OF, ExportParams

# What the filter reads: a partition's rows without their bytes.
FILTER_COLUMNS = ["status", "start_frame", "end_frame", "fps", *CAPTION_FIELDS, "caption_flags", "enhance_flags"]
# Why a window is left out, in the order the reasons are tried (the first that applies counts).
REASONS = ("status", "no_caption", "flagged", "too_few_frames", "too_short")


def window_key(clip_id: str, window_index: int) -> str:
    """``{clip_id}_{window_index}``: a WebDataset key (no dot, no slash; clip ids are uuids)."""
    return f"{clip_id}_{int(window_index)}"


def _texts(windows: pd.DataFrame, params: ExportParams) -> tuple[list[str | None], list[str | None]]:
    """Per window: the text a sample gets and the column it comes from."""
    fields = (params.caption_field,) if params.caption_field else CAPTION_FIELDS
    texts, sources = [None] * len(windows), [None] * len(windows)
    columns = {field: windows[field].tolist() for field in fields}
    for i in range(len(windows)):
        for field in fields:
            text = columns[field][i]
            if isinstance(text, str) and text.strip():
                texts[i], sources[i] = text, field
                break
    return texts, sources


def select(windows: pd.DataFrame, params: ExportParams) -> tuple[np.ndarray, Counter]:
    """Which rows of ``windows`` become samples (a boolean mask), and the others counted by
    reason (``status:<status>`` for a failed window, ``flag:<flag>`` once per flag)."""
    left_out: Counter = Counter()
    texts, sources = _texts(windows, params)
    keep = np.zeros(len(windows), dtype=bool)
    flag_columns = {column: windows[column].tolist() for column in set(FLAGS_OF.values())}
    frames = (windows["end_frame"].astype("float64") - windows["start_frame"].astype("float64") + 1).tolist()
    fps = windows["fps"].astype("float64").tolist()
    for i, status in enumerate(windows["status"].tolist()):
        if status != schema.OK:
            reason = f"status:{status}"
        elif texts[i] is None:
            reason = "no_caption"
        elif (flags := _flags(flag_columns[FLAGS_OF[sources[i]]][i])) and not params.include_flagged:
            reason = "flagged"
            left_out.update(f"flag:{flag}" for flag in flags)
        elif not frames[i] >= params.min_frames:
            reason = "too_few_frames"
        elif params.min_seconds and not (fps[i] > 0 and frames[i] / fps[i] >= params.min_seconds):
            reason = "too_short"
        else:
            keep[i] = True
            continue
        left_out[reason] += 1
    return keep, left_out


def _flags(flags) -> list[str]:
    """A flags cell's names: none for null (not checked) or an empty list."""
    return [] if flags is None or (not isinstance(flags, (list, np.ndarray)) and pd.isna(flags)) else [str(f) for f in flags]


def samples(windows: pd.DataFrame, displays: pd.DataFrame, params: ExportParams, prompt_variant: str | None) -> pd.DataFrame:
    """The kept rows of ``windows`` with ``key``, ``text`` (the chosen caption), ``text_field``,
    ``num_frames``, ``display_width``/``display_height`` (from ``displays``, indexed by
    video path) and ``metadata`` (the sample's JSON, bytes, deterministic)."""
    keep, _ = select(windows, params)
    kept = windows[keep].reset_index(drop=True)
    texts, sources = _texts(kept, params)
    kept["key"] = [window_key(c, w) for c, w in zip(kept["clip_id"], kept["window_index"], strict=True)]
    kept["text"] = texts
    kept["text_field"] = sources
    kept["num_frames"] = (kept["end_frame"].astype("int64") - kept["start_frame"].astype("int64") + 1).astype("int64")
    for column in ("display_width", "display_height"):
        kept[column] = kept["video_path"].map(displays[column]).astype("Int32") if len(kept) else pd.Series(dtype="Int32")
    kept["metadata"] = [json.dumps(_metadata(row, prompt_variant), sort_keys=True, separators=(",", ":")).encode()
                        for row in kept.itertuples(index=False)]
    return kept


def _value(value):
    """A cell as JSON takes it (pandas' NA and numpy scalars and arrays become plain values)."""
    if isinstance(value, np.ndarray):
        return [_value(v) for v in value.tolist()]
    if isinstance(value, list):
        return [_value(v) for v in value]
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def _metadata(window, prompt_variant: str | None) -> dict:
    fps = float(window.fps)
    window_start_s = float(window.clip_start_s) + int(window.start_frame) / fps
    return {
        "key": window.key,
        "video_path": window.video_path,
        "clip_id": window.clip_id,
        "clip_index": _value(window.clip_index),
        "clip_start_s": _value(window.clip_start_s),
        "clip_end_s": _value(window.clip_end_s),
        "window_index": _value(window.window_index),
        "start_frame": _value(window.start_frame),  # clip-relative, inclusive
        "end_frame": _value(window.end_frame),
        "window_start_s": round(window_start_s, 6),
        "window_end_s": round(window_start_s + int(window.num_frames) / fps, 6),
        "num_frames": int(window.num_frames),
        "fps": fps,
        "display_width": _value(window.display_width),
        "display_height": _value(window.display_height),
        "caption_field": window.text_field,
        "caption_model": _value(window.caption_model),
        "enhance_model": _value(window.enhance_model),
        "prompt_variant": prompt_variant,
        "caption_flags": _value(window.caption_flags),
        "enhance_flags": _value(window.enhance_flags),
        "warning": _value(window.error),
    }
