"""What one stage call costs its process: wall seconds, CPU seconds, peak memory.

CPU time is the whole process's (decoder and encoder threads included), so it
is the stage's own when the worker runs one task at a time, as daskcap's do.
Peak RSS is Linux's high-water mark, reset before each call
(``/proc/self/clear_refs``); where that is not possible it is the process's
peak so far, still an upper bound.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

_process_peak = 0  # highest peak seen by any call in this process


@dataclass
class Usage:
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss: int = 0  # bytes


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _read_peak() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource  # not Linux: the lifetime peak (kilobytes on Linux, bytes on macOS)

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@contextlib.contextmanager
def measure() -> Iterator[Usage]:
    """``with measure() as usage: ...`` fills ``usage`` when the block ends."""
    global _process_peak
    _reset_peak()
    usage = Usage()
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield usage
    finally:
        usage.wall_s = time.perf_counter() - wall
        usage.cpu_s = time.process_time() - cpu
        usage.peak_rss = _read_peak()
        _process_peak = max(_process_peak, usage.peak_rss)


def process_peak_rss() -> int:
    """The highest peak RSS any measured call saw in this process (bytes)."""
    return max(_process_peak, _read_peak())
