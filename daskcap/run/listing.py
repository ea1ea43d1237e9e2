"""The input listed in pieces on workers (``daskcap/stages/listing.py`` says how the
input is cut): each piece's paths are written to ``_daskcap/listing/`` by the worker
that listed them, and the client keeps only each piece's count. Shards are
row ranges of the pieces read in order; the worker that plans a shard reads its
paths from the listing files. The first shards run while later pieces are still
being listed (``InputListing``).

Pieces of a Parquet list also send the 16-byte digests of their paths, so that a
path listed in two pieces is kept only in the first (16 bytes per video on the
client, instead of the path).
"""

from __future__ import annotations

import bisect
import functools
import itertools
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from distributed import Client, Future, as_completed

from daskcap.run.job import Job, UsageError
from daskcap.run.progress import Progress
from daskcap.run.state import OutputState, piece_stem
from daskcap.stages.listing import Piece, content_digest, drop_digests, list_piece, no_videos, path_digests, plan_pieces


# --- on workers --------------------------------------------------------------------------------------


def list_piece_task(number: int, piece: Piece, job: Job) -> tuple[int, np.ndarray | None, str]:
    """List one piece, save its paths; return its count, for a Parquet list its paths'
    digests, and a digest of its content."""
    paths = list_piece(piece, job.reader)
    OutputState(job.writer.output_path).save_piece(number, paths)
    return len(paths), path_digests(paths) if piece.kind == "rows" else None, content_digest(paths)


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


@dataclass
class KnownShards:
    """Shards known before the run starts: a saved listing (a resume), or a dry run's
    frames of paths listed in this process. The same face as ``InputListing``."""

    listing: Listing | None = None
    frames: list[pd.DataFrame] | None = None
    complete: bool = True
    listing_s: float = 0.0

    def start(self) -> list:
        return []

    def owns(self, future) -> bool:
        return False

    def follow(self, shard: int) -> list:
        return []

    def ready(self) -> int:
        return self.listing.shards if self.listing is not None else len(self.frames)

    def paths(self, shard: int) -> pd.DataFrame | Listing:
        return self.listing if self.listing is not None else self.frames[shard]


LIST_AHEAD = 8  # shards known beyond the next one the runner starts (and a piece), before more are listed
AHEAD = 1  # the priority of listing, planning and finishing shards: before any shard's windows


class InputListing:
    """The input listed on workers, a few pieces at a time, while the first shards already run.

    Pieces are listed in any order but become final in order: a piece of a Parquet list
    loses the paths an earlier piece lists (``drop_from_piece``), so its count is final
    once every earlier piece is listed. Shard n can start as soon as the final pieces
    hold its rows (``ready``); the shards are all known when every piece is final, or
    when the final ones hold ``video_limit`` videos (the rest are not listed).

    Listing runs just ahead of need: while the streaming runner says which shard it
    starts next (``follow``), pieces are listed only until the videos known past it
    fill ``LIST_AHEAD`` shards and one more piece, at most ``max_in_flight`` at a
    time (a run that needs the whole listing leaves ``follow`` alone). ``start()``,
    ``follow(shard)`` and ``on_done(future)`` return the futures to wait for.

    The final pieces' counts and content digests are saved as they grow
    (``listing/progress.json``), and the whole listing once known
    (``listing/shards.json``): a run stopped during listing lists again, and refuses
    to go on if a piece it had already used came out different.
    """

    def __init__(self, client: Client, job: Job, videos_per_shard: int, *, workers: dict, max_in_flight: int, progress: Progress):
        self.client, self.job, self.videos_per_shard = client, job, videos_per_shard
        self.workers, self.max_in_flight, self.progress = workers, max_in_flight, progress
        self.state = OutputState(job.writer.output_path)
        limit = job.reader.video_limit
        self.limit = limit if limit is not None and limit > 0 else None
        self.pieces = plan_pieces(job.reader)
        self.before = self.state.listing_progress()  # what a stopped run had made final
        self.listed: dict[int, tuple[int, np.ndarray | None, str]] = {}  # piece -> (count, digests, content) until final
        self.final: list[int] = []  # counts of the final pieces, in order
        self.finals: list[str] = []  # their contents' digests
        self.seen = np.array([], dtype="S16")  # digests of the final pieces' paths (Parquet lists)
        self.next_piece = 0
        self.running: dict[str, tuple[str, int, Future]] = {}  # future key -> ("list" | "drop", piece, future)
        self.need: int | None = None  # the next shard the runner starts (None: list everything)
        self.complete = False
        self.started = time.time()
        self.listing_s = 0.0  # from start() to the whole listing known

    @property
    def videos(self) -> int:
        total = sum(self.final)
        return min(total, self.limit) if self.limit is not None else total

    def listing(self) -> Listing:
        """The final pieces as a listing (complete or not: its first ``ready()`` shards are)."""
        return Listing(list(self.final), self.videos, self.videos_per_shard)

    def ready(self) -> int:
        """How many shards' rows are final."""
        if self.complete:
            return self.listing().shards
        return self.videos // self.videos_per_shard

    def paths(self, shard: int) -> Listing:
        return self.listing()

    def start(self) -> list:
        self.started = time.time()
        self.progress.grow("listed", 0)
        if not self.pieces:  # an empty folder
            self._complete()
        return self._list_next()

    def _unstarted(self) -> int:
        """Videos of final pieces in shards the runner has not started."""
        return self.videos - min(self.videos, self.need * self.videos_per_shard)

    def follow(self, shard: int) -> list:
        """The runner starts shard ``shard`` next: list more pieces if it is close to the end of the known ones."""
        self.need = shard
        return self._list_next()

    def _list_next(self) -> list:
        new = []
        while (self.next_piece < len(self.pieces) and not self._enough() and len(self.running) < self.max_in_flight
               and (self.need is None or self._unstarted() < LIST_AHEAD * self.videos_per_shard + max(self.final, default=0))):
            number, self.next_piece = self.next_piece, self.next_piece + 1
            future = self.client.submit(list_piece_task, number, self.pieces[number], self.job, pure=False, priority=AHEAD, **self.workers)
            self.pieces[number] = None  # a folder's piece holds its entries: the task has them now
            self.running[future.key] = ("list", number, future)
            new.append(future)
        return new

    def _enough(self) -> bool:
        return self.limit is not None and sum(self.final) >= self.limit

    def owns(self, future) -> bool:
        """Whether ``future`` is one of the listing's (one cancelled at the video limit is not)."""
        return future.key in self.running

    def on_done(self, future) -> list:
        """Take a listing future's result; the futures to wait for next."""
        role, number, _ = self.running.pop(future.key)
        if role == "list":
            self.listed[number] = future.result()
        else:
            count, _, content = self.listed[number]
            self.listed[number] = (future.result(), None, content)
        new = self._advance()
        return new + (self._list_next() if not self.complete else [])

    def _advance(self) -> list:
        """Make the next listed pieces final, in order; start removing repeated paths when one has some."""
        dropping = any(role == "drop" for role, _, _ in self.running.values())  # the next piece's repeated paths
        while not dropping and len(self.final) in self.listed and not self._enough():
            number = len(self.final)
            count, digests, content = self.listed[number]
            if digests is not None:
                again = digests[np.isin(digests, self.seen)]
                self.seen = np.union1d(self.seen, digests)
                self.listed[number] = (count, None, content)
                if len(again):
                    future = self.client.submit(drop_from_piece, number, self.job, again, pure=False, priority=AHEAD, **self.workers)
                    self.running[future.key] = ("drop", number, future)
                    return [future]
            del self.listed[number]
            self._final(number, count, content)
        if self._enough() or (not self.running and len(self.final) == len(self.pieces)):
            self._complete()
        return []

    def _final(self, number: int, count: int, content: str) -> None:
        if number < len(self.before) and self.before[number] != [count, content]:
            raise UsageError(
                f"the input {self.job.reader.input_video_path} changed since the run in {self.job.writer.output_path} was stopped "
                f"while listing it (piece {number} now lists other paths); pass --overwrite to start over"
            )
        self.final.append(count)
        self.finals.append(content)
        shown = min(count, self.limit - (sum(self.final) - count)) if self.limit is not None else count
        self.progress.grow("listed", shown)
        self.progress.step("listed", shown)
        if number >= len(self.before):
            self.state.save_listing_progress([list(pair) for pair in zip(self.final, self.finals, strict=True)])

    def _complete(self) -> None:
        self.client.cancel([future for _, _, future in self.running.values()])  # pieces past the video limit
        self.running.clear()
        if self.videos == 0:
            raise UsageError(no_videos(self.job.reader))
        self.state.save_listing(self.listing().info())
        self.complete = True
        self.listing_s = time.time() - self.started


def list_input(client: Client, job: Job, videos_per_shard: int, *, workers: dict, max_in_flight: int, progress: Progress) -> Listing:
    """List the whole input on workers and save the listing (no shard run meanwhile)."""
    lister = InputListing(client, job, videos_per_shard, workers=workers, max_in_flight=max_in_flight, progress=progress)
    running = as_completed(lister.start())
    for future in running:
        running.update(lister.on_done(future))
    return lister.listing()
