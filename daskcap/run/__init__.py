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

from daskcap.lazy import lazy_names

# Loaded on first use: importing one module of the package never imports the runner,
# which imports them all.
_HOMES = {
    "ClusterOptions": "daskcap.run.job:ClusterOptions", "Job": "daskcap.run.job:Job", "JobError": "daskcap.run.job:JobError",
    "UsageError": "daskcap.run.job:UsageError", "run_job": "daskcap.run.runner:run_job",
}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_names(__name__, _HOMES)
