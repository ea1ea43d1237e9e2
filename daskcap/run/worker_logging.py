"""Preloaded in the embedded cluster's workers: their log leaves a failed task to the job.

A task that fails is reported by the job itself (a failed partition's videos become
``task_failed`` rows; a full disk or a read-only output ends the job in one line), so the
worker's own "Compute Failed" record, a traceback on the user's terminal, is dropped there;
so is the heartbeat that meets the scheduler already closed when a job stops with its error
while workers are busy (an endpoint's breaker): the embedded workers close with the job.
"""

from __future__ import annotations

import logging


class _TaskFailuresToTheJob(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Compute Failed", "Failed to communicate with scheduler during heartbeat"))


def dask_setup(worker) -> None:  # noqa: ARG001 (Dask's preload hook)
    logging.getLogger("distributed.worker").addFilter(_TaskFailuresToTheJob())
