"""Stand-ins for probing and partition work, for ``benchmarks/scale.py --bookkeeping``:
loaded into each worker as a Dask preload (``LocalCluster(preload=[this file])``),
never into the client, so the client submits daskcap's own tasks and pays its own
bookkeeping, while no video file is opened.
"""

from __future__ import annotations

import pandas as pd

from daskcap import schema
from daskcap.run import plan, tasks
from daskcap.stages.write import INDEX_COLUMNS


def read_standin(paths: pd.DataFrame, job) -> pd.DataFrame:
    """Every path a 1 s, 4-frame video."""
    videos = pd.DataFrame({"video_path": paths["video_path"].to_numpy(), "status": "ok", "error": None, "fps": 4.0, "duration_s": 1.0,
                           "width": 64, "height": 48, "num_frames": 4})
    return schema.frame_from_rows(videos.to_dict("records"), schema.VIDEO_SCHEMA)


def clip_standin(videos: pd.DataFrame, job) -> pd.DataFrame:
    """One clip per video."""
    clips = pd.DataFrame({"video_path": videos["video_path"], "clip_id": videos["video_path"], "clip_index": 0, "clip_start_s": 0.0,
                          "clip_end_s": 1.0, "source_start_frame": 0, "source_end_frame": 4, "reaches_end": True, "fps": 4.0,
                          "width": 64, "height": 48, "num_frames": 4, "status": "ok", "error": None})
    return schema.frame_from_rows(clips.to_dict("records"), schema.CLIP_SCHEMA)


def prepare_standin(group: pd.DataFrame, job) -> pd.DataFrame:
    """One window per clip, nothing decoded."""
    rows = [{"video_path": c.video_path, "clip_id": c.clip_id, "clip_index": 0, "window_index": 0, "start_frame": 0, "end_frame": 3,
             "num_sampled_frames": 2, "status": "ok"} for c in group.itertuples()]
    windows = schema.frame_from_rows(rows, schema.WINDOW_SCHEMA)
    windows.attrs = dict(group.attrs)
    return windows


def write_standin(windows: pd.DataFrame, job) -> pd.DataFrame:
    """Nothing written: the index the write would return."""
    index = windows[INDEX_COLUMNS]
    index.attrs = dict(windows.attrs)
    return index


def dask_setup(worker) -> None:
    plan.read_partition = read_standin
    plan.clip_partition = clip_standin
    tasks.prepare_partition = prepare_standin
    tasks.write_task = write_standin
