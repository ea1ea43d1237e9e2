"""Input from and output to an S3 bucket, served by a real local S3-compatible server (moto, its own process)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from videogen import parse_webp

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def s3_env():
    moto_server = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    if moto_server is None:
        pytest.fail("moto_server is missing: pip install -e '.[test]'")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([moto_server, "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {
        "AWS_ACCESS_KEY_ID": "test-key",
        "AWS_SECRET_ACCESS_KEY": "test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.terminate()
        server.wait(timeout=10)


def test_videos_in_a_bucket_to_outputs_in_a_bucket(s3_env, samples, tmp_path):
    import fsspec

    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir("daskcap-test")
    fs.put(str(samples / "bikes.mp4"), "daskcap-test/in/bikes.mp4")
    fs.put(str(samples / "carphone_pristine.mp4"), "daskcap-test/in/nested/carphone pristine.mp4")
    fs.pipe("daskcap-test/in/broken.mp4", b"not a video")

    result = subprocess.run(
        [sys.executable, "-m", "daskcap.cli", "run", "s3://daskcap-test/in", "s3://daskcap-test/out", "--n-workers", "2", "--quiet"],
        capture_output=True, text=True, timeout=200, env={**os.environ, **s3_env},
    )
    assert result.returncode == 0, result.stderr

    fs.invalidate_cache()
    windows = pd.read_parquet("s3://daskcap-test/out/windows")
    videos = pd.read_parquet("s3://daskcap-test/out/videos").set_index("video_path")
    assert videos["status"].to_dict() == {
        "s3://daskcap-test/in/bikes.mp4": "ok",
        "s3://daskcap-test/in/broken.mp4": "read_failed",
        "s3://daskcap-test/in/nested/carphone pristine.mp4": "ok",
    }
    assert len(windows) == 2 and (windows["status"] == "ok").all()
    for window in windows.itertuples():
        assert fs.cat(f"daskcap-test/out/{window.preview_path}") == window.preview_webp
        assert parse_webp(window.preview_webp)["loop"] == 0
        assert fs.exists(f"daskcap-test/out/clips/{window.clip_id}.mp4")
    summary = json.loads(fs.cat("daskcap-test/out/summary.json"))
    assert summary["windows"]["total"] == 2
    from daskcap.storage import TEMPORARY_NAME

    assert not [path for path in fs.find("daskcap-test/out") if TEMPORARY_NAME.fullmatch(path.rsplit("/", 1)[-1])]  # no temporary leftovers


def test_a_job_on_a_running_cluster_reads_and_writes_the_bucket(s3_env, samples, cluster):
    """cluster/local.sh workers (started with the S3 settings in their environment) and jobs/caption_preview.py."""
    import fsspec

    root = Path(__file__).parent.parent
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir("daskcap-cluster")
    fs.put(str(samples / "bikes.mp4"), "daskcap-cluster/in/bikes.mp4")
    start, _ = cluster
    address = start(1, 0)  # s3_env has put the S3 settings in os.environ, which the workers inherit
    job = subprocess.run([sys.executable, "jobs/caption_preview.py", "--input", "s3://daskcap-cluster/in",
                          "--output", "s3://daskcap-cluster/out", "--scheduler", address, "--no-captions"],
                         capture_output=True, text=True, timeout=200, env={**os.environ, **s3_env}, cwd=root)
    assert job.returncode == 0, job.stderr
    fs.invalidate_cache()
    windows = pd.read_parquet("s3://daskcap-cluster/out/windows")
    assert len(windows) == 1 and windows["status"].tolist() == ["ok"]
    assert fs.exists(f"daskcap-cluster/out/{windows['preview_path'].iloc[0]}")
