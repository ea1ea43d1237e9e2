"""Opening inputs on any fsspec filesystem for PyAV."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import av
import fsspec
from fsspec.core import url_to_fs


def is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def local_path(path: str) -> str:
    return path[len("file://") :] if path.startswith("file://") else path


@contextlib.contextmanager
def open_container(path: str) -> Iterator[av.container.InputContainer]:
    """Open ``path`` (local path or fsspec URL) for demuxing.

    Local files go to FFmpeg by name (its own buffered, seekable I/O); remote
    ones through a seekable fsspec file object.
    """
    # Tags in a legacy encoding (latin-1 titles) must not make a video unreadable. A listed
    # file is read by itself: FFmpeg may open no other protocol (no network), and a playlist
    # format, which names other files to read, is refused.
    if is_local(path):
        with av.open(local_path(path), "r", metadata_errors="replace", container_options=_ONLY_FILES) as container:
            _refuse_playlists(container, path)
            yield container
        return
    with fsspec.open(path, "rb") as handle, av.open(handle, "r", metadata_errors="replace", container_options=_NO_PROTOCOL) as container:
        _refuse_playlists(container, path)
        yield container


_ONLY_FILES = {"protocol_whitelist": "file"}
_NO_PROTOCOL = {"protocol_whitelist": "daskcap-none"}  # read through the file object only: a name no protocol has
# Demuxers that read other files or streams named inside the one opened.
_PLAYLIST_FORMATS = {"hls", "applehttp", "concat", "dash", "mpd", "image2", "tee", "ffmetadata"}


def _refuse_playlists(container, path: str) -> None:
    names = set((container.format.name or "").split(","))
    if names & _PLAYLIST_FORMATS:
        raise ValueError(f"{path} is a {container.format.name} playlist, which names other files to read; list the videos themselves")


def file_size(path: str) -> int:
    if is_local(path):
        return os.path.getsize(local_path(path))
    fs, fs_path = url_to_fs(path)
    return int(fs.size(fs_path))
