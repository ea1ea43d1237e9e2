"""``run_job``: a job from its checks to ``summary.json``, as a short sequence of named
steps over one ``RunState``.

1. check: the models exist, and an earlier run in the output has the same configuration;
2. connect: an embedded cluster, or an existing one (checked);
3. list: the input's pieces to list on workers (a resume reads the saved listing);
4. stream: shard by shard through the streaming runner (``stream.py``), the first
   shards while later pieces are still being listed;
5. summarize: the shards' counts and the workers' counters into ``summary.json``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from distributed import Client

from daskcap.engines.host import EngineHost, worker_stats
from daskcap.meter import process_peak_rss
from daskcap.run.cluster import check_cluster, connect, workers_by_kind
from daskcap.run.job import ClusterOptions, Job, UsageError, check_models, config_hash, job_config, resolve_endpoints
from daskcap.run.listing import InputListing, KnownShards, Listing
from daskcap.run.progress import Progress
from daskcap.run.state import OutputState, output_lock, prepare_output
from daskcap.run.stream import StreamRunner
from daskcap.run.summary import build_summary, worker_summary
from daskcap.stages.listing import list_videos, no_videos
from daskcap.storage import atomic_write_json, overlap_problem, redact, remove_temporaries

log = logging.getLogger(__name__)


@dataclass
class RunState:
    """What one run knows as it goes."""

    job: Job
    options: ClusterOptions
    overwrite: bool
    retry_failed: bool
    progress: Progress
    started: float = field(default_factory=time.time)
    config: dict = field(default_factory=dict)
    config_hash: str = ""
    output: OutputState | None = None  # None for a dry run
    previous: dict | None = None  # job.json of an earlier run into the same output
    resuming: bool = False
    cluster_start_s: float = 0.0
    cpu_workers: list[str] = field(default_factory=list)
    engine_workers: list[str] = field(default_factory=list)
    shards: InputListing | KnownShards | None = None  # the listing under way, or the shards known already
    streamer: StreamRunner | None = None
    shard_stats: list[dict] = field(default_factory=list)
    workers: dict = field(default_factory=dict)


def run_job(
    job: Job, options: ClusterOptions, *, overwrite: bool = False, progress: bool = True, retry_failed: bool = False,
    export=None,
) -> dict:
    """Run ``job`` to completion and return its summary (also in summary.json).

    A rerun into the same output with the same configuration resumes: only
    shards and partitions without a completion mark are computed.
    ``retry_failed`` also recomputes what failed before. ``export`` (``ExportParams``):
    then export the output on the same cluster (its stats under ``export``).
    """
    run = RunState(job, options, overwrite, retry_failed, Progress(progress))
    with contextlib.ExitStack() as held:
        check(run, held)
        check_export(run, export)
        with connected(run) as client:
            stats_before = client.run(worker_stats) if job.needs_engines else {}
            try:
                list_shards(run, client)
                stream(run, client)
            finally:
                run.progress.close()
            collect_worker_stats(run, client, stats_before)
            summary = summarize(run)
            if export is not None:
                from daskcap.training_data.runner import run_export

                stats = run_export(client, export)
                summary["export"] = {key: value for key, value in stats.items() if key != "shards"}
                atomic_write_json(run.output.fs, f"{run.output.root}/summary.json", summary)
        return summary


def check_export(run: RunState, export) -> None:
    """An export asked for with the run is checked before any work: its destination apart from
    the output, and holding nothing but daskcap's exports."""
    if export is None:
        return
    from daskcap.training_data.places import Destination, check_apart

    if run.output is None:
        raise UsageError("an export needs a run that writes its output (not a dry run)")
    check_apart(export)
    Destination(export).check()


def check(run: RunState, held: contextlib.ExitStack) -> None:
    """Refuse the job before any work: missing models, an output that overlaps the input or
    is being written by another run (else it is locked in ``held``), an output holding
    another job, --retry-failed with nothing to retry."""
    job = run.job
    problems = check_models(job, run.options)
    overlap = overlap_problem(job.reader.input_video_path, job.writer.output_path)
    if overlap:
        problems.append(overlap)
    if problems:
        raise UsageError("\n".join(problems))
    run.job = job = resolve_endpoints(job)  # the served model names, and the keys tried, before any work
    run.config = job_config(job, run.options)
    run.config_hash = config_hash(run.config)
    held.enter_context(output_lock(job.writer))
    run.output = None if job.writer.dry_run else OutputState(job.writer.output_path)
    if run.output is not None:
        remove_temporaries(run.output.fs, run.output.root)  # what a failed run left; no other run writes here now
    run.previous = run.output.read_job() if run.output is not None and not run.overwrite else None
    if run.previous is not None and run.previous.get("config_hash") != run.config_hash:
        raise UsageError(
            f"{job.writer.output_path} holds a run with another configuration (hash {run.previous.get('config_hash')}, "
            f"this one {run.config_hash}); rerun with the same settings to resume it, pass --overwrite to start over, "
            "or choose another output"
        )
    run.resuming = run.previous is not None and run.output.has_listing()
    if run.retry_failed and not run.resuming:
        raise UsageError(f"--retry-failed needs an earlier run of the same job in {job.writer.output_path}; there is none")


@contextlib.contextmanager
def connected(run: RunState) -> Iterator[Client]:
    """A client to the job's cluster, checked, with its workers sorted by kind."""
    connecting = time.time()
    with connect(run.options, run.job.needs_engine_workers) as client:
        run.cluster_start_s = time.time() - connecting
        if run.options.scheduler:
            problems = check_cluster(client, run.options, run.job.needs_engine_workers)
            if problems:
                raise UsageError("\n".join(problems))
        run.cpu_workers, run.engine_workers = workers_by_kind(client)
        if run.job.needs_engines:
            client.register_plugin(EngineHost())  # idempotent: loaded engines survive it
        run.progress.announce(f"daskcap: dashboard {client.dashboard_link}")
        yield client


def list_shards(run: RunState, client: Client) -> None:
    """The shards to run: the saved listing of the run being resumed; else the input, to be
    listed on workers while the first shards run (a dry run, which writes nothing, lists here)."""
    job, started = run.job, time.time()
    if run.resuming:
        run.shards = KnownShards(Listing.from_info(run.output.listing_info()))
        run.progress.announce(f"daskcap: resuming the run in {job.writer.output_path}")
    elif run.output is None:
        paths = list_videos(job.reader)
        if paths.empty:
            raise UsageError(no_videos(job.reader))
        size = run.options.videos_per_shard
        run.shards = KnownShards(frames=[paths.iloc[i : i + size].reset_index(drop=True) for i in range(0, len(paths), size)],
                                 listing_s=time.time() - started)
    else:
        if run.previous is None:
            prepare_output(job.writer, run.overwrite)  # with --overwrite, removes the old run first
        run.output.write_job({"config_hash": run.config_hash, "config": redact(run.config)})
        workers = {"workers": run.cpu_workers or None, "allow_other_workers": not run.cpu_workers}
        run.shards = InputListing(client, job, run.options.videos_per_shard, workers=workers,
                                  max_in_flight=max(1, len(run.cpu_workers)), progress=run.progress)


def stream(run: RunState, client: Client) -> None:
    """Every shard through the streaming runner (listing the input meanwhile); their counts
    into ``run.shard_stats``."""
    job, output = run.job, run.output
    n_workers = max(1, len(run.cpu_workers) or len(run.engine_workers))
    run.streamer = StreamRunner(
        client, job, cpu_workers=run.cpu_workers, engine_workers=run.engine_workers,
        windows_per_partition=run.options.windows_per_partition,
        # With models, partitions are spread over the engines, not the CPU workers: a
        # partition is one engine call, and small ones starve the GPU of batches.
        plan_over=max(1, len(run.engine_workers)) if job.needs_engine_workers else n_workers,
        retry_failed=run.retry_failed, progress=run.progress, started=run.started,
    )
    run.shard_stats = run.streamer.run(
        run.shards,
        finished_of=lambda n: output.shard(n).finished() if output is not None else None,
        # A run stopped while listing may have planned shards already (its listing is checked to be the same).
        saved_plan=lambda n: run.previous is not None and output.shard(n).has_plan(),
    )


def collect_worker_stats(run: RunState, client: Client, before: dict) -> None:
    """Per worker: its engine counters' growth during the job and its peak memory."""
    if run.job.needs_engines:
        run.workers = worker_summary(before, client.run(worker_stats), run.engine_workers)
    else:
        run.workers = {address: {"engine": False} for address in run.cpu_workers}
    for address, peak in client.run(process_peak_rss).items():
        run.workers.setdefault(address, {})["peak_rss_mb"] = round(peak / 2**20, 1)


def summarize(run: RunState) -> dict:
    summary = build_summary(run)
    warn_below_preview(summary, run.job)
    if run.output is not None:
        atomic_write_json(run.output.fs, f"{run.output.root}/summary.json", summary)
    return summary


def warn_below_preview(summary: dict, job) -> None:
    """One line per kind for the whole job (not one per video): sources below the preview's rate or height."""
    if job.preview is None:
        return
    for key, what, target in (("fps", "frame rate", f"{job.preview.target_fps:g} fps"),
                              ("height", "height", f"{job.preview.target_height} px")):
        counts = summary["below_preview"].get(key)
        if counts and counts["videos"]:
            log.warning("%d of %d videos have a source %s below the preview's %s, e.g. %s",
                        counts["videos"], summary["videos"]["total"], what, target, counts["example"])
