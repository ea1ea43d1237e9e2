"""What workers do in an export, one part at a time so memory stays flat: count a batch
of parts' kept windows, write one WebDataset shard, write a batch of parts' Lance fragments."""

from __future__ import annotations

from collections import Counter

from daskcap.training_data import lance_table
from daskcap.training_data.params import ExportParams
from daskcap.training_data.places import Destination, SourcePart, displays, read_part
from daskcap.training_data.plan import ShardSpec
from daskcap.training_data.samples import FILTER_COLUMNS, samples, select
from daskcap.training_data.tar import ShardWriter, sample_sizes
from daskcap.storage import atomic_open


def _kept(params: ExportParams, part: SourcePart, prompt_variant: str | None):
    windows = read_part(params.output, part)
    return windows, samples(windows, displays(params.output, part.run_shard), params, prompt_variant)


def count_parts(params: ExportParams, parts: list[SourcePart], prompt_variant: str | None) -> list[dict]:
    """Per part: its windows, kept windows, the others by reason, and (with a shard size
    limit) each kept sample's bytes in a shard. Without a limit, only the filter's columns are read."""
    counted = []
    for part in parts:
        if params.max_shard_bytes is None:
            windows = read_part(params.output, part, FILTER_COLUMNS)
            keep, left_out = select(windows, params)
            counted.append({"windows": len(windows), "kept": int(keep.sum()), "left_out": dict(left_out), "sizes": None})
            continue
        windows, kept = _kept(params, part, prompt_variant)
        _, left_out = select(windows, params)
        counted.append({"windows": len(windows), "kept": len(kept), "left_out": dict(left_out),
                        "sizes": sample_sizes(kept, params.with_preview)})
    return counted


def write_shard(params: ExportParams, spec: ShardSpec, parts: dict[int, SourcePart], prompt_variant: str | None, digest: str) -> dict:
    """Shard ``spec`` written under a temporary name and renamed, then its marker; its counts."""
    destination = Destination(params)
    name = destination.shard_name(spec.number)
    with atomic_open(destination.fs, f"{destination.root}/{name}") as handle:
        writer = ShardWriter(handle, params.with_preview)
        for part, first, end in spec.slices:
            _, kept = _kept(params, parts[part], prompt_variant)
            if len(kept) < end:
                raise RuntimeError(f"{parts[part].relpath} changed during the export ({len(kept)} kept windows, planned {end}): export again")
            writer.add(kept.iloc[first:end].itertuples(index=False))
        counts = writer.close()
    marker = {"name": name, "digest": digest, **counts}
    destination.mark_done(spec.number, marker)
    return marker


def write_lance_parts(params: ExportParams, parts: list[SourcePart], prompt_variant: str | None) -> dict:
    """Fragments of the parts' kept windows (one part read at a time), not yet committed; and
    the parts' counts."""
    counts = {"windows": 0, "kept": 0, "left_out": Counter()}

    def batches():
        for part in parts:
            windows, kept = _kept(params, part, prompt_variant)
            _, left_out = select(windows, params)
            counts["windows"] += len(windows)
            counts["kept"] += len(kept)
            counts["left_out"].update(left_out)
            if len(kept):
                yield lance_table.to_batch(kept, part.relpath, part.identity)

    fragments = lance_table.write_fragments(batches(), params.dest)
    return {"fragments": fragments, "windows": counts["windows"], "kept": counts["kept"], "left_out": dict(counts["left_out"])}


def lance_contents(uri: str) -> dict[str, str]:
    """The parts the Lance table at ``uri`` holds, with their identities; none when there is no table."""
    return lance_table.exported_parts(uri) if lance_table.exists(uri) else {}


def lance_rows(uri: str) -> int:
    return lance_table.lance_module().dataset(uri).count_rows() if lance_table.exists(uri) else 0
