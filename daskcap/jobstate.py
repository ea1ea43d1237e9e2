"""What an output directory remembers about the job writing it, so a rerun resumes.

``OUTPUT/_daskcap/`` holds ``job.json`` (the configuration and its hash), the
plan (probed video rows and clip rows with their partition number, written
once), and one completion marker per finished partition
(``done/part-NNNNN.json``, written after that partition's files and Parquet
part are in place, carrying its light window index and stage seconds). A
rerun with the same configuration loads the plan and computes only the
partitions without a marker; since part files are named by partition number,
a partition computed twice (a killed worker, a killed client) is overwritten,
never duplicated.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass

import pandas as pd
import pyarrow.parquet as pq

import pyarrow as pa

from daskcap import schema
from daskcap.stages.write import INDEX_COLUMNS
from daskcap.storage import atomic_write_json, atomic_write_parquet, output_fs

STATE_DIR = "_daskcap"
# Settings that change no output byte: left out of the hash so they may differ on a rerun.
_NEUTRAL_KEYS = {"verbose", "num_cpus_per_worker", "caption_batch_size", "model_batch_size", "max_workers", "log_stats"}


def _without_neutral(value):
    if isinstance(value, dict):
        return {k: _without_neutral(v) for k, v in value.items() if k not in _NEUTRAL_KEYS}
    return value


def config_hash(config: dict) -> str:
    """A short, stable hash of everything that decides the output."""
    canonical = json.dumps(_without_neutral(config), sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def params_dict(params) -> dict | None:
    return asdict(params) if params is not None else None


@dataclass
class OutputState:
    """The ``_daskcap`` folder of one output location."""

    output_path: str

    def __post_init__(self) -> None:
        self.fs, self.root = output_fs(self.output_path)
        self.dir = f"{self.root}/{STATE_DIR}"

    # --- job -----------------------------------------------------------------------------
    def read_job(self) -> dict | None:
        path = f"{self.dir}/job.json"
        return json.loads(self.fs.cat(path)) if self.fs.exists(path) else None

    def write_job(self, job: dict) -> None:
        atomic_write_json(self.fs, f"{self.dir}/job.json", job)

    # --- plan ----------------------------------------------------------------------------
    def has_plan(self) -> bool:
        return self.fs.exists(f"{self.dir}/plan/clips.parquet")

    def save_plan(self, videos: pd.DataFrame, clips: pd.DataFrame) -> None:
        """Videos first, clips last: the clips file marks a complete plan."""
        atomic_write_parquet(self.fs, f"{self.dir}/plan/videos.parquet", schema.to_table(videos, schema.VIDEO_SCHEMA))
        partition = pa.array(clips["partition"].astype("int64").to_numpy())
        table = schema.to_table(clips, schema.CLIP_SCHEMA).append_column("partition", partition)
        atomic_write_parquet(self.fs, f"{self.dir}/plan/clips.parquet", table)

    def load_plan(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        videos = schema.table_to_frame(self._read_parquet(f"{self.dir}/plan/videos.parquet"))
        clips = schema.table_to_frame(self._read_parquet(f"{self.dir}/plan/clips.parquet"))
        return videos, clips

    def _read_parquet(self, path: str):
        return pq.read_table(io.BytesIO(self.fs.cat(path)))

    # --- completion markers ------------------------------------------------------------------
    def _marker(self, number: int) -> str:
        return f"{self.dir}/done/part-{number:05d}.json"

    def done_partitions(self) -> set[int]:
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

