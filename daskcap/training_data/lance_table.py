"""The Lance table of kept windows: its Arrow schema, fragments written on workers, and
the client's commits (Lance's distributed write: fragments anywhere, one commit each)."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pyarrow as pa

from daskcap import schema

# The window columns (mp4 and preview bytes as binary), then the sample's own and where it came from.
LANCE_SCHEMA = pa.schema([
    pa.field("key", pa.string()),
    *schema.WINDOW_OUTPUT_SCHEMA,
    pa.field("text", pa.string()),
    pa.field("text_field", pa.string()),
    pa.field("num_frames", pa.int64()),
    pa.field("display_width", pa.int32()),
    pa.field("display_height", pa.int32()),
    pa.field("metadata", pa.string()),  # the webdataset sample's .json
    pa.field("source_part", pa.string()),  # windows/part-SSSSS-NNNNN.parquet of the output
    pa.field("source_identity", pa.string()),  # its size and time when exported: a changed part is exported again
])


def lance_module():
    try:
        import lance
    except ImportError as exc:
        raise ImportError("the Lance export needs pylance: pip install -e '.[export]'") from exc
    return lance


def to_batch(kept: pd.DataFrame, source_part: str, source_identity: str) -> pa.RecordBatch:
    """A part's kept samples (``samples.samples``) as a batch of ``LANCE_SCHEMA``."""
    frame = kept.assign(metadata=[m.decode() for m in kept["metadata"]], source_part=source_part, source_identity=source_identity)
    return pa.RecordBatch.from_pandas(frame[LANCE_SCHEMA.names], schema=LANCE_SCHEMA, preserve_index=False)


def write_fragments(batches: Iterator[pa.RecordBatch], uri: str) -> list:
    """Lance fragments of ``batches`` under the dataset at ``uri`` (not yet part of it: a
    commit adds them), streamed: one batch in memory at a time."""
    import itertools

    lance_module()
    from lance.fragment import write_fragments as write

    first = next(batches, None)
    if first is None:  # nothing kept: no fragment (Lance refuses to write an empty one)
        return []
    reader = pa.RecordBatchReader.from_batches(LANCE_SCHEMA, itertools.chain([first], batches))
    return write(reader, uri, schema=LANCE_SCHEMA, max_rows_per_file=1 << 20)


def exists(uri: str) -> bool:
    lance = lance_module()
    try:
        lance.dataset(uri)
    except (ValueError, OSError, FileNotFoundError):
        return False
    return True


def exported_parts(uri: str) -> dict[str, str]:
    """The output parts the table holds rows of, with the identity each had (scanned here, a
    worker: two short columns, streamed)."""
    lance = lance_module()
    found: dict[str, str] = {}
    scanner = lance.dataset(uri).scanner(columns=["source_part", "source_identity"])
    for batch in scanner.to_batches():
        found.update(zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()))
    return found


def remove_parts(uri: str, relpaths: list[str]) -> None:
    """Delete the rows of parts that changed or are gone (re-added from the part as it is now)."""
    lance = lance_module()
    dataset = lance.dataset(uri)
    for start in range(0, len(relpaths), 500):
        quoted = ", ".join("'" + path.replace("'", "''") + "'" for path in relpaths[start : start + 500])
        dataset.delete(f"source_part IN ({quoted})")


def commit(uri: str, fragments: list) -> int:
    """Append ``fragments`` to the table at ``uri`` (creating it); return its version."""
    lance = lance_module()
    if exists(uri):
        dataset = lance.dataset(uri)
        dataset = lance.LanceDataset.commit(uri, lance.LanceOperation.Append(fragments), read_version=dataset.version)
    else:
        dataset = lance.LanceDataset.commit(uri, lance.LanceOperation.Overwrite(LANCE_SCHEMA, fragments))
    return dataset.version
