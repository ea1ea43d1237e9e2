"""Stage timing: each partition's frame carries, in its attrs, the wall and CPU seconds
and peak memory of every stage it went through; the shard's finish adds them up
for ``summary.json``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from daskcap import schema
from daskcap.meter import measure

STAGE_SECONDS = schema.STAGE_SECONDS
STAGE_USAGE = "daskcap_stage_usage"  # attrs: stage -> [CPU seconds, peak RSS bytes]


def timed(frame: pd.DataFrame, stage: str, function: Callable, params: Any) -> pd.DataFrame:
    """Run one stage on a partition, adding its seconds to the frame's attrs.

    A stage that does another stage's work on the way (prepare builds the
    previews) reports those seconds in its result's attrs: they go to that stage.
    """
    seconds = dict(frame.attrs.get(STAGE_SECONDS, {}))
    usage = {name: list(value) for name, value in frame.attrs.get(STAGE_USAGE, {}).items()}
    with measure() as used:
        result = function(frame, params)
    wall, cpu = used.wall_s, used.cpu_s
    for inner, (inner_wall, inner_cpu) in result.attrs.get(schema.LENT_SECONDS, {}).items():
        seconds[inner] = seconds.get(inner, 0.0) + inner_wall
        add_usage(usage, inner, inner_cpu, used.peak_rss)
        wall, cpu = wall - inner_wall, cpu - inner_cpu
    seconds[stage] = seconds.get(stage, 0.0) + wall
    add_usage(usage, stage, cpu, used.peak_rss)
    result.attrs = {**frame.attrs, STAGE_SECONDS: seconds, STAGE_USAGE: usage}
    return result


def add_usage(usage: dict[str, list], stage: str, cpu_s: float, peak_rss: int) -> None:
    """CPU seconds add up; peak RSS is the highest seen."""
    total = usage.setdefault(stage, [0.0, 0])
    total[0] += cpu_s
    total[1] = max(total[1], peak_rss)


def sum_seconds(frames, into: dict[str, float], usage: dict[str, list] | None = None) -> None:
    """Add up frames' stage seconds (and CPU seconds and peak RSS into ``usage``)."""
    for frame in frames:
        for stage, seconds in frame.attrs.get(STAGE_SECONDS, {}).items():
            into[stage] = into.get(stage, 0.0) + seconds
        for stage, (cpu_s, peak_rss) in frame.attrs.get(STAGE_USAGE, {}).items():
            if usage is not None:
                add_usage(usage, stage, cpu_s, peak_rss)
