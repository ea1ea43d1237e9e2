"""Listing the input in pieces: what the reader's ``input_video_path`` names, cut so
that workers can list it in parallel and no one process holds every path.

``plan_pieces`` runs on the client and costs one small request: a Parquet list's
footer (its row count), one level of a directory or bucket, or nothing for a
glob or a file. ``list_piece`` runs on a worker and returns its piece's paths,
sorted and without duplicates. Read in order, the pieces give:

- a directory or bucket (searched recursively): every file whose name ends in
  one of ``video_extensions``, in sorted path order (a piece holds consecutive
  top-level entries, and a folder's files sort together, so the pieces'
  concatenation is sorted);
- a Parquet list with a ``path`` column: its paths in the list's own order
  (each piece a range of rows; a path listed twice is kept once, where it is
  first listed);
- a glob: the files it matches, sorted; one file: itself.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from daskcap import schema
from daskcap.stages._params import ParamError
from daskcap.stages.read import VideoReaderStage
from daskcap.storage import normalise_video_path

ROWS_PER_PIECE = 100_000  # rows of a Parquet list per piece
FILES_PER_PIECE = 10_000  # top-level files of a directory per piece
FOLDERS_PER_PIECE = 8  # top-level folders of a directory per piece (each searched recursively)


@dataclass(frozen=True)
class Piece:
    """A part of the input: ``rows`` [start, stop) of a Parquet list, ``entries``
    ((path, is_folder), ...) of a directory, a ``glob``, or one ``file``."""

    kind: str
    source: str
    entries: tuple[tuple[str, bool], ...] = ()
    start: int = 0
    stop: int = 0


def _protocol_prefix(fs, original: str) -> str:
    if "://" not in original:
        return ""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return "" if protocol in ("file", "local") else f"{protocol}://"


def _is_parquet_list(source: str, fs, fs_path: str) -> bool:
    return source.endswith(".parquet") or (fs_path.endswith(".parquet") and fs.isdir(fs_path) is False)


def plan_pieces(params: VideoReaderStage) -> list[Piece]:
    """The input's pieces, in order. Raises ``FileNotFoundError`` when the input does not exist,
    ``ParamError`` for a Parquet list without a ``path`` column."""
    source = params.input_video_path
    fs, fs_path = url_to_fs(source)
    if _is_parquet_list(source, fs, fs_path):
        with fs.open(fs_path, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            names, rows = parquet.schema_arrow.names, parquet.metadata.num_rows
        if "path" not in names:
            raise ParamError(f"{source} has no 'path' column (columns: {', '.join(names)})")
        return [Piece("rows", source, start=i, stop=min(rows, i + ROWS_PER_PIECE)) for i in range(0, rows, ROWS_PER_PIECE)]
    if any(ch in fs_path for ch in "*?["):
        return [Piece("glob", source)]
    if fs.isdir(fs_path):
        # A folder sorts as "name/": its files then sit exactly where they fall in the sorted whole.
        entries = sorted(
            (entry["name"].rstrip("/") + ("/" if entry["type"] == "directory" else ""), entry["type"] == "directory")
            for entry in fs.ls(fs_path, detail=True)
            if entry["name"].rstrip("/") != fs_path.rstrip("/")
        )
        fs.invalidate_cache(fs_path)  # a bucket's filesystem would keep every entry's details
        pieces, current, files, folders = [], [], 0, 0
        for name, is_folder in entries:
            if current and (files >= FILES_PER_PIECE or folders >= FOLDERS_PER_PIECE):
                pieces.append(Piece("entries", source, tuple(current)))
                current, files, folders = [], 0, 0
            current.append((name.rstrip("/"), is_folder))
            folders += is_folder
            files += not is_folder
        if current:
            pieces.append(Piece("entries", source, tuple(current)))
        return pieces
    if fs.exists(fs_path):
        return [Piece("file", source)]
    raise FileNotFoundError(f"input not found: {source}")


def list_piece(piece: Piece, params: VideoReaderStage) -> pd.DataFrame:
    """The piece's video paths as a one-column (``video_path``) frame, in input order, once each."""
    fs, fs_path = url_to_fs(piece.source)
    prefix = _protocol_prefix(fs, piece.source)
    keep_order = piece.kind == "rows"
    if piece.kind == "rows":
        with fs.open(fs_path, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            groups, first = [], 0
            for i in range(parquet.metadata.num_row_groups):  # only the row groups the range touches
                rows = parquet.metadata.row_group(i).num_rows
                if first < piece.stop and first + rows > piece.start:
                    groups.append((i, first))
                first += rows
            table = parquet.read_row_groups([i for i, _ in groups], columns=["path"]) if groups else None
        offset = groups[0][1] if groups else 0
        column = table.column("path").to_pylist()[piece.start - offset : piece.stop - offset] if table is not None else []
        # A list is anyone's: its paths lose any ``..`` above their root before daskcap opens or names anything by them.
        paths = [normalise_video_path(p) for p in column if p]
    elif piece.kind == "glob":
        paths = [prefix + p for p in fs.glob(fs_path) if not fs.isdir(p)]
    elif piece.kind == "entries":
        paths = []
        for name, is_folder in piece.entries:
            found = fs.find(name) if is_folder else [name]
            paths += [prefix + p for p in found if p.lower().endswith(params.video_extensions)]
    else:
        paths = [piece.source]
    if "://" not in piece.source:
        paths = [os.path.abspath(p) if "://" not in p else p for p in paths]
    paths = list(dict.fromkeys(paths)) if keep_order else sorted(set(paths))
    return paths_frame(paths)


def paths_frame(paths: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"video_path": pd.Series(paths, dtype=schema.empty_frame(schema.VIDEO_SCHEMA)["video_path"].dtype)})


def _digests(paths: pd.DataFrame) -> np.ndarray:
    return np.array([hashlib.blake2b(path.encode(), digest_size=16).digest() for path in paths["video_path"]], dtype="S16")


def path_digests(paths: pd.DataFrame) -> np.ndarray:
    """16-byte digests of a piece's paths (sorted): how pieces of a Parquet list find the
    paths they share without sending the paths themselves."""
    return np.sort(_digests(paths))


def content_digest(paths: pd.DataFrame) -> str:
    """A digest of a piece's paths, in order: whether a piece lists the same paths as before."""
    digest = hashlib.blake2b(digest_size=16)
    for path in paths["video_path"]:
        digest.update(path.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def drop_digests(paths: pd.DataFrame, digests: np.ndarray) -> pd.DataFrame:
    """``paths`` without those whose digest is in ``digests``."""
    return paths[~np.isin(_digests(paths), digests)].reset_index(drop=True)


def no_videos(params: VideoReaderStage) -> str:
    """The message when the input lists no video."""
    return f"no videos found in {params.input_video_path} (extensions: {' '.join(params.video_extensions)})"


def list_videos(params: VideoReaderStage) -> pd.DataFrame:
    """Every input path in this process (small inputs, dry runs): the pieces listed in
    order, a path listed twice kept once, at most ``video_limit``."""
    pieces = [list_piece(piece, params) for piece in plan_pieces(params)]
    paths = pd.concat(pieces, ignore_index=True).drop_duplicates(ignore_index=True) if pieces else paths_frame([])
    if params.video_limit is not None and params.video_limit > 0:
        paths = paths.iloc[: params.video_limit].reset_index(drop=True)
    return paths
