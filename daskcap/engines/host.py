"""Persistent engines on engine workers: one WorkerPlugin per worker process.

An engine is built on the first task that needs it and then serves every
partition the worker receives, for this job and (on a long-lived cluster)
the next ones with the same configuration. Counters feed summary.json.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

from distributed import WorkerPlugin, get_worker

from daskcap.engines.base import Engine, EngineConfig, build_engine

log = logging.getLogger(__name__)

PLUGIN_NAME = "daskcap-engines"


class EngineHost(WorkerPlugin):
    """Holds this worker's engines, keyed by their full configuration."""

    name = PLUGIN_NAME

    def __init__(self) -> None:
        self.engines: dict[EngineConfig, Engine] = {}
        self.model_loads: Counter = Counter()
        self.counters: Counter = Counter()
        self._lock = threading.Lock()

    def setup(self, worker) -> None:
        self.worker_address = worker.address

    def teardown(self, worker) -> None:
        for engine in self.engines.values():
            engine.close()
        self.engines.clear()

    def engine(self, config: EngineConfig) -> Engine:
        with self._lock:
            if config not in self.engines:
                log.info("loading %s (%s engine)", config.model, config.backend)
                self.engines[config] = build_engine(config)
                self.model_loads[config.model] += 1
            return self.engines[config]

    def rebuild(self, config: EngineConfig) -> Engine:
        """Drop a failed engine and build it again."""
        with self._lock:
            broken = self.engines.pop(config, None)
        if broken is not None:
            try:
                broken.close()
            except Exception:  # noqa: BLE001 (a broken engine may fail to close; we replace it anyway)
                log.exception("closing a failed engine")
        return self.engine(config)

    def handle(self, config: EngineConfig) -> EngineHandle:
        return EngineHandle(self, config)

    def count(self, **amounts: int) -> None:
        self.counters.update(amounts)

    def stats(self) -> dict:
        return {"model_loads": dict(self.model_loads), **dict(self.counters)}


class EngineHandle:
    """What a model stage holds: its engine, and a way to rebuild it once it fails."""

    def __init__(self, host: EngineHost, config: EngineConfig):
        self.host, self.config = host, config

    def get(self) -> Engine:
        return self.host.engine(self.config)

    def rebuild(self) -> Engine:
        return self.host.rebuild(self.config)


def current_host() -> EngineHost:
    """The EngineHost of the worker running this task."""
    worker = get_worker()
    host = worker.plugins.get(PLUGIN_NAME)
    if host is None:  # the client registers it; tolerate a worker that joined later
        host = EngineHost()
        host.setup(worker)
        worker.plugins[PLUGIN_NAME] = host
    return host


def worker_stats(dask_worker) -> dict:
    """For ``client.run``: this worker's engine counters (empty when it has none)."""
    host = dask_worker.plugins.get(PLUGIN_NAME)
    return host.stats() if host is not None else {"model_loads": {}}
