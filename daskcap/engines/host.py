"""Persistent engines on engine workers: one WorkerPlugin per worker process.

An engine is built on the first task that needs it and then serves every
partition the worker receives, for this job and (on a long-lived cluster)
the next ones with the same configuration. Counters feed summary.json.

An engine worker runs a few model tasks at once (``ENGINE_TASK_SLOTS`` threads);
their requests meet in one queue per engine, and one thread calls the engine
with everything waiting (the transformers engine up to its batch size; vLLM all
of it, for its continuous batching), so the engine is fed across partitions,
not one partition at a time.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable

from distributed import WorkerPlugin, get_worker

from daskcap.engines.base import Engine, EngineConfig, EngineUnavailable, Generation, resolve_backend
from daskcap.engines.factory import build_engine

log = logging.getLogger(__name__)

PLUGIN_NAME = "daskcap-engines"
ENGINE_TASK_SLOTS = 4  # model tasks an engine worker runs at once, their requests batched together
MAX_LOAD_FAILURES = 2  # loads of one model that may fail in a row before the worker gives up on it


class EngineHost(WorkerPlugin):
    """Holds this worker's engines: one per role (caption, enhance).

    A job with the same configuration reuses the loaded engine; a job with a
    different one for the same role replaces it (the old one is closed first,
    so two large models never share the GPU by accident).
    """

    name = PLUGIN_NAME
    # Registered by every job's client (register_plugin): a second registration under the
    # same name is a no-op, so a long-lived worker keeps the engines it has loaded.
    idempotent = True

    def __init__(self) -> None:
        self.engines: dict[str, tuple[EngineConfig, Engine]] = {}
        self.model_loads: Counter = Counter()
        self.model_load_s: Counter = Counter()
        self.counters: Counter = Counter()
        self.load_failures: Counter = Counter()  # per engine config, in a row
        self.backends: dict[str, str] = {}  # role -> the backend that last loaded it ("vllm 0.32.0")
        self.last_load_error = ""
        self._lock = threading.Lock()
        # Engines are not thread-safe (vLLM's LLM.generate is not): one thread per engine
        # (its batcher) makes every call.
        self.batchers: dict[str, _Batcher] = {}

    def __getstate__(self) -> dict:
        return {}  # sent to workers empty: engines, locks and threads are made there

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def setup(self, worker) -> None:
        self.worker_address = worker.address

    def teardown(self, worker) -> None:
        with self._lock:
            for batcher in self.batchers.values():
                batcher.stop()
            self.batchers.clear()
            for role in list(self.engines):
                self._drop(role)

    def serve(self, config: EngineConfig, call, requests: list, alone: bool = False) -> dict:
        """``call(engine, requests)`` through this engine's queue, batched with other tasks'
        requests unless ``alone``; results by request id, or the call's exception. An endpoint
        engine is thread-safe and bounds its own requests in flight: each task calls it directly,
        so no task waits for another's slowest request."""
        if config.endpoint is not None:
            engine = self.engine(config)
            started = time.perf_counter()
            try:
                results = call(engine, requests)
            finally:
                self.count(**{f"{config.role}_endpoint_{name}": n for name, n in engine.drain().items()})
            self.record(config.role, results.values(), time.perf_counter() - started)
            return results
        with self._lock:
            batcher = self.batchers.get(config.role)
            if batcher is None or batcher.config != config:
                if batcher is not None:
                    batcher.stop()
                batcher = self.batchers[config.role] = _Batcher(self, config)
        return batcher.serve(call, requests, alone)

    def _drop(self, role: str) -> None:
        _, engine = self.engines.pop(role)
        try:
            engine.close()
        except Exception:  # noqa: BLE001 (a broken engine may fail to close; it is replaced anyway)
            log.exception("closing the %s engine", role)

    def engine(self, config: EngineConfig) -> Engine:
        with self._lock:
            loaded = self.engines.get(config.role)
            if loaded is not None and loaded[0] == config:
                return loaded[1]
            if loaded is not None:
                log.info("replacing the %s engine (%s) with %s", config.role, loaded[0].model, config.model)
                self._drop(config.role)
            if self.load_failures[config] >= MAX_LOAD_FAILURES:
                raise EngineUnavailable(
                    f"the {config.role} model {config.model} failed to load {self.load_failures[config]} times in a row on this "
                    f"worker; the job stops here (the first error is in the worker's log, the last was: {self.last_load_error})"
                )
            log.info("loading %s (%s engine)", config.model, config.backend)
            started = time.perf_counter()
            try:
                engine = build_engine(config)
            except Exception as exc:
                self.load_failures[config] += 1
                self.last_load_error = f"{type(exc).__name__}: {exc}"
                raise
            self.load_failures[config] = 0
            self.engines[config.role] = (config, engine)
            self.backends[config.role] = engine.describe()
            self.model_loads[config.model] += 1
            self.model_load_s[config.model] += time.perf_counter() - started
            return engine

    def rebuild(self, config: EngineConfig) -> Engine:
        """Drop a failed engine and build it again."""
        with self._lock:
            if config.role in self.engines and self.engines[config.role][0] == config:
                self._drop(config.role)
        return self.engine(config)

    def handle(self, config: EngineConfig) -> EngineHandle:
        return EngineHandle(self, config)

    def count(self, **amounts: int) -> None:
        self.counters.update(amounts)

    def record(self, role: str, generations: Iterable[Generation], seconds: float, tasks: int = 1) -> None:
        """Count one engine call: its generations, their tokens, the seconds it took and the
        tasks whose requests it served together."""
        generations = [g for g in generations if isinstance(g, Generation)]
        self.count(**{
            f"{role}_calls": 1,
            f"{role}_call_tasks": tasks,
            f"{role}_generations": len(generations),
            f"{role}_prompt_tokens": sum(g.prompt_tokens for g in generations),
            f"{role}_output_tokens": sum(g.output_tokens for g in generations),
            f"{role}_engine_s": seconds,
        })

    def stats(self) -> dict:
        return {"model_loads": dict(self.model_loads), "model_load_s": dict(self.model_load_s), "engine_backends": dict(self.backends), **dict(self.counters)}


class EngineHandle:
    """What a model stage holds: its engine, and a way to rebuild it once it fails."""

    def __init__(self, host: EngineHost, config: EngineConfig):
        self.host, self.config = host, config

    def get(self) -> Engine:
        return self.host.engine(self.config)

    def rebuild(self) -> Engine:
        return self.host.rebuild(self.config)

    def serve(self, call, requests: list, alone: bool = False) -> dict:
        return self.host.serve(self.config, call, requests, alone)


class _Ticket:
    """One task's requests waiting for the engine."""

    def __init__(self, call, requests: list, alone: bool):
        self.call, self.requests, self.alone = call, requests, alone
        self.done = threading.Event()
        self.results: dict = {}
        self.error: BaseException | None = None


class _Batcher:
    """The one thread that calls an engine: each call takes every ticket waiting (up to
    the transformers engine's batch size), so concurrent tasks share a batch."""

    def __init__(self, host: EngineHost, config: EngineConfig):
        self.host, self.config = host, config
        self.limit = config.batch_size if resolve_backend(config.backend) == "transformers" else float("inf")
        self.waiting: list[_Ticket] = []
        self.ready = threading.Condition()
        self.stopped = False
        threading.Thread(target=self._loop, name=f"daskcap-{config.role}-engine", daemon=True).start()

    def serve(self, call, requests: list, alone: bool) -> dict:
        ticket = _Ticket(call, requests, alone)
        with self.ready:
            self.waiting.append(ticket)
            self.ready.notify()
        ticket.done.wait()
        if ticket.error is not None:
            raise ticket.error
        return ticket.results

    def stop(self) -> None:
        with self.ready:
            self.stopped = True
            self.ready.notify()

    def _take(self) -> list[_Ticket] | None:
        with self.ready:
            while not self.waiting and not self.stopped:
                self.ready.wait()
            if self.stopped and not self.waiting:
                return None
            batch = [self.waiting.pop(0)]
            size = len(batch[0].requests)
            while not batch[0].alone and self.waiting and not self.waiting[0].alone and size + len(self.waiting[0].requests) <= self.limit:
                size += len(self.waiting[0].requests)
                batch.append(self.waiting.pop(0))
            return batch

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            requests = [request for ticket in batch for request in ticket.requests]
            try:
                engine = self.host.engine(self.config)
                started = time.perf_counter()
                results = batch[0].call(engine, requests)
                self.host.record(self.config.role, results.values(), time.perf_counter() - started, len(batch))
            except BaseException as exc:  # noqa: BLE001 (the waiting tasks get it and decide)
                for ticket in batch:
                    ticket.error = exc
                    ticket.done.set()
                continue
            for ticket in batch:
                ticket.results = {r.request_id: results[r.request_id] for r in ticket.requests if r.request_id in results}
                ticket.done.set()


def current_host() -> EngineHost:
    """The EngineHost of the worker running this task."""
    worker = get_worker()
    host = worker.plugins.get(PLUGIN_NAME)
    if host is None:
        # The client registers it before any model task; a task run some other way
        # (a worker that joined without the registration) makes its own.
        host = EngineHost()
        host.setup(worker)
        worker.plugins[PLUGIN_NAME] = host
    return host


def worker_stats(dask_worker) -> dict:
    """For ``client.run``: this worker's engine counters (empty when it has none) and its GPU."""
    host = dask_worker.plugins.get(PLUGIN_NAME)
    stats = host.stats() if host is not None else {"model_loads": {}}
    return {**stats, **_gpu_stats(dask_worker)}


def _gpu_stats(dask_worker) -> dict:
    """The worker's CUDA_VISIBLE_DEVICES, whether dask-cuda set it up, and, once torch has
    made a CUDA context here, its GPU and peak memory (CUDA is never initialised for this)."""
    stats: dict = {}
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        stats["cuda_visible_devices"] = os.environ["CUDA_VISIBLE_DEVICES"]
        stats["dask_cuda"] = any(type(p).__module__.startswith("dask_cuda") for p in dask_worker.plugins.values())
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        stats["gpu_name"] = torch.cuda.get_device_name()
        stats["gpu_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        stats["gpu_peak_reserved_mb"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
    return stats
