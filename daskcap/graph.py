"""The one module that knows about Dask: it wires the stages into a graph and runs it.

read -> clip run as ``map_partitions`` over video rows; the client then packs
clips into partitions bounded by their window count (so memory per task does
not grow with video length); prepare -> preview run as fused
``map_partitions`` over those. Without captions, write is fused in too.
With captions, the prepared partitions are computed on CPU workers and each
is submitted to the model stages with ``resources={"GPU": 1}`` (annotations
on ``map_partitions`` are ignored by the dataframe backend), so they run only
on engine workers, each of which keeps its engines loaded (engines/host.py);
write then runs back on CPU workers. Each partition returns only a light
index of its windows plus per-stage seconds (in ``DataFrame.attrs``), which
the client merges into the video table and ``summary.json``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import dask
import dask.dataframe as dd
import pandas as pd
from distributed import Client, LocalCluster, Nanny, Scheduler, SpecCluster, as_completed

from daskcap import schema
from daskcap.engines.base import resolve_backend
from daskcap.engines.host import current_host, worker_stats
from daskcap.engines.weights import check_available
from daskcap.stages._params import Checks
from daskcap.prompts import ENHANCE_PROMPTS
from daskcap.stages.caption import CaptionEnhancementStage, CaptionGenerationStage, caption_windows, enhance_windows
from daskcap.stages.check import CaptionCheckStage, check_windows, flag_counts
from daskcap.stages.clip import FixedStrideClipStage, make_clips
from daskcap.stages.nemo_files import PARTITION_VIDEOS, partition_videos
from daskcap.stages.prepare import CaptionPreparationStage, prepare_windows
from daskcap.stages.preview import PreviewStage, make_previews
from daskcap.stages.read import VideoReaderStage, list_videos, read_videos
from daskcap.stages.write import INDEX_COLUMNS, ClipWriterStage, finish_videos, write_videos, write_windows
from daskcap.meter import measure, process_peak_rss
from daskcap.jobstate import STATE_DIR, OutputState, config_hash, params_dict
from daskcap.storage import atomic_write_json, output_fs, redact
from daskcap.video.windows import split_windows

log = logging.getLogger(__name__)

STAGE_SECONDS = schema.STAGE_SECONDS
STAGE_USAGE = "daskcap_stage_usage"  # attrs: stage -> [CPU seconds, peak RSS bytes]
PARTITION = "daskcap_partition"
OUTPUT_ENTRIES = ("windows", "videos", "previews", "clips", "metas", "processed_videos", "processed_clip_chunks", "summary.json", "report", STATE_DIR)
ENGINE_RESOURCE = "GPU"


class JobError(RuntimeError):
    """The job cannot start or finish; the message says why and what to do."""


class UsageError(JobError):
    """The job was refused before any work (nothing to read, output in the way, no model)."""


@dataclass(frozen=True)
class ClusterOptions:
    """Where the job runs: an existing scheduler, or an embedded cluster."""

    scheduler: str | None = None
    n_workers: int | None = None  # embedded cluster CPU workers; default one per core
    engine_workers: int | None = None  # embedded engine workers; default one per GPU, else 1
    windows_per_partition: int = 8

    def __post_init__(self) -> None:
        checks = Checks("cluster")
        for name in ("n_workers", "engine_workers"):
            if getattr(self, name) is not None:
                checks.number(name, getattr(self, name), 1, integer=True)
        checks.number("windows_per_partition", self.windows_per_partition, 1, integer=True)
        checks.done()


@dataclass(frozen=True)
class Job:
    reader: VideoReaderStage
    clipper: FixedStrideClipStage
    prepare: CaptionPreparationStage
    writer: ClipWriterStage
    preview: PreviewStage | None = None
    caption: CaptionGenerationStage | None = None
    enhance: CaptionEnhancementStage | None = None
    check: CaptionCheckStage | None = None

    @property
    def enhance_prompt(self) -> str | None:
        """The enhancement prompt (the caption checks' language rule reads it)."""
        if self.enhance is None:
            return None
        return self.enhance.prompt_text or ENHANCE_PROMPTS[self.enhance.prompt_variant]

    @property
    def needs_engines(self) -> bool:
        return self.caption is not None or self.enhance is not None


@dataclass
class _Progress:
    """Progress bars, one per stage, fed by task completions (off with --quiet)."""

    enabled: bool

    def announce(self, message: str) -> None:
        if self.enabled:
            print(message, file=sys.stderr, flush=True)

    def track(self, futures: list, description: str, stages: dict[str, list] | None = None) -> Iterator:
        """Yield ``futures`` as they finish; ``stages`` are earlier steps shown as their own bars."""
        stages = {**(stages or {}), description: futures}
        if not self.enabled:
            yield from as_completed(futures)
            return
        from tqdm.auto import tqdm

        bars = {
            name: tqdm(total=len(items), desc=f"{name:>8}", unit="part", position=i, leave=True, dynamic_ncols=True)
            for i, (name, items) in enumerate(stages.items())
        }
        stage_of = {future.key: name for name, items in stages.items() for future in items}
        try:
            for future in as_completed([f for items in stages.values() for f in items]):
                bars[stage_of[future.key]].update(1)
                if stage_of[future.key] == description:
                    yield future
        finally:
            for bar in bars.values():
                bar.close()


def _timed(frame: pd.DataFrame, stage: str, function: Callable, params: Any) -> pd.DataFrame:
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
        _add_usage(usage, inner, inner_cpu, used.peak_rss)
        wall, cpu = wall - inner_wall, cpu - inner_cpu
    seconds[stage] = seconds.get(stage, 0.0) + wall
    _add_usage(usage, stage, cpu, used.peak_rss)
    result.attrs = {**frame.attrs, STAGE_SECONDS: seconds, STAGE_USAGE: usage}
    return result


def _add_usage(usage: dict[str, list], stage: str, cpu_s: float, peak_rss: int) -> None:
    """CPU seconds add up; peak RSS is the highest seen."""
    total = usage.setdefault(stage, [0.0, 0])
    total[0] += cpu_s
    total[1] = max(total[1], peak_rss)


def _write_partition(frame: pd.DataFrame, writer: ClipWriterStage) -> pd.DataFrame:
    return _write_numbered(frame, writer, frame.attrs[PARTITION])


def _write_numbered(frame: pd.DataFrame, writer: ClipWriterStage, number: int, job: Job | None = None) -> pd.DataFrame:
    """Check the captions (when ``job`` asks), write one partition, then its completion
    marker (the last thing written)."""
    if job is not None and job.check is not None:
        frame = _timed(frame, "check", lambda f, p: check_windows(f, p, job.enhance_prompt), job.check)
    index = _timed(frame, "write", lambda f, p: write_windows(f, p, f"part-{number:05d}"), writer)
    if not writer.dry_run:
        OutputState(writer.output_path).mark_done(number, index, index.attrs.get(STAGE_SECONDS, {}))
    return index


def _clip_group(numbered: tuple[int, pd.DataFrame, dict]) -> pd.DataFrame:
    number, group, videos = numbered
    group = group.copy()
    group.attrs = {PARTITION: number, PARTITION_VIDEOS: videos}
    return group


def _caption_task(frame: pd.DataFrame, params: CaptionGenerationStage, drop_model_input: bool) -> pd.DataFrame:
    """On an engine worker: caption one partition with this worker's persistent engine."""
    host = current_host()
    handle = host.handle(params.engine_config())
    with host.serving:
        result = _timed(frame, "caption", lambda f, p: caption_windows(f, p, handle), params)
    host.count(partitions_captioned=1, windows_captioned=int(result["caption"].notna().sum()))
    return _drop_model_input(result) if drop_model_input else result


def _enhance_task(frame: pd.DataFrame, params: CaptionEnhancementStage) -> pd.DataFrame:
    host = current_host()
    handle = host.handle(params.engine_config())
    with host.serving:
        result = _timed(frame, "enhance", lambda f, p: enhance_windows(f, p, handle), params)
    host.count(windows_enhanced=int(result["enhanced_caption"].notna().sum()))
    return result


def _drop_model_input(frame: pd.DataFrame) -> pd.DataFrame:
    """Sampled frames are not needed after captioning: do not ship them back."""
    frame = frame.copy()
    frame["sampled_frames"] = None
    return frame


def _index_meta() -> pd.DataFrame:
    return schema.empty_frame(schema.WINDOW_SCHEMA)[INDEX_COLUMNS]


def _visible_gpus() -> list[str]:
    """This machine's GPUs as CUDA_VISIBLE_DEVICES entries, from the environment or the
    device nodes (CUDA itself is not initialised)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() not in ("", "-1")]
    nodes = [name for name in os.listdir("/dev") if re.fullmatch(r"nvidia\d+", name)] if os.path.isdir("/dev") else []
    return [str(i) for i in range(len(nodes))]


def engine_worker_options(index: int, engine_workers: int, gpus: list[str]) -> dict:
    """Nanny options of embedded engine worker ``index``, pinned to a GPU the way dask-cuda pins its workers.

    Its GPU comes first in CUDA_VISIBLE_DEVICES (several engine workers per GPU go round
    the GPUs), with dask-cuda's CPU-affinity plugin when dask-cuda is installed. The host
    memory limit is the machine's over the engine workers, as dask-cuda sets it: the
    default share of one core would have the nanny kill a worker that loads a 7B model.
    No CUDA context is made before the engine is built (vLLM must be the first to make one).
    """
    from distributed.system import MEMORY_LIMIT

    options: dict = {"resources": {ENGINE_RESOURCE: 1}, "memory_limit": MEMORY_LIMIT // engine_workers, "env": {}}
    if not gpus:
        return options
    first = index % len(gpus)
    options["env"] = {"CUDA_VISIBLE_DEVICES": ",".join(gpus[first:] + gpus[:first])}
    try:
        from dask_cuda.plugins import CPUAffinity
        from dask_cuda.utils import get_cpu_affinity
    except ImportError:
        log.warning(
            "dask-cuda is not installed: engine workers are plain Dask workers pinned by CUDA_VISIBLE_DEVICES, "
            "without its CPU affinity (pip install -e '.[gpu]')"
        )
        return options
    device = gpus[first]
    options["plugins"] = [CPUAffinity(get_cpu_affinity(int(device) if device.isdigit() else device))]
    return options


@contextlib.contextmanager
def embedded_cluster(options: ClusterOptions, needs_engines: bool) -> Iterator[SpecCluster]:
    """A cluster in this process: CPU workers, plus engine workers when models run.

    Engine workers are started non-daemonic (the setting is read by the nanny
    in this process when it spawns, and respawns, a worker): vLLM starts its
    own engine process, which a daemonic process may not do.
    """
    n_workers = options.n_workers or os.cpu_count() or 1
    if not needs_engines:
        with LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=logging.ERROR
        ) as cluster:
            yield cluster
        return
    quiet = {"nthreads": 1, "silence_logs": logging.ERROR}
    workers = {f"cpu-{i}": {"cls": Nanny, "options": dict(quiet)} for i in range(n_workers)}
    gpus = _visible_gpus()
    engine_workers = options.engine_workers or max(1, len(gpus))
    for i in range(engine_workers):
        workers[f"engine-{i}"] = {"cls": Nanny, "options": {**quiet, **engine_worker_options(i, engine_workers, gpus)}}
    with (
        dask.config.set({"distributed.worker.daemon": False}),
        SpecCluster(
            scheduler={"cls": Scheduler, "options": {"dashboard_address": ":0"}},
            workers=workers,
            silence_logs=logging.ERROR,
            name="daskcap",
        ) as cluster,
    ):
        yield cluster


@contextlib.contextmanager
def connect(options: ClusterOptions, needs_engines: bool = False) -> Iterator[Client]:
    """A client to ``options.scheduler``, or to a cluster started here."""
    if options.scheduler:
        with Client(options.scheduler) as client:
            yield client
        return
    with embedded_cluster(options, needs_engines) as cluster, Client(cluster) as client:
        client.wait_for_workers(len(cluster.worker_spec))
        yield client


def _workers_by_kind(client: Client) -> tuple[list[str], list[str]]:
    """(CPU workers, engine workers) by the resources they advertise."""
    cpu, engine = [], []
    for address, info in client.scheduler_info(n_workers=-1)["workers"].items():
        (engine if info.get("resources", {}).get(ENGINE_RESOURCE) else cpu).append(address)
    return sorted(cpu), sorted(engine)


# Packages whose versions must agree between this client and every worker:
# the rows and graphs they exchange are pickled pandas/pyarrow/dask objects.
_MATCHING_PACKAGES = ["daskcap", "pandas", "pyarrow", "av", "numpy"]


def check_cluster(client: Client, options: ClusterOptions, needs_engines: bool) -> list[str]:
    """Problems that would break a job on this cluster, found before any work."""
    problems = []
    cpu, engines = _workers_by_kind(client)
    if not cpu and not engines:
        problems.append(f"the cluster at {options.scheduler} has no workers; start some (see cluster/README.md)")
    if needs_engines and not engines:
        problems.append(
            f"captions need engine workers, and the cluster at {options.scheduler} has none: start one per GPU "
            f"with `dask cuda worker {options.scheduler} --resources {ENGINE_RESOURCE}=1` "
            f"(CPU-only: `dask worker {options.scheduler} --nthreads 1 --resources {ENGINE_RESOURCE}=1`), "
            "or use cluster/local.sh"
        )
    try:
        client.get_versions(check=True, packages=_MATCHING_PACKAGES)
    except ValueError as exc:
        problems.append(f"versions differ between this client and the cluster; install the same ones everywhere:\n{exc}")
    return problems


def plan_partitions(clips: pd.DataFrame, prepare: CaptionPreparationStage, windows_per_partition: int, n_workers: int) -> list[pd.DataFrame]:
    """Pack consecutive clips into partitions of at most ``windows_per_partition``
    expected windows (a bigger clip stays alone), with enough partitions to keep
    every worker busy."""
    if clips.empty:
        return []
    weights = [
        max(1, len(split_windows(int(n), prepare.window_size, prepare.remainder_threshold)))
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


def prepare_output(writer: ClipWriterStage, overwrite: bool) -> None:
    """Refuse to mix a new run into files that are not a run to resume, unless told to overwrite them."""
    if writer.dry_run:
        return
    fs, root = output_fs(writer.output_path)
    existing = [name for name in OUTPUT_ENTRIES if fs.exists(f"{root}/{name}")]
    if existing and not overwrite:
        raise UsageError(
            f"{writer.output_path} already holds files ({', '.join(existing)}) that are not a daskcap run to resume; "
            "pass --overwrite (Pipeline(..., overwrite=True)) to replace them, or choose another output"
        )
    for name in existing:
        fs.rm(f"{root}/{name}", recursive=True)
    fs.makedirs(root, exist_ok=True)


def job_config(job: Job, options: ClusterOptions) -> dict:
    """The configuration that decides the output (its hash is in summary.json and _daskcap/job.json)."""
    return {
        "reader": params_dict(job.reader),
        "clipper": params_dict(job.clipper),
        "prepare": params_dict(job.prepare),
        "preview": params_dict(job.preview),
        "caption": params_dict(job.caption),
        "enhance": params_dict(job.enhance),
        "check": params_dict(job.check),
        "writer": params_dict(job.writer),
        "windows_per_partition": options.windows_per_partition,
    }


def check_models(job: Job, options: ClusterOptions) -> list[str]:
    """Problems with the model stages, found before any video is read."""
    problems = []
    for stage in (job.caption, job.enhance):
        if stage is None:
            continue
        problems += [f"{type(stage).__name__}: {p}" for p in check_available(stage.model_name, stage.model_dir)]
        if stage.fp8:
            # On an existing cluster the workers decide "auto"; here we can only judge our own machine.
            backend = stage.engine if (options.scheduler and stage.engine == "auto") else resolve_backend(stage.engine)
            if backend == "transformers":
                problems.append(
                    f"{type(stage).__name__}: fp8 needs the vLLM engine; the transformers engine "
                    "(the only one available here) would silently run full precision"
                )
    return problems


def _sum_seconds(frames: list[pd.DataFrame], into: dict[str, float], usage: dict[str, list] | None = None, only: str | None = None) -> None:
    """Add up the partitions' stage seconds (and CPU seconds and peak RSS into ``usage``)."""
    for frame in frames:
        for stage, seconds in frame.attrs.get(STAGE_SECONDS, {}).items():
            if only in (None, stage):
                into[stage] = into.get(stage, 0.0) + seconds
        for stage, (cpu_s, peak_rss) in frame.attrs.get(STAGE_USAGE, {}).items():
            if usage is not None and only in (None, stage):
                _add_usage(usage, stage, cpu_s, peak_rss)


def _gather(
    futures: list, progress: _Progress, description: str, stages: dict[str, list] | None = None
) -> tuple[list, list[tuple[int, BaseException]]]:
    """Results in partition order; a failed partition is reported, not fatal."""
    position = {future.key: i for i, future in enumerate(futures)}
    results: list = [None] * len(futures)
    failures = []
    for future in progress.track(futures, description, stages):
        i = position[future.key]
        if future.status == "error":
            failures.append((i, future.exception()))
        else:
            results[i] = future.result()
        future.release()
    return results, failures


def _worker_summary(before: dict, after: dict, engine_workers: list[str]) -> dict:
    """Per worker: its counters' growth during this job (model loads and load seconds per
    model, windows, generations, tokens, engine seconds) and its GPU as it reports it."""
    summary = {}
    for address, stats in after.items():
        previous = before.get(address, {})
        entry: dict = {"engine": address in engine_workers, "partitions_captioned": 0, "windows_captioned": 0, "windows_enhanced": 0}
        for name, value in stats.items():
            if isinstance(value, dict):  # per model
                grown = {model: round(n - previous.get(name, {}).get(model, 0), 3) for model, n in value.items()}
                entry[name] = {model: n for model, n in grown.items() if n}
            elif isinstance(value, int | float) and not isinstance(value, bool) and not name.startswith("gpu_"):
                entry[name] = round(value - previous.get(name, 0), 3)
            else:  # a state, not a counter: the GPU's name, peak memory, CUDA_VISIBLE_DEVICES
                entry[name] = value
        summary[address] = entry
    return summary


def _engine_totals(workers: dict) -> dict:
    """The engines' work in this job, summed over engine workers: per role, generations,
    tokens and seconds inside engine calls, with tokens per such second; and model loads."""
    totals: dict = {}
    for role in ("caption", "enhance"):
        sums = {name: sum(w.get(f"{role}_{name}", 0) for w in workers.values()) for name in ("generations", "prompt_tokens", "output_tokens", "engine_s")}
        if sums["generations"]:
            seconds = sums["engine_s"]
            totals[role] = {
                **sums,
                "engine_s": round(seconds, 3),
                "prompt_tokens_per_s": round(sums["prompt_tokens"] / seconds, 1) if seconds else None,
                "output_tokens_per_s": round(sums["output_tokens"] / seconds, 1) if seconds else None,
            }
    totals["model_load_s"] = round(sum(sum(w.get("model_load_s", {}).values()) for w in workers.values()), 3)
    return totals


def _submit_model_stages(client: Client, job: Job, windows_dd, numbers: list[int], cpu: list[str]) -> tuple[list, dict[str, list]]:
    """Prepared partitions on CPU workers, model stages on engine workers, write on CPU workers.

    Returns the write futures and, for the progress display, each earlier stage's futures.
    """
    on_cpu = {"workers": cpu or None, "allow_other_workers": not cpu}
    prepared = client.compute(windows_dd.to_delayed(), **on_cpu)
    run = uuid.uuid4().hex[:8]  # fresh keys: reused keys keep their old placement
    drop_input = not job.writer.write_model_input
    written = []
    stages: dict[str, list] = {"prepare": list(prepared), "caption": [], "enhance": []}
    for i, partition in zip(numbers, prepared, strict=True):
        future = partition
        if job.caption is not None:
            future = client.submit(
                _caption_task, future, job.caption, drop_input,
                resources={ENGINE_RESOURCE: 1}, key=f"daskcap-caption-{run}-{i}", pure=False,
            )
            stages["caption"].append(future)
        if job.enhance is not None:
            future = client.submit(
                _enhance_task, future, job.enhance, resources={ENGINE_RESOURCE: 1}, key=f"daskcap-enhance-{run}-{i}", pure=False
            )
            stages["enhance"].append(future)
        written.append(
            client.submit(_write_numbered, future, job.writer, i, job, key=f"daskcap-write-{run}-{i}", pure=False, **on_cpu)
        )
    return written, {name: items for name, items in stages.items() if items}


def _probe(
    client: Client, job: Job, paths: pd.DataFrame, n_workers: int, tracker: _Progress, usage: dict[str, list] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """read -> clip over ``paths``: video rows, clip rows, and the stages' seconds (CPU and memory into ``usage``)."""
    videos_dd = dd.from_pandas(paths, npartitions=max(1, min(len(paths), 4 * n_workers)), sort=False)
    videos_dd = videos_dd.map_partitions(_timed, "read", read_videos, job.reader, meta=schema.empty_frame(schema.VIDEO_SCHEMA))
    clips_dd = videos_dd.map_partitions(_timed, "clip", make_clips, job.clipper, meta=schema.empty_frame(schema.CLIP_SCHEMA))
    video_parts = videos_dd.to_delayed(optimize_graph=False)
    clip_parts = clips_dd.to_delayed(optimize_graph=False)
    parts, failures = _gather(client.compute(video_parts + clip_parts), tracker, "probe")
    if failures:
        raise JobError(f"probing failed: {failures[0][1]!r}") from failures[0][1]
    video_frames, clip_frames = parts[: len(video_parts)], parts[len(video_parts) :]
    seconds: dict[str, float] = {}
    _sum_seconds(video_frames, seconds, usage)
    # Clip partitions carry their read seconds too: take only "clip" from them.
    _sum_seconds(clip_frames, seconds, usage, only="clip")
    videos = pd.concat(video_frames, ignore_index=True)
    clips = pd.concat(clip_frames, ignore_index=True)
    videos.attrs.clear()
    clips.attrs.clear()
    return videos, clips, seconds


def _number_partitions(clips: pd.DataFrame, groups: list[pd.DataFrame], first: int) -> pd.DataFrame:
    """The clip rows with the partition number each belongs to."""
    numbered = [group.assign(partition=first + i) for i, group in enumerate(groups)]
    return pd.concat(numbered, ignore_index=True) if numbered else clips.assign(partition=pd.Series(dtype="int64"))


def _retry_failed(client, job: Job, state: OutputState, videos, clips, n_workers, plan_over, options, tracker) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Forget the failures of an earlier run: unreadable videos are probed again
    (their new clips get new partitions) and partitions with failed windows lose
    their completion marker."""
    retry = videos["status"].isin(schema.READ_STATUSES)
    if retry.any():
        again, new_clips, _ = _probe(client, job, videos.loc[retry, ["video_path"]].reset_index(drop=True), n_workers, tracker)
        videos = pd.concat([videos[~retry], again], ignore_index=True)
        first = int(clips["partition"].max()) + 1 if len(clips) else 0
        groups = plan_partitions(new_clips, job.prepare, options.windows_per_partition, plan_over)
        clips = pd.concat([clips, _number_partitions(new_clips, groups, first)], ignore_index=True)
        state.save_plan(videos, clips)
    for number in sorted(state.done_partitions()):
        index, _ = state.read_done(number)
        if (index["status"] != schema.OK).any():
            state.clear_done(number)
    return videos, clips


def run_job(
    job: Job, options: ClusterOptions, *, overwrite: bool = False, progress: bool = True, retry_failed: bool = False
) -> dict:
    """Run ``job`` to completion and return its summary (also in summary.json).

    A rerun into the same output with the same configuration resumes: only
    partitions without a completion marker are computed. ``retry_failed``
    also recomputes what failed before.
    """
    started = time.time()
    problems = check_models(job, options)
    if problems:
        raise UsageError("\n".join(problems))
    config = job_config(job, options)
    job_hash = config_hash(config)
    state = None if job.writer.dry_run else OutputState(job.writer.output_path)
    previous = state.read_job() if state is not None and not overwrite else None
    if previous is not None and previous.get("config_hash") != job_hash:
        raise UsageError(
            f"{job.writer.output_path} holds a run with another configuration (hash {previous.get('config_hash')}, "
            f"this one {job_hash}); rerun with the same settings to resume it, pass --overwrite to start over, "
            "or choose another output"
        )
    resuming = previous is not None and state.has_plan()
    if retry_failed and not resuming:
        raise UsageError(f"--retry-failed needs an earlier run of the same job in {job.writer.output_path}; there is none")
    paths = None
    if not resuming:
        paths = list_videos(job.reader)
        if paths.empty:
            raise UsageError(f"no videos found in {job.reader.input_video_path} (extensions: {' '.join(job.reader.video_extensions)})")
    tracker = _Progress(progress)
    stage_seconds: dict[str, float] = {}
    stage_usage: dict[str, list] = {}  # stages computed in this run: [CPU seconds, peak RSS]
    connecting = time.time()
    with connect(options, job.needs_engines) as client:
        cluster_start_s = time.time() - connecting
        if options.scheduler:
            problems = check_cluster(client, options, job.needs_engines)
            if problems:
                raise UsageError("\n".join(problems))
        cpu_workers, engine_workers = _workers_by_kind(client)
        n_workers = max(1, len(cpu_workers) or len(engine_workers))
        # With models, partitions are spread over the engines, not the CPU workers: a
        # partition is one engine call, and small ones starve the GPU of batches.
        plan_over = max(1, len(engine_workers)) if job.needs_engines else n_workers
        tracker.announce(f"daskcap: dashboard {client.dashboard_link}")
        stats_before = client.run(worker_stats) if job.needs_engines else {}

        if resuming:
            videos, clips = state.load_plan()
            stage_seconds.update(previous.get("probe_seconds", {}))
            tracker.announce(f"daskcap: resuming the run in {job.writer.output_path}")
            if retry_failed:
                videos, clips = _retry_failed(client, job, state, videos, clips, n_workers, plan_over, options, tracker)
        else:
            if previous is None:
                prepare_output(job.writer, overwrite)
            videos, clips, probe_seconds = _probe(client, job, paths, n_workers, tracker, stage_usage)
            stage_seconds.update(probe_seconds)
            groups = plan_partitions(clips, job.prepare, options.windows_per_partition, plan_over)
            clips = _number_partitions(clips, groups, 0)
            if state is not None:
                state.write_job({"config_hash": job_hash, "probe_seconds": probe_seconds, "config": redact(config)})
                state.save_plan(videos, clips)

        numbers = sorted(int(n) for n in clips["partition"].dropna().unique()) if len(clips) else []
        done = state.done_partitions() if state is not None else set()
        pending = [n for n in numbers if n not in done]
        by_number = {n: group.drop(columns="partition").reset_index(drop=True) for n, group in clips.groupby("partition")}
        index_parts, partition_failures = [], []
        for number in sorted(done & set(numbers)):
            index, seconds = state.read_done(number)
            index_parts.append(index)
            for stage, value in seconds.items():
                stage_seconds[stage] = stage_seconds.get(stage, 0.0) + value
        if pending:
            # What NeMo's per-video files need of each video, per partition (see stages/nemo_files.py).
            videos_of = partition_videos(clips, videos) if job.writer.write_metas and not job.writer.dry_run else {}
            windows_dd = dd.from_map(
                _clip_group, [(n, by_number[n], videos_of.get(n, {})) for n in pending],
                meta=schema.empty_frame(schema.CLIP_SCHEMA), enforce_metadata=False,
            )
            window_meta = schema.empty_frame(schema.WINDOW_SCHEMA)
            prepare = functools.partial(prepare_windows, preview=job.preview)
            windows_dd = windows_dd.map_partitions(_timed, "prepare", prepare, job.prepare, meta=window_meta)
            if job.preview is not None:
                windows_dd = windows_dd.map_partitions(_timed, "preview", make_previews, job.preview, meta=window_meta)
            if job.needs_engines:
                futures, earlier = _submit_model_stages(client, job, windows_dd, pending, cpu_workers)
                results, failures = _gather(futures, tracker, "write", earlier)
            else:
                # prepare -> preview -> write fuse into one task per partition.
                index_dd = windows_dd.map_partitions(_write_partition, job.writer, meta=_index_meta())
                results, failures = _gather(client.compute(index_dd.to_delayed()), tracker, "windows")
            new_parts = [r for r in results if r is not None]
            _sum_seconds(new_parts, stage_seconds, stage_usage)
            index_parts += new_parts
            for i, exc in failures:
                number = pending[i]
                log.error("partition %d failed: %r", number, exc)
                partition_failures.append(
                    {"partition": number, "error": repr(exc), "videos": sorted(set(by_number[number]["video_path"]))}
                )
        window_index = pd.concat(index_parts, ignore_index=True) if index_parts else _index_meta()
        workers = _worker_summary(stats_before, client.run(worker_stats), engine_workers) if job.needs_engines else {}
        if not job.needs_engines:
            workers = {address: {"engine": False} for address in cpu_workers}
        for address, peak in client.run(process_peak_rss).items():
            workers.setdefault(address, {})["peak_rss_mb"] = round(peak / 2**20, 1)

    window_index = window_index.sort_values(["video_path", "clip_index", "window_index"], kind="stable", ignore_index=True)
    videos = finish_videos(videos, window_index, clips)
    for failure in partition_failures:
        hit = videos["video_path"].isin(failure["videos"])
        # Windows of the video may have come out of other partitions.
        some_windows = videos["num_windows"] > 0
        videos.loc[hit & some_windows, "status"] = schema.PARTIAL
        videos.loc[hit & ~some_windows, "status"] = schema.TASK_FAILED
        videos.loc[hit, "error"] = f"a task processing this video failed: {failure['error']}"
    videos = videos.sort_values("video_path", ignore_index=True)
    write_videos(videos, job.writer)
    wall_s = time.time() - started
    summary = {
        "input": job.reader.input_video_path,
        "output": job.writer.output_path,
        "config_hash": job_hash,
        "wall_s": round(wall_s, 3),
        "resumed": resuming,
        "partitions_computed": len(pending),
        "videos": {"total": len(videos), "by_status": videos["status"].value_counts().to_dict()},
        "clips": {"total": len(clips)},
        "windows": {"total": len(window_index), "by_status": window_index["status"].value_counts().to_dict()},
        "windows_per_s": round(len(window_index) / wall_s, 3) if wall_s > 0 else None,
        "stage_seconds": {stage: round(seconds, 3) for stage, seconds in stage_seconds.items()},
        # This run's partitions only (a resumed run does not repeat the finished ones).
        "stage_cpu_seconds": {stage: round(cpu_s, 3) for stage, (cpu_s, _) in stage_usage.items()},
        "stage_peak_rss_mb": {stage: round(peak / 2**20, 1) for stage, (_, peak) in stage_usage.items()},
        "cluster_start_s": round(cluster_start_s, 3),
        "partitions": len(numbers),
        "failed_partitions": partition_failures,
        "cluster": {
            "scheduler": options.scheduler or "embedded",
            "cpu_workers": len(cpu_workers),
            "engine_workers": len(engine_workers),
        },
        "workers": workers,
        **({"engines": _engine_totals(workers)} if job.needs_engines else {}),
        **(flag_counts(window_index) if job.check is not None else {}),
        "config": config,
    }
    summary = redact(summary)  # no credentials from URLs in summary.json
    if state is not None:
        atomic_write_json(state.fs, f"{state.root}/summary.json", summary)
    return summary
