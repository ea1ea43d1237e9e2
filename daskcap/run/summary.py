"""The job's summary: the shards' counts merged, the workers' counters (engine loads,
tokens, seconds, peak memory), and ``summary.json`` built from them."""

from __future__ import annotations

import time

from daskcap.meter import process_peak_rss
from daskcap.run.timing import add_usage
from daskcap.storage import redact


def worker_summary(before: dict, after: dict, engine_workers: list[str]) -> dict:
    """Per worker: its counters' growth during this job (model loads and load seconds per
    model, windows, generations, tokens, engine seconds) and its GPU as it reports it."""
    summary = {}
    for address, stats in after.items():
        previous = before.get(address, {})
        entry: dict = {"engine": address in engine_workers, "partitions_captioned": 0, "windows_captioned": 0, "windows_enhanced": 0}
        for name, value in stats.items():
            if isinstance(value, dict) and all(isinstance(n, int | float) for n in value.values()):  # per model
                grown = {model: round(n - previous.get(name, {}).get(model, 0), 3) for model, n in value.items()}
                entry[name] = {model: n for model, n in grown.items() if n}
            elif isinstance(value, int | float) and not isinstance(value, bool) and not name.startswith("gpu_"):
                entry[name] = round(value - previous.get(name, 0), 3)
            else:  # a state, not a counter: the GPU's name, peak memory, CUDA_VISIBLE_DEVICES
                entry[name] = value
        summary[address] = entry
    return summary


def engine_totals(workers: dict) -> dict:
    """The engines' work in this job, summed over engine workers: per role, generations,
    tokens and seconds inside engine calls, with tokens per such second; and model loads."""
    totals: dict = {}
    for role in ("caption", "enhance"):
        names = ("generations", "prompt_tokens", "output_tokens", "engine_s", "calls", "call_tasks")
        sums = {name: sum(w.get(f"{role}_{name}", 0) for w in workers.values()) for name in names}
        if sums["generations"]:
            seconds, calls = sums["engine_s"], sums.pop("calls")
            tasks = sums.pop("call_tasks")
            backends = sorted({w["engine_backends"][role] for w in workers.values() if role in w.get("engine_backends", {})})
            totals[role] = {
                "backend": ", ".join(backends) or None,  # what ran: "vllm 0.32.0", "transformers 5.19.0"
                **sums,
                "engine_calls": calls,
                # Requests the engine held at once on average, and the tasks they came from.
                "requests_per_call": round(sums["generations"] / calls, 2) if calls else None,
                "tasks_per_call": round(tasks / calls, 2) if calls else None,
                "engine_s": round(seconds, 3),
                "prompt_tokens_per_s": round(sums["prompt_tokens"] / seconds, 1) if seconds else None,
                "output_tokens_per_s": round(sums["output_tokens"] / seconds, 1) if seconds else None,
            }
    totals["model_load_s"] = round(sum(sum(w.get("model_load_s", {}).values()) for w in workers.values()), 3)
    return totals




def endpoint_totals(job, workers: dict) -> dict:
    """Per endpoint stage: where it sent (no credentials), which model, and the requests,
    retries and failed requests summed over the workers that sent them."""
    from daskcap.engines.endpoint import display_url

    totals = {}
    for role, stage in job.endpoint_stages.items():
        counts = {name: sum(w.get(f"{role}_endpoint_{key}", 0) for w in workers.values())
                  for name, key in (("requests", "requests"), ("retries", "retries"), ("failed_requests", "failed"))}
        totals[role] = {"url": display_url(stage.endpoint), "model": stage.model_name, "max_concurrency": stage.endpoint_max_concurrency,
                        **({"video": stage.endpoint_video} if role == "caption" else {}), **counts}
    return totals


def merge_shards(stats: list[dict]) -> dict:
    """One summary's counts from the shards' counts."""
    total: dict = {"videos": {}, "windows": {}, "clips": 0, "partitions": 0, "partitions_computed": 0, "failed_partitions": [],
                   "stage_seconds": {}, "stage_usage": {}}
    flags: dict = {}
    below: dict = {}  # sources below the preview's rate or height
    for shard in stats:
        for kind in ("videos", "windows"):
            for status, n in shard[kind]["by_status"].items():
                total[kind][status] = total[kind].get(status, 0) + n
        for name in ("clips", "partitions", "partitions_computed"):
            total[name] += shard[name]
        total["failed_partitions"] += shard["failed_partitions"]
        for stage, seconds in shard["stage_seconds"].items():
            total["stage_seconds"][stage] = total["stage_seconds"].get(stage, 0.0) + seconds
        for stage, (cpu_s, peak) in shard["stage_usage"].items():
            add_usage(total["stage_usage"], stage, cpu_s, peak)
        for key in ("caption_flags", "enhance_flags"):
            if key in shard:
                merged = flags.setdefault(key, {"checked": 0, "flagged": 0, "by_flag": {}})
                merged["checked"] += shard[key]["checked"]
                merged["flagged"] += shard[key]["flagged"]
                for flag, n in shard[key]["by_flag"].items():
                    merged["by_flag"][flag] = merged["by_flag"].get(flag, 0) + n
        for key, counts in shard.get("below_preview", {}).items():
            merged = below.setdefault(key, {"videos": 0, "example": None})
            merged["videos"] += counts["videos"]
            merged["example"] = merged["example"] or counts["example"]
    total["flags"] = flags
    total["below_preview"] = below
    return total


def build_summary(run) -> dict:
    """``summary.json`` of a finished run (``run``: the runner's RunState)."""
    job, options = run.job, run.options
    total = merge_shards(run.shard_stats)
    wall_s = time.time() - run.started
    windows_total = sum(total["windows"].values())
    summary = {
        "input": job.reader.input_video_path,
        "output": job.writer.output_path,
        "dry_run": job.writer.dry_run,
        "config_hash": run.config_hash,
        "wall_s": round(wall_s, 3),
        "resumed": run.previous is not None,  # an earlier run of this job in the output (stopped while listing, too)
        "partitions_computed": total["partitions_computed"],
        "videos": {"total": sum(total["videos"].values()), "by_status": total["videos"]},
        "clips": {"total": total["clips"]},
        "windows": {"total": windows_total, "by_status": total["windows"]},
        "windows_per_s": round(windows_total / wall_s, 3) if wall_s > 0 else None,
        "stage_seconds": {stage: round(seconds, 3) for stage, seconds in total["stage_seconds"].items()},
        # This run's partitions only (a resumed run does not repeat the finished ones).
        "stage_cpu_seconds": {stage: round(cpu_s, 3) for stage, (cpu_s, _) in total["stage_usage"].items()},
        "stage_peak_rss_mb": {stage: round(peak / 2**20, 1) for stage, (_, peak) in total["stage_usage"].items()},
        "cluster_start_s": round(run.cluster_start_s, 3),
        "shards": len(run.shard_stats),
        "partitions": total["partitions"],
        "most_partitions_in_flight": run.streamer.most_in_flight,
        # The client's own figures; an embedded scheduler runs in the same process.
        "client": {
            "peak_rss_mb": round(process_peak_rss() / 2**20, 1),
            "scheduler_most_tasks": run.streamer.most_tasks,
            "first_window_s": run.streamer.first_window_s,
            "listing_s": round(run.shards.listing_s, 3),
        },
        "failed_partitions": total["failed_partitions"],
        "cluster": {
            "scheduler": options.scheduler or "embedded",
            "cpu_workers": len(run.cpu_workers),
            "engine_workers": len(run.engine_workers),
        },
        "workers": run.workers,
        **({"engines": engine_totals(run.workers)} if job.needs_engines else {}),
        **({"endpoints": endpoint_totals(job, run.workers)} if job.endpoint_stages else {}),
        **(total["flags"] if job.check is not None else {}),
        **({"below_preview": total["below_preview"]} if job.preview is not None else {}),
        "config": run.config,
    }
    return redact(summary)  # no credentials from URLs in summary.json
