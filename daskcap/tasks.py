"""What runs on workers: each function here takes and returns plain frames (or a shard's
plan) and is submitted by the streaming runner (``daskcap/stream.py``).

A job is cut into shards of videos. Per shard: ``probe_chunk`` (read -> clip) over
pieces of its paths, ``plan_shard`` packs its clips into partitions and saves the
plan, then per partition ``shard_group`` -> ``prepare_task`` (-> ``caption_task``
-> ``enhance_task`` on engine workers) -> ``write_task``, and ``finish_shard``
writes the shard's videos table and returns its counts. Only the counts, and a
shard's list of partitions, ever go back to the client.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from daskcap import schema
from daskcap.engines.host import current_host
from daskcap.jobstate import ShardState
from daskcap.meter import measure
from daskcap.stages.caption import CaptionEnhancementStage, CaptionGenerationStage, caption_windows, enhance_windows
from daskcap.stages.check import check_windows, flag_counts
from daskcap.stages.clip import make_clips
from daskcap.stages.nemo_files import PARTITION_VIDEOS, partition_videos
from daskcap.stages.prepare import CaptionPreparationStage, prepare_windows
from daskcap.stages.read import read_videos
from daskcap.stages.write import INDEX_COLUMNS, finish_videos, write_videos, write_windows

STAGE_SECONDS = schema.STAGE_SECONDS
STAGE_USAGE = "daskcap_stage_usage"  # attrs: stage -> [CPU seconds, peak RSS bytes]
PARTITION = "daskcap_partition"
SHARD = "daskcap_shard"
ENGINE_RESOURCE = "GPU"  # what engine workers advertise; model tasks ask for one


# --- timing -----------------------------------------------------------------------------------


def timed(frame: pd.DataFrame, stage: str, function: Callable, params: Any) -> pd.DataFrame:
    """Run one stage on a partition, adding its seconds to the frame's attrs.

    A stage that does another stage's work on the way (prepare builds the
    previews) reports those seconds in its result's attrs: they go to that stage.
    """
    seconds = dict(frame.attrs.get(STAGE_SECONDS, {}))
    usage = {name: list(value) for name, value in frame.attrs.get(STAGE_USAGE, {}).items()}
    with measure() as used:
        result = function(frame, params)
    wall, cpu = used.wall_s, used.cpu_s
    for inner, (inner_wall, inner_cpu) in result.attrs.get(schema.LENT_SECONDS, {}).items():
        seconds[inner] = seconds.get(inner, 0.0) + inner_wall
        add_usage(usage, inner, inner_cpu, used.peak_rss)
        wall, cpu = wall - inner_wall, cpu - inner_cpu
    seconds[stage] = seconds.get(stage, 0.0) + wall
    add_usage(usage, stage, cpu, used.peak_rss)
    result.attrs = {**frame.attrs, STAGE_SECONDS: seconds, STAGE_USAGE: usage}
    return result


def add_usage(usage: dict[str, list], stage: str, cpu_s: float, peak_rss: int) -> None:
    """CPU seconds add up; peak RSS is the highest seen."""
    total = usage.setdefault(stage, [0.0, 0])
    total[0] += cpu_s
    total[1] = max(total[1], peak_rss)


def sum_seconds(frames, into: dict[str, float], usage: dict[str, list] | None = None) -> None:
    """Add up frames' stage seconds (and CPU seconds and peak RSS into ``usage``)."""
    for frame in frames:
        for stage, seconds in frame.attrs.get(STAGE_SECONDS, {}).items():
            into[stage] = into.get(stage, 0.0) + seconds
        for stage, (cpu_s, peak_rss) in frame.attrs.get(STAGE_USAGE, {}).items():
            if usage is not None:
                add_usage(usage, stage, cpu_s, peak_rss)


# --- planning a shard ---------------------------------------------------------------------------


def plan_partitions(clips: pd.DataFrame, prepare: CaptionPreparationStage, windows_per_partition: int, n_workers: int) -> list[pd.DataFrame]:
    """Pack consecutive clips into partitions of at most ``windows_per_partition``
    expected windows (a bigger clip stays alone), with enough partitions to keep
    every worker busy."""
    import math

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


def probe_chunk(paths: pd.DataFrame, job) -> tuple[pd.DataFrame, pd.DataFrame]:
    """read -> clip over some of a shard's paths: video rows and clip rows (timed)."""
    videos = timed(paths, "read", read_videos, job.reader)
    clips = timed(videos, "clip", make_clips, job.clipper)
    return videos, clips


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


def _state(job, number: int) -> ShardState | None:
    return None if job.writer.dry_run else ShardState(job.writer.output_path, number)


def _with_progress(plan: ShardPlan, job) -> ShardPlan:
    numbers = sorted(int(n) for n in plan.clips["partition"].unique()) if len(plan.clips) else []
    state = _state(job, plan.number)
    done = state.done_partitions() if state is not None else set()
    plan.done = [n for n in numbers if n in done]
    plan.pending = [n for n in numbers if n not in done]
    if job.writer.write_metas and not job.writer.dry_run:
        plan.videos_of = partition_videos(plan.clips, plan.videos)
    return plan


def plan_shard(number: int, job, windows_per_partition: int, plan_over: int, *probed: tuple[pd.DataFrame, pd.DataFrame]) -> ShardPlan:
    """Pack the probed clips of shard ``number`` into partitions and save the plan."""
    videos = pd.concat([v for v, _ in probed], ignore_index=True) if probed else schema.empty_frame(schema.VIDEO_SCHEMA)
    clips = pd.concat([c for _, c in probed], ignore_index=True) if probed else schema.empty_frame(schema.CLIP_SCHEMA)
    seconds: dict[str, float] = {}
    usage: dict[str, list] = {}
    sum_seconds([c for _, c in probed], seconds, usage)  # a clip frame carries its read and clip seconds
    videos.attrs.clear()
    clips.attrs.clear()
    clips = number_partitions(clips, plan_partitions(clips, job.prepare, windows_per_partition, plan_over), 0)
    state = _state(job, number)
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


def shard_outline(plan: ShardPlan) -> dict:
    """What the client needs of a plan: its partitions to compute, and sizes for progress."""
    return {"pending": plan.pending, "partitions": len(plan.done) + len(plan.pending), "videos": len(plan.videos), "clips": len(plan.clips)}


def shard_group(plan: ShardPlan, partition: int) -> pd.DataFrame:
    """The clip rows of one partition of a shard."""
    group = plan.clips[plan.clips["partition"] == partition].drop(columns="partition").reset_index(drop=True)
    group.attrs = {SHARD: plan.number, PARTITION: partition, PARTITION_VIDEOS: plan.videos_of.get(partition, {})}
    return group


# --- a partition ----------------------------------------------------------------------------------


def prepare_task(group: pd.DataFrame, job) -> pd.DataFrame:
    """prepare of one partition: its window rows, with their previews made from the frames
    of the same decode (or ``preview_failed``); the seconds spent on them count as "preview"."""
    return timed(group, "prepare", functools.partial(prepare_windows, preview=job.preview), job.prepare)


def caption_task(frame: pd.DataFrame, params: CaptionGenerationStage) -> pd.DataFrame:
    """On an engine worker: caption one partition's model inputs with this worker's
    persistent engine. The sampled frames are not sent back: the write takes them, when
    the output keeps them, from the prepared partition."""
    host = current_host()
    handle = host.handle(params.engine_config())
    result = timed(frame, "caption", lambda f, p: caption_windows(f, p, handle), params)
    host.count(partitions_captioned=1, windows_captioned=int(result["caption"].notna().sum()))
    result["sampled_frames"] = None
    return result


def enhance_task(frame: pd.DataFrame, params: CaptionEnhancementStage) -> pd.DataFrame:
    host = current_host()
    handle = host.handle(params.engine_config())
    result = timed(frame, "enhance", lambda f, p: enhance_windows(f, p, handle), params)
    host.count(windows_enhanced=int(result["enhanced_caption"].notna().sum()))
    return result


# What the model stages read and write of a window: only these go to an engine worker.
WINDOW_ID = ["clip_id", "window_index"]
MODEL_COLUMNS = [
    *WINDOW_ID, "video_path", "start_frame", "end_frame", "fps", "num_sampled_frames", "sampled_height", "sampled_width",
    "sampled_frames", "prompt", "status", "error",
    "caption", "stage1_caption", "caption_model", "caption_prompt_tokens", "caption_output_tokens", "caption_finish_reason",
    "enhanced_caption", "enhance_model", "enhance_prompt_tokens", "enhance_output_tokens", "enhance_finish_reason",
]


def model_inputs(prepared: pd.DataFrame) -> pd.DataFrame:
    """The model's part of a prepared partition (ids, sampled frames, prompt): the window
    mp4s and previews stay on the CPU worker that made them."""
    inputs = prepared[MODEL_COLUMNS].copy()
    inputs.attrs = dict(prepared.attrs)
    return inputs


def join_captions(prepared: pd.DataFrame, captioned: pd.DataFrame, keep_model_input: bool) -> pd.DataFrame:
    """The prepared windows with the model stages' columns, matched by window id."""
    results = captioned.set_index(WINDOW_ID)
    joined = prepared.copy()
    at = pd.MultiIndex.from_frame(prepared[WINDOW_ID])
    for column in MODEL_COLUMNS:
        if column not in WINDOW_ID and column != "sampled_frames":
            joined[column] = results[column].reindex(at).to_numpy()
            joined[column] = joined[column].astype(prepared[column].dtype)
    if not keep_model_input:
        joined["sampled_frames"] = None
    joined.attrs = dict(captioned.attrs)  # the prepare seconds came along, the model stages' were added
    return joined


def write_captioned_task(prepared: pd.DataFrame, captioned: pd.DataFrame, job) -> pd.DataFrame:
    """On the CPU worker holding the prepared partition: join the captions back, then write."""
    return write_task(join_captions(prepared, captioned, job.writer.write_model_input), job)


def write_task(frame: pd.DataFrame, job) -> pd.DataFrame:
    """Check the captions (when the job asks), write one partition, then its completion
    marker (the last thing written); return its light index."""
    shard, number = frame.attrs[SHARD], frame.attrs[PARTITION]
    if job.check is not None:
        frame = timed(frame, "check", lambda f, p: check_windows(f, p, job.enhance_prompt), job.check)
    index = timed(frame, "write", lambda f, p: write_windows(f, p, f"part-{shard:05d}-{number:05d}"), job.writer)
    state = _state(job, shard)
    if state is not None:
        state.mark_done(number, index, index.attrs.get(STAGE_SECONDS, {}))
    return index


def prepare_and_write_task(group: pd.DataFrame, job) -> pd.DataFrame:
    """Without models, a partition is one task: prepare (with previews) -> write."""
    return write_task(prepare_task(group, job), job)


# --- finishing a shard ----------------------------------------------------------------------------


def finish_shard(plan: ShardPlan, job, failures: list[dict], *indexes: pd.DataFrame) -> dict:
    """The shard's videos table (statuses from its windows), written, and its counts.

    ``indexes`` are this run's partitions; those of earlier runs are read from their
    markers. ``failures``: ``{"partition", "error"}`` of partitions whose task failed
    (their videos become partial or task_failed). A shard with no failure is marked finished.
    """
    state = _state(job, plan.number)
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
    }
    if state is not None and not failures:
        state.mark_finished({**stats, "partitions_computed": 0, "stage_usage": {}})  # as a later run sees it
    return stats


def _counts(column: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in column.value_counts().items()}


def failed_videos(plan: ShardPlan, partition: int) -> list[str]:
    return sorted(set(plan.clips.loc[plan.clips["partition"] == partition, "video_path"]))
