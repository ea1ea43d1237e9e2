"""What an export writes and which windows it keeps: one frozen, validated dataclass."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass

from daskcap.stages._params import Checks

FORMATS = ("webdataset", "lance")
# Where a sample's text comes from; None picks, per window, the best one present.
CAPTION_FIELDS = ("enhanced_caption", "caption", "stage1_caption")
# Which flags column judges each text (stage 1's is the final caption's when no stage 2 ran).
FLAGS_OF = {"enhanced_caption": "enhance_flags", "caption": "caption_flags", "stage1_caption": "caption_flags"}
_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


@dataclass(frozen=True)
class ExportParams:
    """Export the windows of the daskcap output ``output`` to ``dest`` as ``format``.

    webdataset: tar shards ``{prefix}-%06d.tar`` of at most ``samples_per_shard`` samples
    (and, with ``shard_size_mb``, about that many MB), then ``{prefix}-stats.json``.
    lance: one Lance dataset at ``dest``, appended to by later exports of the same output.
    Kept: ``status == ok``, a non-empty caption from ``caption_field`` (None: enhanced,
    else final, else stage 1), no caption-check flag (unless ``include_flagged``), at
    least ``min_frames`` frames and ``min_seconds`` seconds. ``with_preview`` adds each
    window's WebP to its webdataset sample (Lance rows always hold it)."""

    output: str
    dest: str
    format: str = "webdataset"
    prefix: str = "shard"
    samples_per_shard: int = 1000
    shard_size_mb: float | None = None
    caption_field: str | None = None
    with_preview: bool = False
    include_flagged: bool = False
    min_frames: int = 0
    min_seconds: float = 0.0
    overwrite: bool = False

    def __post_init__(self) -> None:
        checks = Checks("export")
        checks.text("output", self.output)
        checks.text("dest", self.dest)
        checks.choice("format", self.format, FORMATS)
        if not isinstance(self.prefix, str) or not _PREFIX.fullmatch(self.prefix):
            checks.fail(f"prefix must be letters, digits, '-' or '_' (up to 64, no '.' or '/': a WebDataset key ends at the first dot), got {self.prefix!r}")
        checks.number("samples_per_shard", self.samples_per_shard, 1, integer=True)
        if self.shard_size_mb is not None:
            checks.number("shard_size_mb", self.shard_size_mb, above=0)
        if self.caption_field is not None:
            checks.choice("caption_field", self.caption_field, CAPTION_FIELDS)
        checks.number("min_frames", self.min_frames, 0, integer=True)
        checks.number("min_seconds", self.min_seconds, 0)
        checks.done()

    @property
    def max_shard_bytes(self) -> int | None:
        return None if self.shard_size_mb is None else int(self.shard_size_mb * 2**20)

    def config_hash(self) -> str:
        """What decides the exported bytes (not where they come from or go, nor ``overwrite``)."""
        settings = {k: v for k, v in asdict(self).items() if k not in ("output", "dest", "overwrite")}
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def parse_export_target(text: str) -> tuple[str, str]:
    """``webdataset:DEST`` or ``lance:DEST`` (``daskcap run --export``) as (format, dest)."""
    format, sep, dest = text.partition(":")
    if not sep or format not in FORMATS or not dest:
        raise ValueError(f"--export takes FORMAT:DEST with FORMAT one of {', '.join(FORMATS)} (e.g. webdataset:/data/shards), got {text!r}")
    return format, dest
