"""Where an export reads (a daskcap output, checked) and writes (a destination that holds
nothing but daskcap's exports, checked), and what the destination remembers so a rerun
redoes only what an interrupted one left unfinished.

A webdataset destination holds ``{prefix}-NNNNNN.tar`` shards, ``{prefix}-stats.json``
(written last: without it the export is unfinished) and ``_daskcap_export/``: ``export.json``
(the settings' hash) and one marker per finished shard (``done/{prefix}-NNNNNN.json``, its
plan digest, samples, bytes and sha256), written after the shard is renamed into place.
A Lance destination is the dataset's folder, with ``_daskcap_export/`` inside it (Lance
reads only its own folders).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass

import pandas as pd
import pyarrow.parquet as pq

from daskcap import schema
from daskcap.training_data.params import ExportParams
from daskcap.run.state import STATE_DIR, ShardState
from daskcap.storage import TEMPORARY_NAME, atomic_write_json, output_fs, parquet_parts, path_relation

EXPORT_DIR = "_daskcap_export"
_PART_SHARD = re.compile(r"part-(\d+)-\d+\.parquet")  # windows/part-SSSSS-NNNNN.parquet: run shard S


class ExportError(ValueError):
    """The export cannot run as asked; the message is one line that says why and what to do."""


@dataclass(frozen=True)
class SourcePart:
    """One windows part of the output: its path under OUTPUT and what identifies its content."""

    relpath: str
    identity: str  # size and modification time (or ETag): a rewritten part is exported again

    @property
    def run_shard(self) -> int:
        match = _PART_SHARD.fullmatch(self.relpath.rsplit("/", 1)[-1])
        return int(match[1]) if match else 0


class Source:
    """A daskcap output to export: its window parts and what its job's configuration says."""

    def __init__(self, output: str):
        self.output = output
        self.fs, self.root = output_fs(output)
        job = f"{self.root}/{STATE_DIR}/job.json"
        if not self.fs.exists(job):
            raise ExportError(f"{output} is not a daskcap output (no {STATE_DIR}/job.json): export reads what `daskcap run` wrote")
        self.config = json.loads(self.fs.cat(job)).get("config", {})

    @property
    def prompt_variant(self) -> str | None:
        """The caption prompt's variant (``custom`` for a prompt of the user's), None without captions."""
        if not self.config.get("caption"):
            return None
        prepare = self.config.get("prepare") or {}
        return "custom" if prepare.get("prompt_text") else prepare.get("prompt_variant")

    def parts(self) -> list[SourcePart]:
        """The output's window parts in name order (shard, then partition); one listing."""
        folder = f"{self.root}/windows"
        infos = self.fs.find(folder, detail=True) if self.fs.exists(folder) else {}
        names = set(parquet_parts(self.fs, folder)) if infos else set()
        parts = []
        for path in sorted(names):
            info = infos[path]
            stamp = info.get("ETag") or info.get("mtime") or info.get("LastModified") or info.get("created")
            parts.append(SourcePart(path[len(self.root.rstrip("/")) + 1 :], f"{info.get('size')}:{stamp}"))
        if not parts:
            raise ExportError(f"{self.output} has no window tables (windows/*.parquet) yet: run `daskcap run` into it first")
        return parts


@functools.lru_cache(maxsize=8)
def displays(output: str, run_shard: int) -> pd.DataFrame:
    """How the run shard's videos are shown (display size by video path), from its saved
    plan, which exists once any of its windows is written (its videos table comes later)."""
    columns = ["video_path", "display_width", "display_height"]
    try:
        videos = ShardState(output, run_shard).load_plan_videos(columns)
    except FileNotFoundError:  # a run from before plans were saved: its videos table
        fs, root = output_fs(output)
        videos = schema.table_to_frame(pq.read_table(f"{root}/videos", columns=columns, filesystem=fs))
    return videos.drop_duplicates("video_path").set_index("video_path")


def read_part(output: str, part: SourcePart, columns: list[str] | None = None) -> pd.DataFrame:
    """One windows part (``columns`` of it), as the stages' frames are typed."""
    fs, root = output_fs(output)
    with fs.open(f"{root}/{part.relpath}", "rb") as handle:
        frame = schema.table_to_frame(pq.read_table(handle, columns=columns))
    frame.attrs.clear()  # the file's metadata, deep-copied by every pandas operation otherwise
    return frame


def check_apart(params: ExportParams) -> None:
    """DEST must not be OUTPUT, lie inside it or hold it: a run's --overwrite would remove
    it, or an export would list its own files."""
    relation = path_relation(params.dest, params.output)
    if relation is not None:
        raise ExportError(f"DEST {params.dest} {relation} the output {params.output}: choose a destination outside the output")


class Destination:
    """The export's destination: its own files, the settings record and the shard markers."""

    def __init__(self, params: ExportParams):
        self.params = params
        self.fs, self.root = output_fs(params.dest)
        self.state = f"{self.root}/{EXPORT_DIR}"
        prefix = re.escape(params.prefix)
        # The files a webdataset export names so; --overwrite removes these and nothing else.
        self.own = re.compile(rf"{prefix}-\d{{6}}\.tar|{prefix}-stats\.json|{EXPORT_DIR}/.+|(?:.*/)?(?:{TEMPORARY_NAME.pattern})")

    def shard_name(self, number: int) -> str:
        return f"{self.params.prefix}-{number:06d}.tar"

    @property
    def stats_path(self) -> str:
        if self.params.format == "lance":
            return f"{self.state}/stats.json"
        return f"{self.root}/{self.params.prefix}-stats.json"

    def files(self) -> list[str]:
        """Every file under DEST, relative to it."""
        if not self.fs.exists(self.root):
            return []
        if not self.fs.isdir(self.root):
            raise ExportError(f"DEST {self.params.dest} is a file, not a folder")
        top = self.root.rstrip("/") + "/"
        return [path[len(top):] for path in self.fs.find(self.root)]

    def check(self) -> list[str]:
        """Refuse a DEST holding anyone else's files, another format's export, or an export
        with other settings (unless ``overwrite``); return its files."""
        params, files = self.params, self.files()
        record = self._read(f"{self.state}/export.json")
        if params.format == "lance":
            if files and record is None:
                raise ExportError(f"DEST {params.dest} holds files daskcap did not export there (no {EXPORT_DIR}/export.json); "
                                  "choose an empty or new folder")
        else:
            other = [name for name in files if not self.own.fullmatch(name)]
            if other:
                shown = ", ".join(other[:3]) + (f" and {len(other) - 3} more" if len(other) > 3 else "")
                raise ExportError(f"DEST {params.dest} holds files daskcap did not write ({shown}); "
                                  "choose an empty or new folder, or move them away")
        if record is not None and record.get("format") != params.format:
            raise ExportError(f"DEST {params.dest} holds a {record.get('format')} export; choose another folder for {params.format}")
        if record is not None and record.get("config_hash") != params.config_hash() and not params.overwrite:
            raise ExportError(f"DEST {params.dest} holds an export with other settings (hash {record.get('config_hash')}, "
                              f"these {params.config_hash()}); pass --overwrite to replace it, or choose another folder")
        return files

    def prepare(self) -> None:
        """``check``, then: with ``overwrite``, remove daskcap's own files; record the settings;
        drop the stats file, so an export stopped from now on reads as unfinished."""
        params, files = self.params, self.check()
        if params.overwrite and files:
            self.remove_own(files)
        self.fs.makedirs(self.root, exist_ok=True)
        atomic_write_json(self.fs, f"{self.state}/export.json", {"format": params.format, "config_hash": params.config_hash(),
                                                                  "output": params.output})
        if self.fs.exists(self.stats_path):
            self.fs.rm(self.stats_path)

    def remove_own(self, files: list[str]) -> None:
        """Remove an earlier export (webdataset: only files named as it names them; Lance: the
        dataset folder daskcap made, which ``prepare`` checked holds its record)."""
        if self.params.format == "lance":
            self.fs.rm(self.root, recursive=True)
            return
        for name in files:
            if self.own.fullmatch(name):
                self.fs.rm(f"{self.root}/{name}")

    def _read(self, path: str) -> dict | None:
        return json.loads(self.fs.cat(path)) if self.fs.exists(path) else None

    # --- shard markers -------------------------------------------------------------------
    def _marker(self, number: int) -> str:
        return f"{self.state}/done/{self.params.prefix}-{number:06d}.json"

    def done(self) -> dict[int, dict]:
        """The markers of finished shards, by shard number (one listing, then one read each)."""
        folder = f"{self.state}/done"
        if not self.fs.exists(folder):
            return {}
        found = {}
        pattern = re.compile(rf"{re.escape(self.params.prefix)}-(\d{{6}})\.json")
        for path in self.fs.ls(folder, detail=False):
            match = pattern.fullmatch(path.rsplit("/", 1)[-1])
            if match:
                found[int(match[1])] = json.loads(self.fs.cat(path))
        return found

    def mark_done(self, number: int, marker: dict) -> None:
        atomic_write_json(self.fs, self._marker(number), marker)

    def remove_shards_from(self, count: int) -> int:
        """Remove shards numbered ``count`` or more (and their markers), left by an earlier,
        larger export of the same output; return how many."""
        pattern = re.compile(rf"{re.escape(self.params.prefix)}-(\d{{6}})\.tar")
        removed = 0
        for name in self.files():
            match = pattern.fullmatch(name)
            if match and int(match[1]) >= count:
                self.fs.rm(f"{self.root}/{name}")
                removed += 1
        for number in self.done():
            if number >= count:
                self.fs.rm(self._marker(number))
        return removed

    def write_stats(self, stats: dict) -> None:
        atomic_write_json(self.fs, self.stats_path, stats)
