"""Running a job on Dask, one module per responsibility:

- ``job.py``: what a job is (``Job``, ``ClusterOptions``), its configuration hash, pre-checks;
- ``cluster.py``: the embedded cluster (engine workers pinned to GPUs) or an existing one;
- ``listing.py``: the input listed in pieces on workers; shards as row ranges of the listing;
- ``plan.py``: on workers, a shard probed and packed into partitions, and finished;
- ``tasks.py``: on workers, one partition prepared, captioned, enhanced and written;
- ``stream.py``: the client's loop, shards ahead of need, partitions bounded in flight;
- ``state.py``: what an output remembers for resuming (``_daskcap/``);
- ``timing.py``, ``progress.py``, ``summary.py``: stage seconds, progress bars, ``summary.json``;
- ``runner.py``: ``run_job``, the named steps from the checks to ``summary.json``.
"""

import importlib

__all__ = ["ClusterOptions", "Job", "JobError", "UsageError", "run_job"]
_HOMES = {"ClusterOptions": "job", "Job": "job", "JobError": "job", "UsageError": "job", "run_job": "runner"}


def __getattr__(name: str):
    # Loaded on first use, so that importing one module of the package never imports
    # the runner, which imports them all.
    if name in _HOMES:
        return getattr(importlib.import_module(f"daskcap.run.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'daskcap.run' has no attribute {name!r}")
