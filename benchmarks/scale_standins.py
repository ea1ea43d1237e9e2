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


def probe_standin(paths: pd.DataFrame, job) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every path a 1 s, 4-frame video of one clip."""
    videos = pd.DataFrame({"video_path": paths["video_path"], "status": "ok", "error": None, "fps": 4.0, "duration_s": 1.0,
                           "width": 64, "height": 48, "num_frames": 4})
    videos = schema.frame_from_rows(videos.to_dict("records"), schema.VIDEO_SCHEMA)
    clips = pd.DataFrame({"video_path": videos["video_path"], "clip_id": videos["video_path"], "clip_index": 0, "clip_start_s": 0.0,
                          "clip_end_s": 1.0, "source_start_frame": 0, "source_end_frame": 4, "reaches_end": True, "fps": 4.0,
                          "width": 64, "height": 48, "num_frames": 4, "status": "ok", "error": None})
    return videos, schema.frame_from_rows(clips.to_dict("records"), schema.CLIP_SCHEMA)


def partition_standin(shard, partition: int, job) -> pd.DataFrame:
    """One window per clip, nothing written: the index the write would return."""
    group = plan.shard_group(shard, partition)
    rows = [{"video_path": c.video_path, "clip_id": c.clip_id, "clip_index": 0, "window_index": 0, "start_frame": 0, "end_frame": 3,
             "num_sampled_frames": 2, "status": "ok"} for c in group.itertuples()]
    index = schema.frame_from_rows(rows, schema.WINDOW_SCHEMA)[INDEX_COLUMNS]
    index.attrs = dict(group.attrs)
    return index


def dask_setup(worker) -> None:
    plan.probe_chunk = probe_standin
    tasks.prepare_and_write_task = partition_standin
