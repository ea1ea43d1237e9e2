"""What an output directory remembers about the job writing it, so a rerun resumes.

``OUTPUT/_daskcap/`` holds ``job.json`` (the configuration and its hash), the
listing (the input's paths cut into shards, written once before any work), and
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
# Fields kept for NeMo Curator's signatures that nothing reads (the stage: the fields).
_NEUTRAL_FIELDS = {
    "writer": {"generate_captions", "generate_embeddings", "embedding_algorithm"},
    "caption": {"model_does_preprocess"},  # the preparation stage's is the one that acts
    "enhance": {"captioning_model_variant"},
}


def _without_neutral(value, section: str | None = None):
    if isinstance(value, dict):
        skipped = _NEUTRAL_KEYS | _NEUTRAL_FIELDS.get(section, set())
        return {k: _without_neutral(v, k if section is None else section) for k, v in value.items() if k not in skipped}
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

    # --- listing -------------------------------------------------------------------------
    # The input's paths, cut into shards once, so a resume works on the same shards.
    def has_listing(self) -> bool:
        return self.fs.exists(f"{self.dir}/listing/shards.json")

    def save_listing(self, shards: list[pd.DataFrame]) -> None:
        """Each shard's paths, then the count (written last: it marks a complete listing)."""
        for number, paths in enumerate(shards):
            table = pa.Table.from_pandas(paths[["video_path"]], preserve_index=False)
            atomic_write_parquet(self.fs, self._listing(number), table)
        atomic_write_json(self.fs, f"{self.dir}/listing/shards.json", {"shards": len(shards), "videos": sum(map(len, shards))})

    def listing_info(self) -> dict:
        return json.loads(self.fs.cat(f"{self.dir}/listing/shards.json"))

    def load_listing(self, number: int) -> pd.DataFrame:
        return pq.read_table(io.BytesIO(self.fs.cat(self._listing(number)))).to_pandas()

    def _listing(self, number: int) -> str:
        return f"{self.dir}/listing/shard-{number:05d}.parquet"

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

    def load_plan(self) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
        videos = schema.table_to_frame(self._read_parquet(f"{self.dir}/plan/videos.parquet"))
        clips = schema.table_to_frame(self._read_parquet(f"{self.dir}/plan/clips.parquet"))
        probe = json.loads(self.fs.cat(f"{self.dir}/plan/probe.json"))
        return videos, clips, probe["stage_seconds"]

    def _read_parquet(self, path: str):
        return pq.read_table(io.BytesIO(self.fs.cat(path)))

    # --- the finished shard --------------------------------------------------------------
    def finished(self) -> dict | None:
        path = f"{self.dir}/finished.json"
        return json.loads(self.fs.cat(path)) if self.fs.exists(path) else None

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
