"""Which kept windows go into which shard, decided once in the client from each part's
count of kept windows (and, with a size limit, their sizes), so that shard names are
contiguous, deterministic and each written by exactly one task."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ShardSpec:
    """Shard ``number``: the kept rows ``[first, end)`` of each listed windows part, in order."""

    number: int
    slices: tuple[tuple[int, int, int], ...]  # (part index, first kept row, end kept row)

    @property
    def samples(self) -> int:
        return sum(end - first for _, first, end in self.slices)

    def digest(self, part_ids: Sequence[str], config_hash: str) -> str:
        """Changes when the shard's bytes could: its parts' identities, its rows, the settings."""
        slices = [[part_ids[part], first, end] for part, first, end in self.slices]
        return hashlib.sha256(json.dumps([config_hash, slices]).encode()).hexdigest()[:32]


def plan_shards(counts: Sequence[int], samples_per_shard: int, sizes: Sequence[Sequence[int]] | None = None,
                max_bytes: int | None = None) -> list[ShardSpec]:
    """Shards of at most ``samples_per_shard`` samples over the parts' kept rows (``counts``
    per part) in part order; with ``max_bytes`` (and ``sizes``, each kept row's bytes), a
    shard also ends before it would pass ``max_bytes`` (a sample larger than that is a shard
    of its own)."""
    shards: list[ShardSpec] = []
    current: list[tuple[int, int, int]] = []
    held, held_bytes = 0, 0

    def close() -> None:
        nonlocal current, held, held_bytes
        if held:
            shards.append(ShardSpec(len(shards), tuple(current)))
        current, held, held_bytes = [], 0, 0

    def take(part: int, first: int, end: int) -> None:
        nonlocal held
        if current and current[-1][0] == part and current[-1][2] == first:
            current[-1] = (part, current[-1][1], end)
        else:
            current.append((part, first, end))
        held += end - first

    for part, count in enumerate(counts):
        row = 0
        if max_bytes is None:
            while row < count:
                step = min(count - row, samples_per_shard - held)
                take(part, row, row + step)
                row += step
                if held == samples_per_shard:
                    close()
            continue
        for row, size in enumerate(sizes[part]):
            if held and (held == samples_per_shard or held_bytes + size > max_bytes):
                close()
            take(part, row, row + 1)
            held_bytes += size
    close()
    return shards
