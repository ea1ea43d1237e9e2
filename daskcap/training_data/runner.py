"""An export on Dask: parts counted on workers, shards planned in the client from the counts
only, shards (or Lance fragments) written on workers a few at a time, the stats file last.

The client holds the list of window parts, one count per part and one record per shard;
rows and bytes stay on the workers, so its memory does not grow with the windows' bytes.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator

from distributed import Client, as_completed

from daskcap.training_data import lance_table, tasks
from daskcap.training_data.params import ExportParams
from daskcap.training_data.places import Destination, Source, check_apart
from daskcap.training_data.plan import plan_shards
from daskcap.meter import process_peak_rss
from daskcap.run.cluster import connect, workers_by_kind
from daskcap.run.job import ClusterOptions

log = logging.getLogger(__name__)

PARTS_PER_COUNT = 64  # window parts one counting task reads (their small columns only)
PARTS_PER_FRAGMENT = 32  # window parts one Lance task turns into a fragment
COMMIT_EVERY = 16  # Lance tasks whose fragments one commit adds


def export(output: str, dest: str, *, format: str = "webdataset", scheduler: str | None = None, n_workers: int | None = None,
           **settings) -> dict:
    """Export the daskcap output ``output`` to ``dest`` (see ``ExportParams`` for ``settings``)
    on the cluster at ``scheduler``, or on an embedded one; return the stats (also written to DEST)."""
    params = ExportParams(output=output, dest=dest, format=format, **settings)
    with connect(ClusterOptions(scheduler=scheduler, n_workers=n_workers)) as client:
        return run_export(client, params)


def run_export(client: Client, params: ExportParams) -> dict:
    """``params``' export on ``client``'s cluster; the stats, written to DEST last."""
    started = time.time()
    source = Source(params.output)
    check_apart(params)
    destination = Destination(params)
    destination.prepare()
    parts = source.parts()
    cpu, engines = workers_by_kind(client)
    place = {"workers": cpu or None, "allow_other_workers": not cpu}
    in_flight = 2 * max(1, len(cpu) or len(engines))
    if params.format == "lance":
        stats = _export_lance(client, params, source, parts, place, in_flight)
    else:
        stats = _export_webdataset(client, params, source, parts, destination, place, in_flight)
    stats.update({"format": params.format, "output": params.output, "dest": params.dest, "config_hash": params.config_hash(),
                  "settings": {k: v for k, v in vars(params).items() if k not in ("output", "dest")},
                  "wall_s": round(time.time() - started, 3), "client_peak_rss_mb": round(process_peak_rss() / 2**20, 1)})
    destination.write_stats(stats)
    return stats


def _bounded(client: Client, calls: Iterable[tuple], in_flight: int, place: dict) -> Iterator[tuple]:
    """(tag, result) of each ``(tag, function, *args)`` call, as they finish, with at most
    ``in_flight`` submitted at once; a failed call raises its error here."""
    calls = iter(calls)
    running = as_completed()
    tags = {}

    def submit_next() -> None:
        call = next(calls, None)
        if call is not None:
            tag, function, *args = call
            future = client.submit(function, *args, pure=False, **place)
            tags[future.key] = tag
            running.add(future)

    for _ in range(in_flight):
        submit_next()
    for future in running:
        tag = tags.pop(future.key)
        result = future.result()
        future.release()
        submit_next()
        yield tag, result


def _count(client, params, source, parts, place, in_flight) -> tuple[list[dict], dict]:
    """Each part's count (in part order) and the totals, counted on workers."""
    batches = range(0, len(parts), PARTS_PER_COUNT)
    calls = ((start, tasks.count_parts, params, parts[start : start + PARTS_PER_COUNT], source.prompt_variant) for start in batches)
    counted: list[dict | None] = [None] * len(parts)
    for start, results in _bounded(client, calls, in_flight, place):
        counted[start : start + len(results)] = results
    return counted, _totals(counted)


def _totals(counted: Iterable[dict]) -> dict:
    left_out: Counter = Counter()
    windows = kept = 0
    for part in counted:
        windows += part["windows"]
        kept += part["kept"]
        left_out.update(part["left_out"])
    reasons = {reason: n for reason, n in sorted(left_out.items()) if not reason.startswith("flag:")}
    flags = {reason.removeprefix("flag:"): n for reason, n in sorted(left_out.items()) if reason.startswith("flag:")}
    return {"windows": windows, "samples": kept, "left_out": {"total": windows - kept, "by_reason": reasons, "flags": flags}}


def _export_webdataset(client, params, source, parts, destination: Destination, place, in_flight) -> dict:
    counted, totals = _count(client, params, source, parts, place, in_flight)
    sizes = [part["sizes"] for part in counted] if params.max_shard_bytes is not None else None
    plan = plan_shards([part["kept"] for part in counted], params.samples_per_shard, sizes, params.max_shard_bytes)
    del counted, sizes
    identities = [part.relpath + "@" + part.identity for part in parts]
    done = destination.done()
    present = {name for name in destination.files() if name.endswith(".tar")}
    shards: dict[int, dict] = {}
    calls = []
    for spec in plan:
        digest = spec.digest(identities, params.config_hash())
        marker = done.get(spec.number)
        if marker is not None and marker.get("digest") == digest and destination.shard_name(spec.number) in present:
            shards[spec.number] = marker  # finished by an earlier export: kept as it is
            continue
        calls.append((spec.number, tasks.write_shard, params, spec, {i: parts[i] for i, _, _ in spec.slices}, source.prompt_variant, digest))
    for number, marker in _bounded(client, calls, in_flight, place):
        shards[number] = marker
    removed = destination.remove_shards_from(len(plan))
    listed = [{key: shards[n][key] for key in ("name", "samples", "bytes", "sha256")} for n in range(len(plan))]
    return {**totals, "bytes": sum(shard["bytes"] for shard in listed), "shards_written": len(calls),
            "shards_kept": len(plan) - len(calls), "stale_shards_removed": removed, "shards": listed}


def _export_lance(client, params, source, parts, place, in_flight) -> dict:
    uri = params.dest
    held = client.submit(tasks.lance_contents, uri, pure=False, **place).result()
    current = {part.relpath: part.identity for part in parts}
    gone = sorted(path for path, identity in held.items() if current.get(path) != identity)
    if gone:
        lance_table.remove_parts(uri, gone)
    todo = [part for part in parts if held.get(part.relpath) != part.identity]
    batches = range(0, len(todo), PARTS_PER_FRAGMENT)
    calls = ((start, tasks.write_lance_parts, params, todo[start : start + PARTS_PER_FRAGMENT], source.prompt_variant) for start in batches)
    counted, pending, version = [], [], None
    for _, result in _bounded(client, calls, in_flight, place):
        pending += result.pop("fragments")
        counted.append(result)
        if len(counted) % COMMIT_EVERY == 0 and pending:
            version, pending = lance_table.commit(uri, pending), []
    if pending or not lance_table.exists(uri):  # nothing kept yet is an empty table, not none
        version = lance_table.commit(uri, pending)
    totals = _totals(counted)
    rows = client.submit(tasks.lance_rows, uri, pure=False, **place).result()
    # A part whose rows the table holds, unchanged, is not read again; counts are of the parts read.
    return {**totals, "parts_read": len(todo), "parts_in_table": len(parts) - len(todo), "parts_replaced": len(gone),
            "table_rows": rows, "version": version}
