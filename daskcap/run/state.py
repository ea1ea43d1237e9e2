"""What an output directory remembers about the job writing it, so a rerun resumes.

``OUTPUT/_daskcap/`` holds ``job.json`` (the configuration and its hash), the
listing (the input's paths in the pieces listed on workers, with the count of
each, written once before any work), and
per shard (``shards/NNNNN/``) its plan (probed video rows and clip rows with
their partition number, written by the worker that planned it), one
completion marker per finished partition (``done/part-NNNNN.json``, written
after that partition's files and Parquet part are in place, carrying its
light window index and stage seconds) and, once the shard's videos table is
written, ``finished.json`` with the shard's counts. A rerun with the same
configuration reads ``finished.json`` of each finished shard (one read per
shard, never one per partition), and for the others loads the plan, lists
the markers and computes only the partitions without one; since part files
are named by shard and partition, a partition computed twice (a killed
worker, a killed client) is overwritten, never duplicated.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from daskcap import schema
from daskcap.run.job import UsageError
from daskcap.stages.write import INDEX_COLUMNS, ClipWriterStage
from daskcap.storage import TEMPORARY_NAME, atomic_write_json, atomic_write_parquet, output_fs

STATE_DIR = "_daskcap"
# What a run writes at the top of its output: a folder holding any of them and no
# job.json is not a run to resume.
OUTPUT_ENTRIES = ("windows", "videos", "previews", "clips", "metas", "processed_videos", "processed_clip_chunks", "summary.json", "report", STATE_DIR)


def piece_stem(number: int) -> str:
    return f"piece-{number:05d}"


def _read_json(fs, path: str) -> dict | None:
    """The JSON file at ``path``, or None where there is none."""
    return json.loads(fs.cat(path)) if fs.exists(path) else None


def _read_table(fs, path: str) -> pa.Table:
    return pq.read_table(io.BytesIO(fs.cat(path)))


# Names daskcap gives the files it writes in each of its folders (relative to OUTPUT):
# --overwrite removes these and nothing else. ``_daskcap/`` is daskcap's own throughout.
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_TEMPORARY_NAME = rf"(?:.*/)?(?:{TEMPORARY_NAME.pattern})"  # storage.atomic_write_bytes' (a write cut short)
_OWN_FILES = re.compile("|".join((
    r"summary\.json", rf"{STATE_DIR}/.+", r"windows/part-\d+(?:-\d+)?\.parquet", r"videos/part-\d+\.parquet",
    rf"previews/{_UUID}/\d+_\d+\.webp", rf"clips/{_UUID}\.mp4", rf"metas/v0/{_UUID}\.json", r"report/index\.html",
    r"processed_videos/.+\.json", r"processed_clip_chunks/.+_\d+\.json", _TEMPORARY_NAME,
)))
LOCK_NAME = ".daskcap-lock"  # beside the outputs, not in _daskcap/, which --overwrite removes


def own_files(fs, root: str, entries: list[str]) -> tuple[list[str], list[str]]:
    """(files daskcap names so, other files) under ``entries`` of the output at ``root``."""
    own, other = [], []
    for name in entries:
        path = f"{root}/{name}"
        for found in (fs.find(path) if fs.isdir(path) else [path]):
            relpath = found[len(root.rstrip("/")) + 1 :]
            (own if _OWN_FILES.fullmatch(relpath) else other).append(found)
    return own, other


def prepare_output(writer: ClipWriterStage, overwrite: bool) -> None:
    """Refuse to mix a new run into files that are not a run to resume, unless told to
    overwrite them; --overwrite removes only files named as daskcap names them, and refuses
    when daskcap's folders hold anyone else's."""
    if writer.dry_run:
        return
    fs, root = output_fs(writer.output_path)
    existing = [name for name in OUTPUT_ENTRIES if fs.exists(f"{root}/{name}")]
    if existing and not overwrite:
        raise UsageError(
            f"{writer.output_path} already holds files ({', '.join(existing)}) that are not a daskcap run to resume; "
            "pass --overwrite (Pipeline(..., overwrite=True)) to replace them, or choose another output"
        )
    own, other = own_files(fs, root, existing)
    if other:
        shown = ", ".join(path[len(root.rstrip("/")) + 1 :] for path in other[:3]) + (f" and {len(other) - 3} more" if len(other) > 3 else "")
        raise UsageError(
            f"{writer.output_path} holds files daskcap did not write ({shown}) in its folders; --overwrite removes only "
            "daskcap's own files: move those away, or choose another output"
        )
    for path in own:
        fs.rm(path)
    _remove_empty_folders(fs, root, existing)
    fs.makedirs(root, exist_ok=True)


def _remove_empty_folders(fs, root: str, entries: list[str]) -> None:
    """The folders left empty once daskcap's files are gone (a local output's; a bucket has none)."""
    import os

    if "file" not in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        return
    for name in entries:
        top = os.path.join(root, name)
        if not os.path.isdir(top):
            continue
        for folder, _, _ in sorted(os.walk(top), key=lambda entry: -entry[0].count(os.sep)):
            with contextlib.suppress(OSError):  # not empty: someone's folder
                os.rmdir(folder)


@contextlib.contextmanager
def output_lock(writer: ClipWriterStage) -> Iterator[None]:
    """Hold OUTPUT for one run: a second run into it is refused, saying which run holds it.

    A local output only (an advisory ``flock`` the kernel releases when the holder dies; the
    file is removed when the run ends, and OUTPUT too when the run made it and left it empty); a
    bucket has no lock of this kind, and two runs into one must be kept apart by their user."""
    fs, root = output_fs(writer.output_path)
    if writer.dry_run or "file" not in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        yield
        return
    import fcntl
    import os
    import socket
    import time

    created = not os.path.exists(root)
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, LOCK_NAME)
    handle = open(path, "a+")
    held = False
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise UsageError(
                f"{writer.output_path} is being written by another daskcap run ({holder}); wait for it to end "
                "(a rerun then resumes or finds it done), or choose another output"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        held = True
        yield
    finally:
        if held:  # removed while still held: a run starting now makes a new one
            with contextlib.suppress(OSError):
                os.remove(path)
        handle.close()
        if created:  # a run refused before it wrote anything leaves no folder behind
            with contextlib.suppress(OSError):
                os.rmdir(root)


@dataclass
class OutputState:
    """The ``_daskcap`` folder of one output location."""

    output_path: str

    def __post_init__(self) -> None:
        self.fs, self.root = output_fs(self.output_path)
        self.dir = f"{self.root}/{STATE_DIR}"

    # --- job -----------------------------------------------------------------------------
    def read_job(self) -> dict | None:
        return _read_json(self.fs, f"{self.dir}/job.json")

    def write_job(self, job: dict) -> None:
        atomic_write_json(self.fs, f"{self.dir}/job.json", job)

    # --- listing -------------------------------------------------------------------------
    # The input's paths in pieces (listed on workers), saved once, so a resume works on
    # the same shards: shard n is rows [n * videos_per_shard, (n + 1) * videos_per_shard)
    # of the pieces read in order.
    def has_listing(self) -> bool:
        return self.fs.exists(f"{self.dir}/listing/shards.json")

    def save_piece(self, number: int, paths: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(paths[["video_path"]], preserve_index=False)
        atomic_write_parquet(self.fs, self._listing_file(piece_stem(number)), table)

    def load_piece(self, number: int) -> pd.DataFrame:
        return _read_table(self.fs, self._listing_file(piece_stem(number))).to_pandas()

    def save_listing_progress(self, pieces: list[list]) -> None:
        """[count, content digest] of each piece made final so far (a run stopped while listing)."""
        atomic_write_json(self.fs, f"{self.dir}/listing/progress.json", {"pieces": pieces})

    def listing_progress(self) -> list[list]:
        found = _read_json(self.fs, f"{self.dir}/listing/progress.json")
        return found["pieces"] if found else []

    def save_listing(self, info: dict) -> None:
        """The pieces' counts and the shards cut from them, written last: it marks a complete listing."""
        atomic_write_json(self.fs, f"{self.dir}/listing/shards.json", info)

    def listing_info(self) -> dict:
        return json.loads(self.fs.cat(f"{self.dir}/listing/shards.json"))

    def load_paths(self, ranges: list[tuple[str, int, int | None]]) -> pd.DataFrame:
        """The paths of (file stem, start, stop) row ranges of listing files, in order."""
        parts = [_read_table(self.fs, self._listing_file(stem)).to_pandas().iloc[start:stop] for stem, start, stop in ranges]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"video_path": pd.Series(dtype=object)})

    def _listing_file(self, stem: str) -> str:
        return f"{self.dir}/listing/{stem}.parquet"

    def shard(self, number: int) -> ShardState:
        return ShardState(self.output_path, number)


@dataclass
class ShardState:
    """``_daskcap/shards/NNNNN/`` of one shard: its plan (probed videos, clips with their
    partition number), a completion marker per finished partition, and ``finished.json``
    (the shard's counts) once its videos table is written."""

    output_path: str
    number: int

    def __post_init__(self) -> None:
        self.fs, root = output_fs(self.output_path)
        self.dir = f"{root}/{STATE_DIR}/shards/{self.number:05d}"

    # --- plan ----------------------------------------------------------------------------
    def has_plan(self) -> bool:
        return self.fs.exists(f"{self.dir}/plan/clips.parquet")

    def save_plan(self, videos: pd.DataFrame, clips: pd.DataFrame, probe_seconds: dict[str, float]) -> None:
        """Videos first, clips last: the clips file marks a complete plan."""
        atomic_write_parquet(self.fs, f"{self.dir}/plan/videos.parquet", schema.to_table(videos, schema.VIDEO_SCHEMA))
        atomic_write_json(self.fs, f"{self.dir}/plan/probe.json", {"stage_seconds": probe_seconds})
        partition = pa.array(clips["partition"].astype("int64").to_numpy())
        table = schema.to_table(clips, schema.CLIP_SCHEMA).append_column("partition", partition)
        atomic_write_parquet(self.fs, f"{self.dir}/plan/clips.parquet", table)

    def load_plan_videos(self, columns: list[str]) -> pd.DataFrame:
        """``columns`` of the plan's probed video rows (the export reads how each is shown)."""
        return schema.table_to_frame(pq.read_table(io.BytesIO(self.fs.cat(f"{self.dir}/plan/videos.parquet")), columns=columns))

    def load_plan(self) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
        videos = schema.table_to_frame(_read_table(self.fs, f"{self.dir}/plan/videos.parquet"))
        clips = schema.table_to_frame(_read_table(self.fs, f"{self.dir}/plan/clips.parquet"))
        probe = json.loads(self.fs.cat(f"{self.dir}/plan/probe.json"))
        return videos, clips, probe["stage_seconds"]

    # --- the finished shard --------------------------------------------------------------
    def finished(self) -> dict | None:
        return _read_json(self.fs, f"{self.dir}/finished.json")

    def mark_finished(self, stats: dict) -> None:
        atomic_write_json(self.fs, f"{self.dir}/finished.json", stats)

    def clear_finished(self) -> None:
        if self.fs.exists(f"{self.dir}/finished.json"):
            self.fs.rm(f"{self.dir}/finished.json")

    # --- completion markers ------------------------------------------------------------------
    def _marker(self, number: int) -> str:
        return f"{self.dir}/done/part-{number:05d}.json"

    def done_partitions(self) -> set[int]:
        """The finished partitions, from one listing of the shard's markers."""
        folder = f"{self.dir}/done"
        if not self.fs.exists(folder):
            return set()
        names = [path.rsplit("/", 1)[-1] for path in self.fs.ls(folder, detail=False)]
        # part-00042.json, part-123456.json: the number is every digit between the two,
        # however many (five digits is only the padding).
        numbers = (name[len("part-") : -len(".json")] for name in names if name.startswith("part-") and name.endswith(".json"))
        return {int(number) for number in numbers if number.isdigit()}

    def mark_done(self, number: int, index: pd.DataFrame, stage_seconds: dict[str, float]) -> None:
        rows = json.loads(index.to_json(orient="records"))
        atomic_write_json(self.fs, self._marker(number), {"partition": number, "stage_seconds": stage_seconds, "windows": rows})

    def read_done(self, number: int) -> tuple[pd.DataFrame, dict[str, float]]:
        marker = json.loads(self.fs.cat(self._marker(number)))
        return schema.frame_from_rows(marker["windows"], schema.WINDOW_SCHEMA)[INDEX_COLUMNS], marker["stage_seconds"]

    def clear_done(self, number: int) -> None:
        if self.fs.exists(self._marker(number)):
            self.fs.rm(self._marker(number))
