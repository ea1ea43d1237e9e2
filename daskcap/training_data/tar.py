"""WebDataset shards: samples into a tar, byte for byte the same on every write.

A sample is ``{key}.mp4``, ``{key}.txt``, ``{key}.json`` and, asked for, ``{key}.webp``,
in that order; every member has mtime 0, owner 0:0, no user or group name, mode 0644
(USTAR), so a shard rewritten after an interruption is identical to the first.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterable

import pandas as pd

BLOCK = tarfile.BLOCKSIZE  # 512: each member is a header block plus its data in whole blocks


def sample_members(sample, with_preview: bool) -> list[tuple[str, bytes]]:
    """(member name, bytes) of one sample row (``samples.samples``' columns)."""
    members = [(f"{sample.key}.mp4", bytes(sample.window_mp4)), (f"{sample.key}.txt", sample.text.encode()),
               (f"{sample.key}.json", sample.metadata)]
    if with_preview:
        if sample.preview_webp is None:
            raise ValueError(f"window {sample.key} has no preview (the run made none): export without --with-preview")
        members.append((f"{sample.key}.webp", bytes(sample.preview_webp)))
    return members


def member_bytes(size: int) -> int:
    """What a member of ``size`` bytes takes in a tar."""
    return BLOCK + -(-size // BLOCK) * BLOCK


def sample_sizes(samples: pd.DataFrame, with_preview: bool) -> list[int]:
    """Each sample's bytes in a shard (its members' headers and padded data)."""
    return [sum(member_bytes(len(data)) for _, data in sample_members(sample, with_preview)) for sample in samples.itertuples(index=False)]


class _Counting:
    """A write-only file that counts and hashes what goes through it."""

    def __init__(self, handle):
        self.handle, self.size, self.digest = handle, 0, hashlib.sha256()

    def write(self, data) -> int:
        self.handle.write(data)
        self.size += len(data)
        self.digest.update(data)
        return len(data)


class ShardWriter:
    """One tar shard written to ``handle`` as samples arrive; ``close()`` returns its counts."""

    def __init__(self, handle, with_preview: bool):
        self.out = _Counting(handle)
        self.tar = tarfile.open(fileobj=self.out, mode="w|", format=tarfile.USTAR_FORMAT)
        self.with_preview = with_preview
        self.samples = 0

    def add(self, samples: Iterable) -> None:
        for sample in samples:
            for name, data in sample_members(sample, self.with_preview):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = len(data), 0, 0o644, 0, 0, "", ""
                self.tar.addfile(info, io.BytesIO(data))
            self.samples += 1

    def close(self) -> dict:
        self.tar.close()
        return {"samples": self.samples, "bytes": self.out.size, "sha256": self.out.digest.hexdigest()}
