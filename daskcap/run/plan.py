"""A shard's plan, on the worker that made it: its paths probed into video and clip
rows (``read_partition`` -> ``clip_partition``, mapped over the shard's paths by
``frames.py``), the clips packed into partitions bounded by their window
count (``plan_shard``, or ``load_shard_plan`` on a resume), what the client needs
of it (``shard_outline``), one partition's clips (``shard_group``), and, once
every partition is written, ``finish_shard``: the shard's videos table and counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from daskcap import schema
from daskcap.run.state import ShardState
from daskcap.meter import measure
from daskcap.run.timing import add_usage, sum_seconds, timed
from daskcap.stages.check import flag_counts
from daskcap.stages.clip import make_clips
from daskcap.stages.nemo_files import PARTITION_VIDEOS, partition_videos
from daskcap.stages.prepare import CaptionPreparationStage
from daskcap.stages.preview import below_preview
from daskcap.stages.read import read_videos
from daskcap.stages.write import INDEX_COLUMNS, finish_videos, write_videos

PARTITION = "daskcap_partition"
SHARD = "daskcap_shard"


def shard_state(job, number: int) -> ShardState | None:
    return None if job.writer.dry_run else ShardState(job.writer.output_path, number)


def plan_partitions(clips: pd.DataFrame, prepare: CaptionPreparationStage, windows_per_partition: int, n_workers: int) -> list[pd.DataFrame]:
    """Pack consecutive clips into partitions of at most ``windows_per_partition``
    expected windows (a bigger clip stays alone), with enough partitions to keep
    every worker busy."""
    if clips.empty:
        return []
    weights = [
        max(1, len(prepare.windows(int(n))))
        for n in clips["num_frames"]
    ]
    target = max(1, min(windows_per_partition, math.ceil(sum(weights) / (2 * n_workers))))
    groups, start, load = [], 0, 0
    for i, weight in enumerate(weights):
        if load and load + weight > target:
            groups.append(clips.iloc[start:i])
            start, load = i, 0
        load += weight
    groups.append(clips.iloc[start:])
    return [group.reset_index(drop=True) for group in groups]


def number_partitions(clips: pd.DataFrame, groups: list[pd.DataFrame], first: int) -> pd.DataFrame:
    """The clip rows with the partition number each belongs to."""
    numbered = [group.assign(partition=first + i) for i, group in enumerate(groups)]
    return pd.concat(numbered, ignore_index=True) if numbered else clips.assign(partition=pd.Series(dtype="int64"))


def read_partition(paths: pd.DataFrame, job) -> pd.DataFrame:
    """read: some of a shard's paths probed into video rows (a bad file is a status row)."""
    return timed(paths.reset_index(drop=True), "read", read_videos, job.reader)


def clip_partition(videos: pd.DataFrame, job) -> pd.DataFrame:
    """clip: video rows exploded into clip rows (they carry the read's seconds along)."""
    return timed(videos, "clip", make_clips, job.clipper)


def probe_chunk(paths: pd.DataFrame, job) -> tuple[pd.DataFrame, pd.DataFrame]:
    """read -> clip over some paths, in one call: video rows and clip rows."""
    videos = read_partition(paths, job)
    return videos, clip_partition(videos, job)


@dataclass
class ShardPlan:
    """A shard's probed videos and numbered clips, kept on the worker that planned it."""

    number: int
    videos: pd.DataFrame
    clips: pd.DataFrame  # with "partition"
    probe_seconds: dict[str, float]
    probe_usage: dict[str, list] = field(default_factory=dict)  # this run's probing only
    done: list[int] = field(default_factory=list)  # partitions finished in an earlier run
    pending: list[int] = field(default_factory=list)
    videos_of: dict[int, dict] = field(default_factory=dict)  # per partition, for NeMo's per-video files
    rows: dict[int, object] = field(default_factory=dict)  # per partition, its clips' row positions


def _with_progress(plan: ShardPlan, job) -> ShardPlan:
    numbers = sorted(int(n) for n in plan.clips["partition"].unique()) if len(plan.clips) else []
    state = shard_state(job, plan.number)
    done = state.done_partitions() if state is not None else set()
    plan.done = [n for n in numbers if n in done]
    plan.pending = [n for n in numbers if n not in done]
    plan.rows = plan.clips.groupby("partition").indices if len(plan.clips) else {}
    if job.writer.write_metas and not job.writer.dry_run:
        plan.videos_of = partition_videos(plan.clips, plan.videos)
    return plan


def plan_shard(number: int, job, windows_per_partition: int, plan_over: int, probed_videos: list[pd.DataFrame],
               probed_clips: list[pd.DataFrame]) -> ShardPlan:
    """Pack the probed clips of shard ``number`` (the partitions of its videos and clips
    dataframes) into partitions and save the plan."""
    videos = pd.concat(probed_videos, ignore_index=True) if probed_videos else schema.empty_frame(schema.VIDEO_SCHEMA)
    clips = pd.concat(probed_clips, ignore_index=True) if probed_clips else schema.empty_frame(schema.CLIP_SCHEMA)
    seconds: dict[str, float] = {}
    usage: dict[str, list] = {}
    sum_seconds(probed_clips, seconds, usage)  # a clip frame carries its read and clip seconds
    videos.attrs.clear()
    clips.attrs.clear()
    clips = number_partitions(clips, plan_partitions(clips, job.prepare, windows_per_partition, plan_over), 0)
    state = shard_state(job, number)
    if state is not None:
        state.save_plan(videos, clips, seconds)
    return _with_progress(ShardPlan(number, videos, clips, seconds, usage), job)


def load_shard_plan(number: int, job, windows_per_partition: int, plan_over: int, retry_failed: bool) -> ShardPlan:
    """The saved plan of shard ``number``; with ``retry_failed``, its failures forgotten first:
    unreadable videos are probed again (their new clips get new partitions) and partitions
    with failed windows lose their completion marker."""
    state = ShardState(job.writer.output_path, number)
    videos, clips, seconds = state.load_plan()
    usage: dict[str, list] = {}
    if retry_failed:
        state.clear_finished()
        retry = videos["status"].isin(schema.READ_STATUSES)
        if retry.any():
            again, new_clips = probe_chunk(videos.loc[retry, ["video_path"]].reset_index(drop=True), job)
            sum_seconds([new_clips], seconds, usage)
            again.attrs.clear()
            new_clips.attrs.clear()
            videos = pd.concat([videos[~retry], again], ignore_index=True)
            first = int(clips["partition"].max()) + 1 if len(clips) else 0
            groups = plan_partitions(new_clips, job.prepare, windows_per_partition, plan_over)
            clips = pd.concat([clips, number_partitions(new_clips, groups, first)], ignore_index=True)
            state.save_plan(videos, clips, seconds)
        for done in sorted(state.done_partitions()):
            index, _ = state.read_done(done)
            if (index["status"] != schema.OK).any():
                state.clear_done(done)
    return _with_progress(ShardPlan(number, videos, clips, seconds, usage), job)


def shard_outline(plan: ShardPlan, prepare: CaptionPreparationStage) -> dict:
    """What the client needs of a plan: its partitions to compute, and sizes for progress
    (``windows``: each pending partition's expected window count)."""
    pending = plan.clips[plan.clips["partition"].isin(plan.pending)]
    windows = {int(n): 0 for n in plan.pending}
    for partition, frames in zip(pending["partition"], pending["num_frames"], strict=True):
        windows[int(partition)] += len(prepare.windows(int(frames)))
    return {"pending": plan.pending, "windows": windows, "partitions": len(plan.done) + len(plan.pending),
            "videos": len(plan.videos), "clips": len(plan.clips)}


def shard_group(plan: ShardPlan, partition: int) -> pd.DataFrame:
    """The clip rows of one partition of a shard."""
    group = plan.clips.take(plan.rows[partition]).drop(columns="partition").reset_index(drop=True)
    group.attrs = {SHARD: plan.number, PARTITION: partition, PARTITION_VIDEOS: plan.videos_of.get(partition, {})}
    return group


def finish_shard(plan: ShardPlan, job, failures: list[dict], *indexes: pd.DataFrame) -> dict:
    """The shard's videos table (statuses from its windows), written, and its counts.

    ``indexes`` are this run's partitions; those of earlier runs are read from their
    markers. ``failures``: ``{"partition", "error"}`` of partitions whose task failed
    (their videos become partial or task_failed). A shard with no failure is marked finished.
    Its own cost counts as the stage "finish".
    """
    with measure() as used:
        stats = _finish_shard(plan, job, failures, indexes)
    stats["stage_seconds"]["finish"] = stats["stage_seconds"].get("finish", 0.0) + used.wall_s
    add_usage(stats["stage_usage"], "finish", used.cpu_s, used.peak_rss)
    return stats


def _finish_shard(plan: ShardPlan, job, failures: list[dict], indexes: tuple[pd.DataFrame, ...]) -> dict:
    state = shard_state(job, plan.number)
    failures = [{**failure, "shard": plan.number, "videos": failed_videos(plan, failure["partition"])} for failure in failures]
    seconds = dict(plan.probe_seconds)
    usage = {stage: list(value) for stage, value in plan.probe_usage.items()}
    sum_seconds(indexes, seconds, usage)
    parts = list(indexes)
    # A plan computed again (its worker died) counts this run's partitions as done too.
    computed = {index.attrs.get(PARTITION) for index in indexes}
    for number in plan.done:
        if number in computed:
            continue
        index, done_seconds = state.read_done(number)
        parts.append(index)
        for stage, value in done_seconds.items():
            seconds[stage] = seconds.get(stage, 0.0) + value
    index = pd.concat(parts, ignore_index=True) if parts else schema.empty_frame(schema.WINDOW_SCHEMA)[INDEX_COLUMNS]
    videos = finish_videos(plan.videos, index, plan.clips)
    for failure in failures:
        hit = videos["video_path"].isin(failure["videos"])
        some_windows = videos["num_windows"] > 0  # windows of the video may have come out of other partitions
        videos.loc[hit & some_windows, "status"] = schema.PARTIAL
        videos.loc[hit & ~some_windows, "status"] = schema.TASK_FAILED
        videos.loc[hit, "error"] = f"a task processing this video failed: {failure['error']}"
    videos = videos.sort_values("video_path", ignore_index=True)
    write_videos(videos, job.writer, f"part-{plan.number:05d}")
    stats = {
        "shard": plan.number,
        "videos": {"total": len(videos), "by_status": _counts(videos["status"])},
        "clips": len(plan.clips),
        "windows": {"total": len(index), "by_status": _counts(index["status"])},
        "partitions": len(plan.done) + len(plan.pending),
        "partitions_computed": len(indexes),
        "failed_partitions": failures,
        "stage_seconds": seconds,
        "stage_usage": usage,
        **(flag_counts(index) if job.check is not None else {}),
        **({"below_preview": below_preview(videos, job.preview)} if job.preview is not None else {}),
    }
    if state is not None and not failures:
        state.mark_finished({**stats, "partitions_computed": 0, "stage_usage": {}})  # as a later run sees it
    return stats


def _counts(column: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in column.value_counts().items()}


def failed_videos(plan: ShardPlan, partition: int) -> list[str]:
    return sorted(set(plan.clips.loc[plan.clips["partition"] == partition, "video_path"]))
