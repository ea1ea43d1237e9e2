"""The endpoint engine's throughput against the server's own, and a job's client memory at 10,000 windows.

    python benchmarks/endpoint.py [--windows 96] [--concurrency 8] [--job-windows 10000]
                                  [--out benchmarks/results/<date>-endpoint.json]

1. Throughput: the same caption requests (real windows of the synthetic clips, sent as
   frames and as mp4) go to one server (``daskcap.engines.serve`` on loopback) at the same
   concurrency, two ways: through ``EndpointEngine.caption`` (daskcap's requests built
   from the windows, its pool, retries and parsing), and straight, pre-built bodies POSTed
   by a plain thread pool of ``http.client`` connections. Windows per second, and their
   ratio. Two servers: ``--trivial`` answering after a fixed delay (what a GPU server's
   latency looks like to a client that is the only CPU cost), and the tiny Qwen2.5-VL
   through the transformers engine (the server is the cost).
2. Memory: ``daskcap run`` of ``--job-windows`` windows (short windows of small generated
   videos) captioned through the endpoint against the trivial server; the client's and
   workers' peak RSS from summary.json, and the same for a tenth of the windows, to show
   it stays flat.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from record import save  # noqa: E402 (benchmarks/, the script's own folder)

from daskcap.engines import serve  # noqa: E402
from daskcap.engines.chat_api import caption_body  # noqa: E402
from daskcap.engines.host import EngineHost  # noqa: E402
from daskcap.stages.caption import CaptionGenerationStage, _video_requests, window_id  # noqa: E402

TRIVIAL = "A red square moves left on a grey field."
KEY_ENV = "DASKCAP_BENCH_KEY"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def windows_of_synthetic(count: int):
    """``count`` prepared windows (model input and window mp4) of the synthetic clips."""
    import pandas as pd

    from daskcap.samples import write_synthetic
    from daskcap.stages.clip import FixedStrideClipStage, make_clips
    from daskcap.stages.prepare import CaptionPreparationStage, prepare_windows
    from daskcap.stages.read import VideoReaderStage, read_videos

    folder = Path(tempfile.mkdtemp(prefix="daskcap-bench-endpoint-"))
    paths = write_synthetic(folder)
    videos = read_videos(pd.DataFrame({"video_path": [str(p) for p in paths]}), VideoReaderStage("unused"))
    windows = prepare_windows(make_clips(videos, FixedStrideClipStage()), CaptionPreparationStage())
    copies = [windows.assign(clip_id=windows["clip_id"] + f"-{i}") for i in range(-(-count // len(windows)))]
    return pd.concat(copies, ignore_index=True).iloc[:count]


def requests_of(stage: CaptionGenerationStage, windows) -> list:
    todo = list(windows.itertuples(index=False))
    requests, errors = _video_requests(todo, {window_id(w.clip_id, w.window_index): w.prompt for w in todo}, stage.max_output_tokens,
                                       stage.endpoint_video == "mp4")
    assert not errors, errors
    return requests


def through_daskcap(stage: CaptionGenerationStage, windows) -> float:
    """Seconds for EndpointEngine to caption ``windows``: requests built from the rows (frames
    unpacked and PNG-encoded, or the mp4), sent, retried where needed, parsed."""
    host = EngineHost()
    handle = host.handle(stage.engine_config())
    handle.get()
    started = time.perf_counter()
    results = handle.serve(lambda engine, batch: engine.caption(batch), requests_of(stage, windows))
    seconds = time.perf_counter() - started
    failed = [r for r in results.values() if isinstance(r, str)]
    assert not failed and len(results) == len(windows), failed[:3]
    return seconds


def daskcap_transport(stage: CaptionGenerationStage, bodies: list[bytes]) -> float:
    """Seconds for EndpointEngine's pool to send the pre-built ``bodies``: what it adds to a
    plain client (its pool, retry loop, breaker and answer parsing), without building them."""
    from daskcap.engines.factory import build_engine

    engine = build_engine(stage.engine_config())
    list(engine.pool.map(lambda body: engine._post(body, "warm"), bodies[: stage.endpoint_max_concurrency]))
    started = time.perf_counter()
    results = list(engine.pool.map(lambda body: engine._post(body, "bench"), bodies))
    seconds = time.perf_counter() - started
    assert not [r for r in results if isinstance(r, str)]
    return seconds


def straight(url: str, bodies: list[bytes], concurrency: int, key: str) -> float:
    """Seconds for a plain pool of ``concurrency`` keep-alive connections to POST ``bodies``."""
    import threading
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    local = threading.local()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}

    def post(body: bytes) -> int:
        if not hasattr(local, "connection"):
            local.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
        local.connection.request("POST", parts.path + "/chat/completions", body=body, headers=headers)
        response = local.connection.getresponse()
        json.loads(response.read())
        return response.status

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(post, bodies[:concurrency]))  # connections open before the clock starts
        started = time.perf_counter()
        statuses = list(pool.map(post, bodies))
    assert set(statuses) == {200}, set(statuses)
    return time.perf_counter() - started


def throughput(server: serve.Served, model: str, windows, concurrency: int, key: str) -> dict:
    figures = {}
    for video in ("frames", "mp4"):
        stage = CaptionGenerationStage(endpoint=server.url, model=model, endpoint_video=video, endpoint_api_key_env=KEY_ENV,
                                       endpoint_max_concurrency=concurrency, max_output_tokens=32)
        spec = stage.endpoint_spec()
        built = time.perf_counter()
        bodies = [json.dumps(caption_body(r, spec)).encode() for r in requests_of(stage, windows)]
        build_s = time.perf_counter() - built
        straight_s = straight(server.url, bodies, concurrency, key)
        transport_s = daskcap_transport(stage, bodies)
        daskcap_s = through_daskcap(stage, windows)
        figures[video] = {
            "windows": len(windows), "concurrency": concurrency,
            "straight_windows_per_s": round(len(windows) / straight_s, 2),
            "daskcap_transport_windows_per_s": round(len(windows) / transport_s, 2),
            "transport_ratio": round(straight_s / transport_s, 3),
            "daskcap_windows_per_s": round(len(windows) / daskcap_s, 2),
            "ratio": round(straight_s / daskcap_s, 3),
            "build_ms_per_window": round(1000 * build_s / len(windows), 1),  # one thread, in this process
            "request_kb": round(sum(map(len, bodies)) / len(bodies) / 1024, 1),
        }
        f = figures[video]
        print(f"  {video:6}: straight {f['straight_windows_per_s']:7.1f} windows/s; daskcap sending the same bodies "
              f"{f['daskcap_transport_windows_per_s']:7.1f} (ratio {f['transport_ratio']:.3f}); daskcap from the windows "
              f"{f['daskcap_windows_per_s']:7.1f} (ratio {f['ratio']:.3f}; building a request {f['build_ms_per_window']} ms, "
              f"{f['request_kb']} KB)", flush=True)
    return figures


def job_videos(folder: Path, windows: int) -> Path:
    """Small generated videos holding ``windows`` 4-frame windows (100 per video)."""
    from videogen import write_stamped_video

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(-(-windows // 100)):
        path = folder / f"v{i:05d}.mp4"
        if not path.exists():
            write_stamped_video(path, 400, 10, width=64, height=48)
    return folder


def job_memory(server: serve.Served, windows: int, scratch: Path) -> dict:
    videos = job_videos(scratch / f"videos-{windows}", windows)
    output = scratch / f"out-{windows}"
    command = [sys.executable, "-m", "daskcap.cli", "run", str(videos), str(output), "--overwrite", "--quiet", "--no-report",
               "--captioning-endpoint", server.url, "--endpoint-video", "frames", "--endpoint-api-key-env", KEY_ENV,
               "--no-generate-previews", "--no-upload-clips", "--no-write-metas", "--captioning-window-size", "4",
               "--captioning-remainder-threshold", "4", "--captioning-sampling-fps", "1", "--windows-per-partition", "50",
               "--n-workers", "2"]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    summary = json.loads((output / "summary.json").read_text())
    figures = {
        "windows": summary["windows"]["total"], "ok": summary["windows"]["by_status"].get("ok", 0),
        "wall_s": round(time.perf_counter() - started, 1), "windows_per_s": summary["windows_per_s"],
        "client_peak_rss_mb": summary["client"]["peak_rss_mb"],
        "worker_peak_rss_mb": max(w.get("peak_rss_mb", 0) for w in summary["workers"].values()),
        "most_partitions_in_flight": summary["most_partitions_in_flight"], "requests": summary["endpoints"]["caption"]["requests"],
    }
    print(f"  {figures['windows']} windows in {figures['wall_s']} s: client peak {figures['client_peak_rss_mb']} MB, "
          f"worker peak {figures['worker_peak_rss_mb']} MB, {figures['most_partitions_in_flight']} partitions in flight", flush=True)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=96)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--delay-s", type=float, default=0.05, help="the trivial server's seconds per answer")
    parser.add_argument("--job-windows", type=int, default=10000)
    parser.add_argument("--skip", choices=("throughput", "memory"), action="append", default=[])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    key = os.environ.setdefault(KEY_ENV, "sk-bench")
    from daskcap.engines.tiny import build_tiny_models

    record: dict = {"date": datetime.date.today().isoformat(), "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    if "throughput" not in args.skip:
        windows = windows_of_synthetic(args.windows)
        tiny = build_tiny_models(ROOT / "data" / "tiny-models")
        servers = {
            f"trivial server ({args.delay_s * 1000:.0f} ms an answer)": (["--trivial", TRIVIAL, "--delay-s", str(args.delay_s)], "trivial"),
            "tiny Qwen2.5-VL server (transformers)": (["--model", str(tiny["vlm"])], str(tiny["vlm"])),
        }
        record["throughput"] = {}
        for name, (arguments, model) in servers.items():
            print(name, flush=True)
            server = serve.start([*arguments, "--api-key-env", KEY_ENV], free_port())
            try:
                record["throughput"][name] = throughput(server, model, windows, args.concurrency, key)
            finally:
                server.stop()
    if "memory" not in args.skip:
        server = serve.start(["--trivial", TRIVIAL, "--api-key-env", KEY_ENV], free_port())
        scratch = ROOT / "data" / "bench" / "endpoint"
        record["job_memory"] = {}
        try:
            for windows in (args.job_windows // 10, args.job_windows):
                print(f"daskcap run, {windows} windows through the endpoint (trivial server)", flush=True)
                record["job_memory"][str(windows)] = job_memory(server, windows, scratch)
        finally:
            server.stop()
    save(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
