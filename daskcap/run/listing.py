"""The input listed in pieces on workers (``daskcap/stages/listing.py`` says how the
input is cut): each piece's paths are written to ``_daskcap/listing/`` by the worker
that listed them, and the client keeps only each piece's count. Shards are then
row ranges of the pieces read in order; the worker that plans a shard reads its
paths from the listing files.

Pieces of a Parquet list also send the 16-byte digests of their paths, so that a
path listed in two pieces is kept only in the first (16 bytes per video on the
client, instead of the path).
"""

from __future__ import annotations

import bisect
import functools
import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd
from distributed import Client, as_completed

from daskcap.run.job import Job, UsageError
from daskcap.run.progress import Progress
from daskcap.run.state import OutputState, piece_stem
from daskcap.stages.listing import Piece, drop_digests, list_piece, no_videos, path_digests, plan_pieces


# --- on workers --------------------------------------------------------------------------------------


def list_piece_task(number: int, piece: Piece, job: Job) -> tuple[int, np.ndarray | None]:
    """List one piece, save its paths; return its count (and, for a Parquet list, its digests)."""
    paths = list_piece(piece, job.reader)
    OutputState(job.writer.output_path).save_piece(number, paths)
    return len(paths), path_digests(paths) if piece.kind == "rows" else None


def drop_from_piece(number: int, job: Job, digests: np.ndarray) -> int:
    """Remove from a saved piece the paths an earlier piece lists; its new count."""
    state = OutputState(job.writer.output_path)
    paths = drop_digests(state.load_piece(number), digests)
    state.save_piece(number, paths)
    return len(paths)


def shard_paths(output_path: str, ranges: list[tuple[str, int, int | None]]) -> pd.DataFrame:
    """A shard's paths, read from the listing files."""
    return OutputState(output_path).load_paths(ranges)


# --- on the client -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Listing:
    """The saved listing: each piece's count and the shard size (``legacy``: a listing
    saved as one file per shard by an earlier daskcap)."""

    pieces: list[int]
    videos: int
    videos_per_shard: int
    legacy_shards: int = 0

    @functools.cached_property
    def _starts(self) -> list[int]:
        """Each piece's first row in the listing read in order (and the total)."""
        return list(itertools.accumulate(self.pieces, initial=0))

    @property
    def shards(self) -> int:
        return self.legacy_shards or -(-self.videos // self.videos_per_shard)

    @classmethod
    def from_info(cls, info: dict) -> Listing:
        if "pieces" not in info:
            return cls([], info["videos"], -(-info["videos"] // max(1, info["shards"])), legacy_shards=info["shards"])
        return cls(info["pieces"], info["videos"], info["videos_per_shard"])

    def info(self) -> dict:
        return {"shards": self.shards, "videos": self.videos, "videos_per_shard": self.videos_per_shard, "pieces": self.pieces}

    def ranges(self, shard: int) -> list[tuple[str, int, int | None]]:
        """Shard ``shard``'s rows as (listing file stem, start, stop) ranges."""
        if self.legacy_shards:
            return [(f"shard-{shard:05d}", 0, None)]
        first, last = shard * self.videos_per_shard, min(self.videos, (shard + 1) * self.videos_per_shard)
        starts = self._starts
        ranges, piece = [], bisect.bisect_right(starts, first) - 1
        while first < last:
            stop = min(last, starts[piece + 1])
            if stop > first:
                ranges.append((piece_stem(piece), first - starts[piece], stop - starts[piece]))
            first, piece = stop, piece + 1
        return ranges

    def size(self, shard: int) -> int:
        """Shard ``shard``'s video count (for a legacy listing, at most this)."""
        if self.legacy_shards:
            return self.videos_per_shard
        return min(self.videos, (shard + 1) * self.videos_per_shard) - shard * self.videos_per_shard


def list_input(client: Client, job: Job, videos_per_shard: int, *, workers: dict, max_in_flight: int, progress: Progress) -> Listing:
    """List the input on workers, a few pieces at a time, and save the listing."""
    pieces = plan_pieces(job.reader)
    counts: list[int] = [0] * len(pieces)
    digests: dict[int, np.ndarray] = {}
    waiting = iter(enumerate(pieces))
    running = as_completed()
    numbers: dict[str, int] = {}

    def submit_next() -> None:
        number, piece = next(waiting, (None, None))
        if piece is not None:
            future = client.submit(list_piece_task, number, piece, job, pure=False, **workers)
            numbers[future.key] = number
            running.add(future)

    for _ in range(max_in_flight):
        submit_next()
    progress.grow("listed", 0)
    for future in running:
        number = numbers.pop(future.key)
        counts[number], found = future.result()
        if found is not None:
            digests[number] = found
        progress.grow("listed", counts[number])
        progress.step("listed", counts[number])
        submit_next()
    for number, drop in _listed_again(digests).items():
        counts[number] = client.submit(drop_from_piece, number, job, drop, pure=False, **workers).result()
    total = sum(counts)
    limit = job.reader.video_limit
    if limit is not None and limit > 0:
        total = min(total, limit)
    if total == 0:
        raise UsageError(no_videos(job.reader))
    listing = Listing(counts, total, videos_per_shard)
    OutputState(job.writer.output_path).save_listing(listing.info())
    return listing


def _listed_again(digests: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Per piece, the digests of paths an earlier piece already lists."""
    if len(digests) < 2:
        return {}
    values, counts = np.unique(np.concatenate(list(digests.values())), return_counts=True)
    repeated = values[counts > 1]
    drops, seen = {}, np.array([], dtype="S16")
    for number in sorted(digests):
        mine = digests[number][np.isin(digests[number], repeated)]
        again = mine[np.isin(mine, seen)]
        if len(again):
            drops[number] = again
        seen = np.union1d(seen, mine)
    return drops
