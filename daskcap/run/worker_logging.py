"""Preloaded in the embedded cluster's workers: their log leaves a failed task to the job.

A task that fails is reported by the job itself (a failed partition's videos become
``task_failed`` rows; a full disk or a read-only output ends the job in one line), so the
worker's own "Compute Failed" record, a traceback on the user's terminal, is dropped there.
"""

from __future__ import annotations

import logging


class _TaskFailuresToTheJob(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Compute Failed")


def dask_setup(worker) -> None:  # noqa: ARG001 (Dask's preload hook)
    logging.getLogger("distributed.worker").addFilter(_TaskFailuresToTheJob())
