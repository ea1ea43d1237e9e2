"""Where a job runs: an embedded cluster started here (CPU workers, plus engine workers
pinned to GPUs the way dask-cuda pins them) or an existing one, checked before any work."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from distributed import Client, Scheduler, SpecCluster

from daskcap.engines.base import visible_gpus
from daskcap.engines.host import ENGINE_TASK_SLOTS
from daskcap.run.job import ClusterOptions, UsageError, is_loopback
from daskcap.run.worker_process import WorkerProcess

log = logging.getLogger(__name__)

ENGINE_RESOURCE = "GPU"  # what engine workers advertise; model tasks ask for a share of one

# Packages whose versions must agree between this client and every worker:
# the rows and graphs they exchange are pickled pandas/pyarrow/dask objects.
_MATCHING_PACKAGES = ["daskcap", "pandas", "pyarrow", "av", "numpy"]


def engine_worker_options(index: int, engine_workers: int, gpus: list[str]) -> dict:
    """Options of embedded engine worker ``index``, pinned to a GPU the way dask-cuda pins its workers.

    Its GPU comes first in CUDA_VISIBLE_DEVICES (several engine workers per GPU go round
    the GPUs), bound to the GPU's CPUs as dask-cuda's CPU-affinity plugin binds them when
    dask-cuda is installed. The host memory limit is the machine's over the engine workers,
    as dask-cuda sets it: the default share of one core would have the nanny kill a worker
    that loads a 7B model. The worker is non-daemonic (vLLM starts its own engine process,
    which a daemonic process may not do), and no CUDA context is made before the engine is
    built (vLLM must be the first to make one).
    """
    from distributed.system import MEMORY_LIMIT

    # Several model tasks at once: their requests share the engine's batches (engines/host.py).
    options: dict = {
        "resources": {ENGINE_RESOURCE: 1}, "memory_limit": MEMORY_LIMIT // engine_workers,
        # vLLM logs every start-up step at INFO, from each of its processes, onto the job's
        # console; its warnings and errors still show (set VLLM_LOGGING_LEVEL to see more).
        "env": {} if "VLLM_LOGGING_LEVEL" in os.environ else {"VLLM_LOGGING_LEVEL": "WARNING"},
        "nthreads": ENGINE_TASK_SLOTS, "config": {"distributed": {"worker": {"daemon": False}}},
    }
    if not gpus:
        return options
    first = index % len(gpus)
    options["env"]["CUDA_VISIBLE_DEVICES"] = ",".join(gpus[first:] + gpus[:first])
    try:
        from dask_cuda.utils import get_cpu_affinity
    except ImportError:
        log.warning(
            "dask-cuda is not installed: engine workers are plain Dask workers pinned by CUDA_VISIBLE_DEVICES, "
            "without its CPU affinity (pip install -e '.[gpu]')"
        )
        return options
    device = gpus[first]
    options["cpu_affinity"] = [int(cpu) for cpu in get_cpu_affinity(int(device) if device.isdigit() else device)]
    return options


def warn_if_open(host: str, dashboard_address: str) -> None:
    """A warning for each embedded-cluster listener opened beyond loopback (it has no TLS)."""
    dashboard_host = dashboard_address.rpartition(":")[0]
    for what, where in (("scheduler and workers listen", host), ("dashboard listens", dashboard_host)):
        if not is_loopback(where):
            log.warning(
                "the embedded cluster's %s on %s without TLS: anyone who reaches that address can run code "
                "on this machine (the dashboard shows the job); keep it on 127.0.0.1 unless the network is yours",
                what, where or "every interface",
            )


@contextlib.contextmanager
def embedded_cluster(options: ClusterOptions, needs_engines: bool) -> Iterator[SpecCluster]:
    """A cluster on this machine: the scheduler in this process, CPU workers, plus engine workers when models run.

    Every worker is a process of its own (``worker_process``), not a multiprocessing child
    of this one, so the user's ``__main__`` is never imported there. Everything listens on
    loopback only unless ``options.listen_host`` / ``options.dashboard_address`` say otherwise:
    a scheduler port runs whatever code it is sent. ``dashboard_address`` is the scheduler's
    dashboard; the workers' own dashboards listen on ``listen_host``, any port.
    """
    n_workers = options.n_workers or os.cpu_count() or 1
    host = options.listen_host
    dashboard = options.dashboard_address or f"{host}:0"
    warn_if_open(host, dashboard)
    local = {"host": host, "dashboard_address": f"{host}:0", "silence_logs": logging.ERROR, "preload": ["daskcap.run.worker_logging"]}
    workers = {f"cpu-{i}": {"cls": WorkerProcess, "options": {**local, "nthreads": 1}} for i in range(n_workers)}
    if needs_engines:
        gpus = visible_gpus()
        engine_workers = options.engine_workers or max(1, len(gpus))
        for i in range(engine_workers):
            workers[f"engine-{i}"] = {"cls": WorkerProcess, "options": {**local, **engine_worker_options(i, engine_workers, gpus)}}
    with SpecCluster(
        scheduler={"cls": Scheduler, "options": {"host": host, "dashboard_address": dashboard}},
        workers=workers,
        silence_logs=logging.ERROR,
        name="daskcap",
    ) as cluster:
        yield cluster


@contextlib.contextmanager
def connect(options: ClusterOptions, needs_engines: bool = False) -> Iterator[Client]:
    """A client to ``options.scheduler``, or to a cluster started here."""
    if options.scheduler:
        with _client(options) as client:
            yield client
        return
    with embedded_cluster(options, needs_engines) as cluster, Client(cluster) as client:
        client.wait_for_workers(len(cluster.worker_spec))
        yield client


def security(options: ClusterOptions):
    """The TLS settings for ``options.scheduler``: the --tls-* files, else Dask's own
    configuration (``distributed.comm.tls``); a tls:// address with neither is refused."""
    from distributed.security import Security

    if options.tls_ca_file:
        for path in (options.tls_ca_file, options.tls_cert, options.tls_key):
            if not os.path.isfile(path):
                raise UsageError(f"TLS file not found: {path}")
        return Security(tls_ca_file=options.tls_ca_file, tls_client_cert=options.tls_cert, tls_client_key=options.tls_key,
                        require_encryption=True)
    configured = Security()
    if options.scheduler.startswith("tls://") and not configured.tls_ca_file:
        raise UsageError(
            f"the scheduler {options.scheduler} speaks TLS: pass --tls-ca-file, --tls-cert and --tls-key "
            "(cluster/local.sh --tls writes them to DIR/tls), or set Dask's distributed.comm.tls configuration"
        )
    return configured


@contextlib.contextmanager
def _client(options: ClusterOptions) -> Iterator[Client]:
    try:
        client = Client(options.scheduler, security=security(options))
    except (OSError, TimeoutError) as exc:  # CommClosedError is an OSError
        hint = ("a TLS cluster (cluster/local.sh --tls) takes a tls:// address and --tls-ca-file/--tls-cert/--tls-key; "
                if options.scheduler.startswith("tcp://") or "://" not in options.scheduler else
                "check that the certificates are the cluster's; ")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot connect to the scheduler at {options.scheduler} ({first}): {hint}or check the address") from None
    with client:
        yield client


def workers_by_kind(client: Client) -> tuple[list[str], list[str]]:
    """(CPU workers, engine workers) by the resources they advertise."""
    cpu, engine = [], []
    for address, info in client.scheduler_info(n_workers=-1)["workers"].items():
        (engine if info.get("resources", {}).get(ENGINE_RESOURCE) else cpu).append(address)
    return sorted(cpu), sorted(engine)


def check_cluster(client: Client, options: ClusterOptions, needs_engines: bool) -> list[str]:
    """Problems that would break a job on this cluster, found before any work."""
    problems = []
    cpu, engines = workers_by_kind(client)
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
