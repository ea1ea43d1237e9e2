"""The streaming runner: a job in bounded pieces, however large its input.

The input is listed in pieces on workers (``listing.py``); shards are runs of
``videos_per_shard`` of its paths, and each shard's stages are ``map_partitions``
over its dataframes (``frames.py``). Shards are planned on workers a little
ahead of need, at a higher priority than windows (their paths read from the
listing, read -> clip over slices of them, then ``plan_shard``, see ``plan.py``);
the plan stays on the worker, and only its outline comes back.

Without models, a planned shard's windows are one compute: Dask queues its
partitions on the scheduler and hands each worker a few at a time, so at most
``SHARDS_AHEAD`` shards' partitions exist at once. With models, the engines set
the pace: partitions are computed one by one on the least-loaded CPU worker as
slots free up, a few per engine worker, so preparation runs just ahead of the
engines and no further; only the model's columns travel to the engine worker and
back. When a shard's partitions are all written, ``finish_shard`` writes its
videos table on a worker and returns its counts, which are all the client keeps
of it. The scheduler's task count and the client's memory stay flat as the
input grows.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
from distributed import Client, as_completed

from daskcap.storage import is_output_error
from daskcap.engines.base import EngineUnavailable
from daskcap.engines.host import ENGINE_TASK_SLOTS
from daskcap.run import frames
from daskcap.run import plan as shard_plan
from daskcap.run import tasks
from daskcap.run.cluster import ENGINE_RESOURCE
from daskcap.run.listing import AHEAD, InputListing, KnownShards, Listing, shard_paths
from daskcap.run.progress import Progress

log = logging.getLogger(__name__)

SHARDS_AHEAD = 2  # shards planned ahead of the one whose partitions run


@dataclass
class _Shard:
    number: int
    plan: object  # the future of its ShardPlan
    queue: deque = field(default_factory=deque)  # partitions not yet submitted
    graphs: dict = field(default_factory=dict)  # with models: partition -> its prepare graph
    running: int = 0
    written: list = field(default_factory=list)  # futures of this run's partition indexes
    windows: dict = field(default_factory=dict)  # expected windows per pending partition (progress)
    failures: list = field(default_factory=list)


class StreamRunner:
    """Runs a job's shards on ``client``; ``run`` returns each shard's counts."""

    def __init__(
        self,
        client: Client,
        job,
        *,
        cpu_workers: list[str],
        engine_workers: list[str],
        windows_per_partition: int,
        plan_over: int,
        retry_failed: bool,
        progress: Progress,
        started: float | None = None,
    ):
        self.client = client
        self.job = job
        self.on_cpu = {"workers": cpu_workers or None, "allow_other_workers": not cpu_workers}
        self.load = dict.fromkeys(cpu_workers, 0)  # partitions in flight per CPU worker
        self.windows_per_partition = windows_per_partition
        self.plan_over = plan_over
        self.retry_failed = retry_failed
        self.progress = progress
        n_cpu = max(1, len(cpu_workers) or len(engine_workers))
        # With models, partitions in flight: a few per engine worker (the engines set the pace).
        # Without, Dask's queue hands out a shard's partitions (a few per worker thread).
        self.max_in_flight = max(2, 4 * len(engine_workers)) if job.needs_engine_workers else 2
        # An endpoint's requests go from the first few CPU workers (request workers), each with an
        # equal share of the job-wide bound; enough partitions are in flight to fill every slot
        # while each CPU worker prepares one more.
        self.request_slots: dict[str, int] = {}
        self.request_workers: dict[str, list[str]] = {}
        for role, stage in job.endpoint_stages.items():
            bound = stage.endpoint_max_concurrency
            self.request_workers[role] = cpu_workers[:bound]
            self.request_slots[role] = max(1, bound // max(1, len(self.request_workers[role])))
            self.max_in_flight = max(self.max_in_flight, -(-bound // windows_per_partition) + n_cpu)
        self.probe_pieces = 4 * n_cpu
        self.run_id = uuid.uuid4().hex[:8]  # fresh keys: reused keys keep their old placement
        self.in_flight = 0
        self.most_in_flight = 0
        self.most_tasks = 0  # on the scheduler, sampled about once a second
        self.first_window_s: float | None = None  # since ``started`` (the job's start, time.time())
        self._started = started if started is not None else time.time()
        self._sampled = 0.0

    def _sample_scheduler(self) -> None:
        """The scheduler's task count and, without models, the tasks processing on workers
        (partitions in flight: the rest of a shard's wait in the scheduler's queue), sampled
        about once a second and at the first partition's end."""
        now = time.monotonic()
        if now - self._sampled >= 1.0:
            self._sampled = now
            tasks_held, processing = self.client.run_on_scheduler(_scheduler_load)
            self.most_tasks = max(self.most_tasks, tasks_held)
            if not self.job.needs_engines:
                self.most_in_flight = max(self.most_in_flight, processing)

    def _on(self, worker: str | None) -> dict:
        """Run on ``worker`` when it is there (else anywhere): tasks follow the client's
        choice, not the data they read, or every task of a shard would go to the worker
        that holds its plan while the others wait."""
        return {"workers": [worker], "allow_other_workers": True} if worker else self.on_cpu

    def _least_loaded(self) -> str | None:
        return min(self.load, key=self.load.get) if self.load else None

    def _key(self, *parts) -> str:
        return "-".join(["daskcap", *map(str, parts), self.run_id])

    # --- shards ----------------------------------------------------------------------------------

    def _plan(self, number: int, paths: pd.DataFrame | Listing, saved: bool):
        """The future of shard ``number``'s plan: probed and planned, or loaded when an earlier
        run saved it. ``paths``: the shard's paths (a dry run lists in the client), or the
        saved listing its worker reads them from."""
        job, ahead = self.job, {"priority": AHEAD, **self.on_cpu}
        if saved:
            return self.client.submit(shard_plan.load_shard_plan, number, job, self.windows_per_partition, self.plan_over,
                                      self.retry_failed, key=self._key("plan", number), pure=False, **ahead)
        if isinstance(paths, pd.DataFrame):
            count = len(paths)
        else:
            count = paths.size(number)
            paths = self.client.submit(shard_paths, job.writer.output_path, paths.ranges(number), key=self._key("paths", number),
                                       pure=False, **ahead)
        graph = frames.plan_graph(number, frames.shard_paths_frame(paths, count, self.probe_pieces), job, self.windows_per_partition,
                                  self.plan_over)
        return self.client.compute(graph, **ahead)

    def _submit_windows(self, shard: _Shard, partitions: list[int]) -> list:
        """Without models: the futures of the shard's partitions, prepared and written, in one
        compute. No worker is named, so Dask queues them and hands out a few at a time."""
        written = frames.windows_frame(shard.plan, partitions, self.job, write=True)
        return self.client.compute(frames.partitions_of(written))

    def _submit_partition(self, shard: _Shard, partition: int, worker: str | None):
        """With models: one partition prepared on ``worker``, captioned (and enhanced) on an
        engine worker, written back on ``worker``."""
        job, submit, on = self.job, self.client.submit, self._on(worker)
        # The plan is copied once to each worker that prepares a partition of its shard.
        prepared = self.client.compute(shard.graphs.pop(partition), optimize_graph=False, **on)
        # Only the model's columns travel to the engine worker and back; the rest stays put.
        with_mp4 = job.caption is not None and job.caption.endpoint is not None and job.caption.endpoint_video == "mp4"
        future = submit(tasks.model_inputs, prepared, with_mp4, key=self._key("inputs", shard.number, partition), pure=False, **on)
        for role, stage, task in (("caption", job.caption, tasks.caption_task), ("enhance", job.enhance, tasks.enhance_task)):
            if stage is not None:
                future = submit(task, future, stage, self.request_slots.get(role), key=self._key(role, shard.number, partition),
                                pure=False, **self._model_placement(role, worker))
        return submit(tasks.write_captioned_task, prepared, future, job, key=self._key("write", shard.number, partition), pure=False, **on)

    def _model_placement(self, role: str, worker: str | None) -> dict:
        """Where a model stage's task runs: on a share of an engine worker's one GPU (a few
        model tasks run there at once and their requests share the engine's calls,
        engines/host.py); for an endpoint, on a request worker (the partition's own when it is
        one), which holds no GPU."""
        if role not in self.request_workers:
            return {"resources": {ENGINE_RESOURCE: 1 / ENGINE_TASK_SLOTS}}
        chosen = self.request_workers[role]
        if not chosen:
            return self.on_cpu
        return self._on(worker if worker in chosen else min(chosen, key=lambda w: self.load.get(w, 0)))

    # --- the loop ----------------------------------------------------------------------------------

    def run(self, shards: InputListing | KnownShards, finished_of: Callable[[int], dict | None], saved_plan: Callable[[int], bool]) -> list[dict]:
        """Each shard's counts, in shard order. ``shards``: the listing under way, or the
        shards known already; ``finished_of(n)``: shard n's counts when an earlier run
        finished it; ``saved_plan(n)``: whether an earlier run saved its plan."""
        stats: dict[int, dict] = {}
        next_shard = 0
        planning: dict[str, int] = {}  # outline future key -> shard
        active: dict[int, _Shard] = {}
        roles: dict[str, tuple] = {}  # future key -> ("outline" | "partition" | "finish", shard, partition, CPU worker)
        events = as_completed()

        def plan_ahead() -> None:
            nonlocal next_shard

            def waiting(shard: _Shard) -> bool:
                """Windows of the shard wait: queued here (with models) or on the scheduler (without)."""
                return bool(shard.queue) if self.job.needs_engines else shard.running > 0

            while next_shard < shards.ready() and len(planning) + sum(map(waiting, active.values())) < SHARDS_AHEAD:
                number, next_shard = next_shard, next_shard + 1
                finished = finished_of(number)
                if finished is not None and not (self.retry_failed and _has_failures(finished)):
                    stats[number] = finished
                    continue
                saved = saved_plan(number)
                plan = self._plan(number, None if saved else shards.paths(number), saved)
                outline = self.client.submit(shard_plan.shard_outline, plan, self.job.prepare, key=self._key("outline", number), pure=False,
                                             priority=AHEAD)
                active[number] = _Shard(number, plan)
                roles[outline.key] = ("outline", number, None, None)
                planning[outline.key] = number
                events.add(outline)

        def fill() -> None:
            for shard in sorted(active.values(), key=lambda s: s.number):
                while shard.queue and self.in_flight < self.max_in_flight:
                    partition = shard.queue.popleft()
                    worker = self._least_loaded()
                    future = self._submit_partition(shard, partition, worker)
                    if worker:
                        self.load[worker] += 1
                    roles[future.key] = ("partition", shard.number, partition, worker)
                    shard.running += 1
                    self.in_flight += 1
                    self.most_in_flight = max(self.most_in_flight, self.in_flight)
                    events.add(future)

        def finish(shard: _Shard) -> None:
            future = self.client.submit(shard_plan.finish_shard, shard.plan, self.job, shard.failures, *shard.written,
                                        key=self._key("finish", shard.number), pure=False, priority=AHEAD, **self.on_cpu)
            roles[future.key] = ("finish", shard.number, None, None)
            events.add(future)

        def advance() -> None:
            """Plan the next shards, list on if the known ones run short, submit what slots allow."""
            plan_ahead()
            events.update(shards.follow(next_shard))
            fill()

        events.update(shards.start())
        advance()
        for future in events:
            if shards.owns(future):  # a piece of the input listed
                events.update(shards.on_done(future))
                advance()
                continue
            if future.key not in roles:  # a piece past the video limit, cancelled
                continue
            role, number, partition, worker = roles.pop(future.key)
            shard = active.get(number)
            if role == "outline":
                del planning[future.key]
                if future.status == "error":
                    raise future.exception()  # a shard that cannot be planned is a bug: stop with it
                outline = future.result()
                self.progress.grow("probed", outline["videos"])
                self.progress.step("probed", outline["videos"])
                shard.windows = outline["windows"]
                self.progress.grow("windows", sum(shard.windows.values()))
                pending = outline["pending"]
                if not pending:
                    finish(shard)
                elif self.job.needs_engines:
                    shard.graphs = dict(zip(pending, frames.per_partition(frames.windows_frame(shard.plan, pending, self.job, write=False)), strict=True))
                    shard.queue.extend(pending)
                else:
                    for partition, written in zip(pending, self._submit_windows(shard, pending), strict=True):
                        roles[written.key] = ("partition", number, partition, None)
                        events.add(written)
                    shard.running = len(pending)
            elif role == "partition":
                shard.running -= 1
                if self.job.needs_engines:  # submitted one by one (without models, all at once)
                    self.in_flight -= 1
                if worker in self.load:
                    self.load[worker] -= 1
                self.progress.step("windows", shard.windows.get(partition, 0))
                if future.status == "error":
                    error = future.exception()
                    if isinstance(error, EngineUnavailable) or is_output_error(error):
                        raise error  # every partition would fail the same way: stop the job with it
                    log.error("shard %d partition %d failed: %r", number, partition, error)
                    shard.failures.append({"partition": partition, "error": repr(error)})
                else:
                    shard.written.append(future)  # its index stays on the worker until the shard finishes
                    if self.first_window_s is None:
                        self.first_window_s = round(time.time() - self._started, 3)
                        self._sampled = float("-inf")  # sample now: a short job's partitions are in flight
                if not shard.queue and not shard.running:
                    finish(shard)
            else:  # finish
                if future.status == "error":
                    raise future.exception()
                stats[number] = future.result()
                del active[number]
            advance()
            self._sample_scheduler()
        return [stats[n] for n in range(shards.ready())]



def _scheduler_load(dask_scheduler) -> tuple[int, int]:
    """(tasks held, window partitions processing on workers)."""
    processing = sum(
        1 for worker in dask_scheduler.workers.values() for task in worker.processing
        if isinstance(task.key, tuple) and str(task.key[0]).startswith(frames.WINDOWS_LABEL)
    )
    return len(dask_scheduler.tasks), processing


def _has_failures(stats: dict) -> bool:
    ok = "ok"
    return any(status != ok for status in stats["videos"]["by_status"]) or any(status != ok for status in stats["windows"]["by_status"])
