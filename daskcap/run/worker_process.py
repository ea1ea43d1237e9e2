"""Embedded-cluster workers as processes of their own, never children of the user's script.

Dask's nannies start workers with multiprocessing ``spawn``, which re-imports the parent's
``__main__``: a script that calls ``pipeline.run()`` at module level (as NeMo Curator's
quickstart does, since Ray never re-imports it) would start a cluster in every worker. Here
each worker is a separate ``python -m daskcap.run.worker_process`` process holding a Nanny:
its ``__main__`` is this module, the nanny restarts its worker when it dies, and nothing of
the user's script is imported. The process watches the job's process and closes itself when
that process is gone (killed, not only closed), so no worker outlives its job.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time

import psutil
from distributed.deploy.spec import ProcessInterface

log = logging.getLogger(__name__)

_CLOSE_GRACE_S = 10.0
_WATCH_INTERVAL_S = 0.5


class WorkerProcess(ProcessInterface):
    """A Nanny in a subprocess, as a SpecCluster worker (``{"cls": WorkerProcess, "options": ...}``).

    ``options`` are the Nanny's JSON-able keyword arguments (name, nthreads, resources,
    memory_limit, host, dashboard_address, ...); ``env`` goes to the process (and so to the
    nanny's worker), ``config`` is Dask configuration the process starts with (the job's, as a
    Nanny passes its own to its worker), ``cpu_affinity`` the CPUs the process is bound to.
    """

    def __init__(
        self,
        scheduler: str,
        *,
        name: str,
        env: dict[str, str] | None = None,
        config: dict | None = None,
        cpu_affinity: list[int] | None = None,
        **nanny_options,
    ) -> None:
        super().__init__()
        self.scheduler = scheduler
        self.name = name
        self.nanny_options = {**nanny_options, "name": name}
        self.env = dict(env or {})
        self.config = config or {}
        self.cpu_affinity = cpu_affinity
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        import dask.config

        env = {**os.environ, **self.env}
        # What a Nanny does for its worker: the job's Dask configuration, set in code or files, holds there too.
        env["DASK_INTERNAL_INHERIT_CONFIG"] = dask.config.serialize(dask.config.merge(dask.config.config, self.config))
        command = [
            sys.executable, "-m", "daskcap.run.worker_process", self.scheduler,
            "--parent", str(os.getpid()), "--nanny", json.dumps(self.nanny_options),
        ]
        if self.cpu_affinity:
            command += ["--cpu-affinity", ",".join(map(str, self.cpu_affinity))]
        # Its own session: a Ctrl-C in the terminal reaches the job, which closes its workers in order,
        # rather than every worker at once in the middle of a task.
        self.process = await asyncio.create_subprocess_exec(*command, env=env, start_new_session=True)
        await super().start()

    async def close(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            children = _children(process.pid)
            process.send_signal(signal.SIGTERM)  # the nanny closes its worker, then exits
            try:
                await asyncio.wait_for(process.wait(), _CLOSE_GRACE_S)
            except asyncio.TimeoutError:
                log.warning("worker %s did not stop in %.0f s; killing it", self.name, _CLOSE_GRACE_S)
                process.kill()
                await process.wait()
            _kill(children)  # a worker (or an engine's process) its nanny could not stop
        await super().close()


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _kill(processes: list[psutil.Process]) -> None:
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


def _watch_parent(parent: int) -> None:
    """Close this process when the job's process is gone; kill it and its children if closing hangs."""
    while psutil.pid_exists(parent) and os.getppid() == parent:
        time.sleep(_WATCH_INTERVAL_S)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(_CLOSE_GRACE_S)
    _kill(_children(os.getpid()))
    os._exit(1)


async def _serve(scheduler: str, nanny_options: dict) -> None:
    from distributed import Nanny
    from distributed._signals import wait_for_signals

    async with Nanny(scheduler, **nanny_options) as nanny:
        closing = asyncio.ensure_future(wait_for_signals())
        finished = asyncio.ensure_future(nanny.finished())
        await asyncio.wait([closing, finished], return_when=asyncio.FIRST_COMPLETED)
        await nanny.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m daskcap.run.worker_process")
    parser.add_argument("scheduler")
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--nanny", required=True, help="the Nanny's keyword arguments, as JSON")
    parser.add_argument("--cpu-affinity", default="")
    args = parser.parse_args(argv)
    nanny_options = json.loads(args.nanny)
    # The nanny's own messages too (its silence_logs covers only its worker's), as LocalCluster's silence_logs does.
    logging.getLogger("distributed").setLevel(nanny_options.get("silence_logs") or logging.WARNING)
    if args.cpu_affinity:
        os.sched_setaffinity(0, [int(cpu) for cpu in args.cpu_affinity.split(",")])
    threading.Thread(target=_watch_parent, args=(args.parent,), daemon=True, name="watch-parent").start()
    from distributed.compatibility import asyncio_run
    from distributed.config import get_loop_factory

    asyncio_run(_serve(args.scheduler, nanny_options), loop_factory=get_loop_factory())


if __name__ == "__main__":
    main()
