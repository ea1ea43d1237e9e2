"""Jobs and clusters: what a job is, where it runs, and ``run_job``, which runs it.

The work itself is streamed shard by shard (``daskcap/stream.py``) through the
tasks that run on workers (``daskcap/tasks.py``): read -> clip over pieces of a
shard, its clips packed into partitions bounded by their window count (so
memory per task does not grow with video length), prepare (previews made
in the same decode) (-> caption -> enhance on engine workers, which keep their engines loaded, see
engines/host.py) -> write per partition, and the shard's videos table at its
end. The client keeps only each shard's counts, which it merges into
``summary.json``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import dask
import pandas as pd
from distributed import Client, LocalCluster, Nanny, Scheduler, SpecCluster

from daskcap.engines.base import resolve_backend, visible_gpus
from daskcap.engines.host import ENGINE_TASK_SLOTS, worker_stats
from daskcap.engines.weights import check_available
from daskcap.jobstate import STATE_DIR, OutputState, config_hash, params_dict
from daskcap.meter import process_peak_rss
from daskcap.prompts import ENHANCE_PROMPTS
from daskcap.stages._params import Checks
from daskcap.stages.caption import CaptionEnhancementStage, CaptionGenerationStage
from daskcap.stages.check import CaptionCheckStage
from daskcap.stages.clip import FixedStrideClipStage
from daskcap.stages.prepare import CaptionPreparationStage
from daskcap.stages.preview import PreviewStage
from daskcap.stages.read import VideoReaderStage, list_videos
from daskcap.stages.write import ClipWriterStage
from daskcap.storage import atomic_write_json, output_fs, redact
from daskcap.stream import Progress, StreamRunner
from daskcap.tasks import ENGINE_RESOURCE, add_usage

log = logging.getLogger(__name__)

OUTPUT_ENTRIES = ("windows", "videos", "previews", "clips", "metas", "processed_videos", "processed_clip_chunks", "summary.json", "report", STATE_DIR)


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
    videos_per_shard: int = 1000  # the unit the client keeps track of; a resume keeps the first run's

    def __post_init__(self) -> None:
        checks = Checks("cluster")
        for name in ("n_workers", "engine_workers"):
            if getattr(self, name) is not None:
                checks.number(name, getattr(self, name), 1, integer=True)
        checks.number("windows_per_partition", self.windows_per_partition, 1, integer=True)
        checks.number("videos_per_shard", self.videos_per_shard, 1, integer=True)
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


def engine_worker_options(index: int, engine_workers: int, gpus: list[str]) -> dict:
    """Nanny options of embedded engine worker ``index``, pinned to a GPU the way dask-cuda pins its workers.

    Its GPU comes first in CUDA_VISIBLE_DEVICES (several engine workers per GPU go round
    the GPUs), with dask-cuda's CPU-affinity plugin when dask-cuda is installed. The host
    memory limit is the machine's over the engine workers, as dask-cuda sets it: the
    default share of one core would have the nanny kill a worker that loads a 7B model.
    No CUDA context is made before the engine is built (vLLM must be the first to make one).
    """
    from distributed.system import MEMORY_LIMIT

    # Several model tasks at once: their requests share the engine's batches (engines/host.py).
    options: dict = {"resources": {ENGINE_RESOURCE: 1}, "memory_limit": MEMORY_LIMIT // engine_workers, "env": {}, "nthreads": ENGINE_TASK_SLOTS}
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
    gpus = visible_gpus()
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
            f"(CPU-only: `dask worker {options.scheduler} --nthreads 4 --resources {ENGINE_RESOURCE}=1`), "
            "or use cluster/local.sh"
        )
    try:
        client.get_versions(check=True, packages=_MATCHING_PACKAGES)
    except ValueError as exc:
        problems.append(f"versions differ between this client and the cluster; install the same ones everywhere:\n{exc}")
    return problems


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
        names = ("generations", "prompt_tokens", "output_tokens", "engine_s", "calls", "call_tasks")
        sums = {name: sum(w.get(f"{role}_{name}", 0) for w in workers.values()) for name in names}
        if sums["generations"]:
            seconds, calls = sums["engine_s"], sums.pop("calls")
            tasks = sums.pop("call_tasks")
            totals[role] = {
                **sums,
                "engine_calls": calls,
                # Requests the engine held at once on average, and the tasks they came from.
                "requests_per_call": round(sums["generations"] / calls, 2) if calls else None,
                "tasks_per_call": round(tasks / calls, 2) if calls else None,
                "engine_s": round(seconds, 3),
                "prompt_tokens_per_s": round(sums["prompt_tokens"] / seconds, 1) if seconds else None,
                "output_tokens_per_s": round(sums["output_tokens"] / seconds, 1) if seconds else None,
            }
    totals["model_load_s"] = round(sum(sum(w.get("model_load_s", {}).values()) for w in workers.values()), 3)
    return totals




def _merge(stats: list[dict]) -> dict:
    """One summary's counts from the shards' counts."""
    total: dict = {"videos": {}, "windows": {}, "clips": 0, "partitions": 0, "partitions_computed": 0, "failed_partitions": [],
                   "stage_seconds": {}, "stage_usage": {}}
    flags: dict = {}
    for shard in stats:
        for kind in ("videos", "windows"):
            for status, n in shard[kind]["by_status"].items():
                total[kind][status] = total[kind].get(status, 0) + n
        for name in ("clips", "partitions", "partitions_computed"):
            total[name] += shard[name]
        total["failed_partitions"] += shard["failed_partitions"]
        for stage, seconds in shard["stage_seconds"].items():
            total["stage_seconds"][stage] = total["stage_seconds"].get(stage, 0.0) + seconds
        for stage, (cpu_s, peak) in shard["stage_usage"].items():
            add_usage(total["stage_usage"], stage, cpu_s, peak)
        for key in ("caption_flags", "enhance_flags"):
            if key in shard:
                merged = flags.setdefault(key, {"checked": 0, "flagged": 0, "by_flag": {}})
                merged["checked"] += shard[key]["checked"]
                merged["flagged"] += shard[key]["flagged"]
                for flag, n in shard[key]["by_flag"].items():
                    merged["by_flag"][flag] = merged["by_flag"].get(flag, 0) + n
    total["flags"] = flags
    return total


def _shards(paths: pd.DataFrame, videos_per_shard: int) -> list[pd.DataFrame]:
    return [paths.iloc[i : i + videos_per_shard].reset_index(drop=True) for i in range(0, len(paths), videos_per_shard)]


def run_job(
    job: Job, options: ClusterOptions, *, overwrite: bool = False, progress: bool = True, retry_failed: bool = False
) -> dict:
    """Run ``job`` to completion and return its summary (also in summary.json).

    A rerun into the same output with the same configuration resumes: only
    shards and partitions without a completion mark are computed.
    ``retry_failed`` also recomputes what failed before.
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
    resuming = previous is not None and state.has_listing()
    if retry_failed and not resuming:
        raise UsageError(f"--retry-failed needs an earlier run of the same job in {job.writer.output_path}; there is none")
    shards: list[pd.DataFrame] = []
    if not resuming:
        paths = list_videos(job.reader)
        if paths.empty:
            raise UsageError(f"no videos found in {job.reader.input_video_path} (extensions: {' '.join(job.reader.video_extensions)})")
        shards = _shards(paths, options.videos_per_shard)
        del paths
    tracker = Progress(progress)
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
            count = state.listing_info()["shards"]
            tracker.announce(f"daskcap: resuming the run in {job.writer.output_path}")
        else:
            if previous is None:
                prepare_output(job.writer, overwrite)
            count = len(shards)
            if state is not None:
                state.write_job({"config_hash": job_hash, "config": redact(config)})
                state.save_listing(shards)
                shards = []  # read back a shard at a time: the client does not hold the listing
        runner = StreamRunner(
            client, job, cpu_workers=cpu_workers, engine_workers=engine_workers,
            windows_per_partition=options.windows_per_partition, plan_over=plan_over, retry_failed=retry_failed, progress=tracker,
        )
        try:
            stats = runner.run(
                list(range(count)),
                paths_of=lambda n: shards[n] if shards else state.load_listing(n),
                finished_of=lambda n: state.shard(n).finished() if state is not None else None,
                saved_plan=lambda n: resuming and state.shard(n).has_plan(),
            )
        finally:
            tracker.close()
        workers = _worker_summary(stats_before, client.run(worker_stats), engine_workers) if job.needs_engines else {}
        if not job.needs_engines:
            workers = {address: {"engine": False} for address in cpu_workers}
        for address, peak in client.run(process_peak_rss).items():
            workers.setdefault(address, {})["peak_rss_mb"] = round(peak / 2**20, 1)

    total = _merge(stats)
    wall_s = time.time() - started
    windows_total = sum(total["windows"].values())
    summary = {
        "input": job.reader.input_video_path,
        "output": job.writer.output_path,
        "config_hash": job_hash,
        "wall_s": round(wall_s, 3),
        "resumed": resuming,
        "partitions_computed": total["partitions_computed"],
        "videos": {"total": sum(total["videos"].values()), "by_status": total["videos"]},
        "clips": {"total": total["clips"]},
        "windows": {"total": windows_total, "by_status": total["windows"]},
        "windows_per_s": round(windows_total / wall_s, 3) if wall_s > 0 else None,
        "stage_seconds": {stage: round(seconds, 3) for stage, seconds in total["stage_seconds"].items()},
        # This run's partitions only (a resumed run does not repeat the finished ones).
        "stage_cpu_seconds": {stage: round(cpu_s, 3) for stage, (cpu_s, _) in total["stage_usage"].items()},
        "stage_peak_rss_mb": {stage: round(peak / 2**20, 1) for stage, (_, peak) in total["stage_usage"].items()},
        "cluster_start_s": round(cluster_start_s, 3),
        "shards": count,
        "partitions": total["partitions"],
        "most_partitions_in_flight": runner.most_in_flight,
        # The client's own figures; an embedded scheduler runs in the same process.
        "client": {
            "peak_rss_mb": round(process_peak_rss() / 2**20, 1),
            "scheduler_most_tasks": runner.most_tasks,
            "first_window_s": runner.first_window_s,
        },
        "failed_partitions": total["failed_partitions"],
        "cluster": {
            "scheduler": options.scheduler or "embedded",
            "cpu_workers": len(cpu_workers),
            "engine_workers": len(engine_workers),
        },
        "workers": workers,
        **({"engines": _engine_totals(workers)} if job.needs_engines else {}),
        **(total["flags"] if job.check is not None else {}),
        "config": config,
    }
    summary = redact(summary)  # no credentials from URLs in summary.json
    if state is not None:
        atomic_write_json(state.fs, f"{state.root}/summary.json", summary)
    return summary
