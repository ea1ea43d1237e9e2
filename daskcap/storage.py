"""Atomic writes to any fsspec filesystem: write a temporary name, then rename."""

from __future__ import annotations

import contextlib
import errno
import io
import posixpath
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec import AbstractFileSystem
from fsspec.core import url_to_fs


def output_fs(output_path: str) -> tuple[AbstractFileSystem, str]:
    """The filesystem and root path of an output location (local or URL)."""
    return url_to_fs(output_path)


# A file being written is ``.<name>.<32 hex>.tmp`` beside its final name, renamed into place
# when whole: no reader's glob (``*.parquet``, ``*.json``) matches it, and the next run
# removes any a failed one left (``remove_temporaries``). Earlier versions named them
# ``.tmp-<32 hex>-<name>``; those are removed too.
TEMPORARY_NAME = re.compile(r"\.[^/]+\.[0-9a-f]{32}\.tmp|\.tmp-[0-9a-f]{32}-[^/]+")


def resolve_dots(path: str) -> str:
    """``path`` with its ``.`` and ``..`` segments resolved, never above its root (as a URL's
    path is: ``/../x`` is ``/x``); other segments, empty ones too, kept as they are."""
    kept: list[str] = []
    segments = path.split("/")
    for segment in segments:
        if segment == "..":
            if len(kept) > 1 or (kept and kept[0] != ""):
                kept.pop()
        elif segment != ".":
            kept.append(segment)
    return "/".join(kept) if kept != [""] else "/"


def normalise_video_path(path: str) -> str:
    """An input path as daskcap opens and names it: local and ``file://`` paths normalised,
    a URL's path without ``..`` above its bucket or host."""
    scheme, sep, rest = path.partition("://")
    if not sep:
        return posixpath.normpath(path) if path else path
    if scheme == "file":
        return f"file://{posixpath.normpath(rest) if rest else rest}"
    host, slash, key = rest.partition("/")
    return f"{scheme}://{host}{slash}{resolve_dots(key).lstrip('/') if slash else ''}"


class OutsideOutput(ValueError):
    """A name that would put a file outside the output."""


def under_root(root: str, relpath: str) -> str:
    """``root/relpath``, checked to stay under ``root``: every file daskcap writes is named so."""
    path = f"{root.rstrip('/')}/{relpath}"
    if relpath.startswith("/") or any(segment in ("..", ".") for segment in relpath.split("/")) or "\0" in relpath:
        raise OutsideOutput(f"refusing to write {path!r}: the name {relpath!r} leaves the output {root}")
    return path


def parquet_parts(fs: AbstractFileSystem, folder: str) -> list[str]:
    """The Parquet files under ``folder``, sorted; none when it does not exist."""
    if not fs.exists(folder):
        return []
    return sorted(p for p in fs.find(folder) if p.endswith(".parquet") and not TEMPORARY_NAME.fullmatch(p.rsplit("/", 1)[-1]))


def atomic_write_bytes(fs: AbstractFileSystem, path: str, data: bytes) -> None:
    """Readers see either no file or the whole file, never a partial one; a write that fails
    (a full disk) removes its temporary before the error goes on."""
    with atomic_open(fs, path) as handle:
        handle.write(data)


@contextlib.contextmanager
def atomic_open(fs: AbstractFileSystem, path: str) -> Iterator[Any]:
    """A handle to write ``path`` through, streaming: the bytes go to a temporary name that is
    renamed into place when the block ends; a block that fails leaves no file and no temporary."""
    parent, name = path.rsplit("/", 1)
    fs.makedirs(parent, exist_ok=True)
    temporary = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp"
    try:
        with fs.open(temporary, "wb") as handle:
            yield handle
        fs.mv(temporary, path)
    except BaseException as exc:
        try:
            if fs.exists(temporary):
                fs.rm(temporary)
        except OSError:
            pass  # the next run removes it
        if isinstance(exc, OSError) and exc.errno is not None and not exc.filename:
            raise OSError(exc.errno, exc.strerror, path) from exc  # a write's error names no file: name it
        raise


# What an output that cannot take a file says: a rerun cannot do better until someone acts.
_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


def is_output_error(error: BaseException) -> bool:
    """A full disk, a quota, a permission or a read-only filesystem: the job stops with one line."""
    return isinstance(error, OSError) and error.errno in _OUTPUT_ERRNOS


def output_error_line(error: OSError) -> str:
    """``error`` as one line naming the path and the cause."""
    where = error.filename or "the output"
    return f"cannot write {where}: {error.strerror or error} ({errno.errorcode.get(error.errno, error.errno)})"


def remove_temporaries(fs: AbstractFileSystem, root: str) -> int:
    """Remove the temporaries a failed or killed run left under the output at ``root`` (a
    local one: a bucket keeps no partial object); return how many. Called with the output locked."""
    import os

    if "file" not in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)) or not os.path.isdir(root):
        return 0
    removed = 0
    for folder, _, names in os.walk(root):
        for name in names:
            if TEMPORARY_NAME.fullmatch(name):
                os.remove(os.path.join(folder, name))
                removed += 1
    return removed


def atomic_write_parquet(fs: AbstractFileSystem, path: str, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    atomic_write_bytes(fs, path, buffer.getvalue())


def atomic_write_json(fs: AbstractFileSystem, path: str, payload: Any) -> None:
    atomic_write_bytes(fs, path, (json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n").encode())


def _comparable(path: str, *, glob: bool = False) -> tuple[str, str]:
    """(protocol, absolute path) to compare an input with an output; a glob by the folder it searches."""
    import os

    scheme, sep, rest = path.partition("://")
    if glob and any(ch in path for ch in "*?["):
        head = re.split(r"[*?\[]", path, maxsplit=1)[0]
        path = head.rsplit("/", 1)[0] or "/"
        scheme, sep, rest = path.partition("://")
    if not sep or scheme == "file":
        return "file", os.path.realpath(rest if sep else path)
    return scheme, resolve_dots("/" + rest).rstrip("/")


def overlap_problem(input_path: str, output_path: str) -> str | None:
    """An output that is the input, lies inside it or holds it, as one line; None when apart.

    Either way round, a run would list its own outputs as inputs, and --overwrite could
    remove inputs, so daskcap refuses before any work."""
    relation = path_relation(output_path, input_path, glob=True)
    if relation is None:
        return None
    return (f"output {output_path} {relation} the input {input_path}: a run would read its own outputs as videos and --overwrite "
            "could remove inputs; choose an output outside the input")


def path_relation(path: str, other: str, *, glob: bool = False) -> str | None:
    """How ``path`` stands to ``other`` ("is", "is inside", "holds"), or None when they are
    apart; ``glob``: ``other`` may be a glob, compared by the folder it searches."""
    (scheme, target), (other_scheme, source) = _comparable(path), _comparable(other, glob=glob)
    if scheme != other_scheme:
        return None
    if source == target:
        return "is"
    if target.startswith(source.rstrip("/") + "/"):
        return "is inside"
    if source.startswith(target.rstrip("/") + "/"):
        return "holds"
    return None


def path_problems(input_path: str, output_path: str) -> list[str]:
    """Input that does not exist, output that cannot be written or overlaps the input: one line
    each, found before any work."""
    import os

    problems = []
    overlap = overlap_problem(input_path, output_path)
    if overlap:
        problems.append(overlap)
    try:
        fs, path = url_to_fs(input_path)
        if not (fs.exists(path) or (any(ch in path for ch in "*?[") and fs.glob(path))):
            problems.append(f"input not found: {input_path}")
    except (ImportError, ValueError, OSError) as exc:
        problems.append(f"input {input_path}: {exc}")
    if "://" not in output_path or output_path.startswith("file://"):
        target = os.path.abspath(output_path.removeprefix("file://"))
        existing = target
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            problems.append(f"output {output_path}: {existing} is a file, not a directory")
        elif not os.access(existing, os.W_OK | os.X_OK):
            problems.append(f"output {output_path}: {existing} is not writable")
    else:
        try:
            url_to_fs(output_path)
        except (ImportError, ValueError) as exc:
            problems.append(f"output {output_path}: {exc}")
    return problems


_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


def redact(value):
    """``value`` with credentials embedded in URLs (scheme://user:secret@host) removed, recursively."""
    if isinstance(value, str):
        return _USERINFO.sub(r"\g<scheme>***@", value)
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value
