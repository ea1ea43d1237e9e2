"""Atomic writes to any fsspec filesystem: write a temporary name, then rename."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec import AbstractFileSystem
from fsspec.core import url_to_fs


def output_fs(output_path: str) -> tuple[AbstractFileSystem, str]:
    """The filesystem and root path of an output location (local or URL)."""
    return url_to_fs(output_path)


def atomic_write_bytes(fs: AbstractFileSystem, path: str, data: bytes) -> None:
    """Readers see either no file or the whole file, never a partial one."""
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    temporary = f"{parent}/.tmp-{uuid.uuid4().hex}-{path.rsplit('/', 1)[1]}"
    with fs.open(temporary, "wb") as handle:
        handle.write(data)
    fs.mv(temporary, path)


def atomic_write_parquet(fs: AbstractFileSystem, path: str, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    atomic_write_bytes(fs, path, buffer.getvalue())


def atomic_write_json(fs: AbstractFileSystem, path: str, payload: Any) -> None:
    atomic_write_bytes(fs, path, (json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n").encode())
