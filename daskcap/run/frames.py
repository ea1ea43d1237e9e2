"""A shard's stages as Dask dataframes, one row per video, clip or window.

Probing: the shard's paths (slices of the rows its worker read from the saved
listing) ``.map_partitions(read_partition)`` are its videos, and
``.map_partitions(clip_partition)`` explodes them into clips; ``plan_shard``
packs the clips into partitions. Windows: the planned partitions
(``dd.from_map(clip_group, ...)``) ``.map_partitions(prepare_partition)`` are
the shard's window rows, ``.map_partitions(write_task)`` writes them and leaves
each partition's light index.

``stream.py`` decides when each graph is computed and where: a shard's probing
and plan in one compute, its windows in one compute when no model runs (Dask
queues a shard's partitions on the scheduler and hands each worker a few at a
time), or partition by partition when models set the pace (``per_partition``).

Object columns stay as they are (bytes, lists of frames): these frames are built
with Dask's conversion of object columns to Arrow strings turned off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import dask
import dask.dataframe as dd
import pandas as pd
from dask.delayed import Delayed, delayed
from dask.optimization import cull

from daskcap import schema
from daskcap.run.plan import clip_partition, plan_shard, read_partition
from daskcap.run.tasks import clip_group, prepare_partition, write_task
from daskcap.stages.write import INDEX_COLUMNS

PATHS_META = pd.DataFrame({"video_path": pd.Series(dtype=object)})
WINDOWS_LABEL = "clips"  # the windows' task names start with it (the scheduler's count of them in flight)


@contextlib.contextmanager
def _as_is() -> Iterator[None]:
    with dask.config.set({"dataframe.convert-string": False}):
        yield


def _meta(table_schema, columns: list[str] | None = None) -> pd.DataFrame:
    frame = schema.empty_frame(table_schema)
    return frame[columns] if columns else frame


def _rows(bounds: tuple[int, int], paths: pd.DataFrame) -> pd.DataFrame:
    start, stop = bounds
    return paths.iloc[start:stop]


def shard_paths_frame(paths, count: int, pieces: int) -> dd.DataFrame:
    """A shard's ``count`` paths in about ``pieces`` partitions. ``paths``: a frame in this
    process (a dry run), or the future of the frame a worker read from the listing."""
    size = max(1, -(-count // pieces))
    with _as_is():
        if isinstance(paths, pd.DataFrame):
            return dd.from_pandas(paths, npartitions=max(1, -(-count // size)), sort=False)
        return dd.from_map(_rows, [(i, min(count, i + size)) for i in range(0, count, size)], args=[paths], meta=PATHS_META,
                           label="paths")


def plan_graph(number: int, paths: dd.DataFrame, job, windows_per_partition: int, plan_over: int) -> Delayed:
    """read -> clip over a shard's paths, then its plan: one graph."""
    with _as_is():
        videos = paths.map_partitions(read_partition, job, meta=_meta(schema.VIDEO_SCHEMA), enforce_metadata=False)
        clips = videos.map_partitions(clip_partition, job, meta=_meta(schema.CLIP_SCHEMA), enforce_metadata=False)
        # Not optimized: both lists then name the same read tasks, which run once.
        probed_videos, probed_clips = videos.to_delayed(optimize_graph=False), clips.to_delayed(optimize_graph=False)
    return delayed(plan_shard, pure=True)(number, job, windows_per_partition, plan_over, probed_videos, probed_clips,
                                          dask_key_name=f"plan-{number}-{paths._name}")


def windows_frame(plan, partitions: list[int], job, *, write: bool) -> dd.DataFrame:
    """The window rows of a planned shard's ``partitions`` (``plan``: its future); with
    ``write``, written, leaving each partition's index."""
    with _as_is():
        clips = dd.from_map(clip_group, partitions, args=[plan], meta=_meta(schema.CLIP_SCHEMA), label=WINDOWS_LABEL)
        windows = clips.map_partitions(prepare_partition, job, meta=_meta(schema.WINDOW_SCHEMA), enforce_metadata=False)
        if not write:
            return windows
        return windows.map_partitions(write_task, job, meta=_meta(schema.WINDOW_SCHEMA, INDEX_COLUMNS), enforce_metadata=False)


def partitions_of(frame: dd.DataFrame) -> list[Delayed]:
    """``frame``'s partitions, each a Delayed over the whole (optimized) graph."""
    with _as_is():
        return frame.to_delayed()


def per_partition(frame: dd.DataFrame) -> list[Delayed]:
    """One small graph per partition of ``frame``, cut once: computing a partition out of
    the whole graph would walk all of it every time."""
    parts = partitions_of(frame)
    if not parts:
        return []
    graph = dict(parts[0].__dask_graph__())
    return [Delayed(part.key, cull(graph, [part.key])[0]) for part in parts]
