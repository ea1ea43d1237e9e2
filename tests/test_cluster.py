"""Jobs submitted to a cluster started by cluster/local.sh: separate processes, engines reused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import CLUSTER_SCRIPT, cluster_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).parent.parent


def _group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _submit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=240, cwd=ROOT)


def test_two_jobs_share_the_engine_and_stop_leaves_nothing(cluster, tmp_path, samples, tiny_models):
    start, state = cluster
    address = start(cpu=1, engines=1)
    assert address.startswith("tcp://")
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("bikes.mp4", "carphone_pristine.mp4"):
        shutil.copyfile(samples / name, videos / name)

    first = _submit("-m", "daskcap.cli", "run", str(videos), str(tmp_path / "out1"), "--scheduler", address,
                    "--captioning-model", str(tiny_models["vlm"]), "--captioning-max-output-tokens", "6", "--quiet")
    assert first.returncode == 0, first.stderr
    second = _submit("jobs/caption_preview.py", "--input", str(videos), "--output", str(tmp_path / "out2"),
                     "--scheduler", address, "--captioning-model", str(tiny_models["vlm"]), "--max-output-tokens", "6")
    assert second.returncode == 0, second.stderr

    for output in ("out1", "out2"):
        windows = pd.read_parquet(tmp_path / output / "windows")
        assert len(windows) == 2 and (windows["status"] == "ok").all() and windows["caption"].notna().all()
    loads = []
    for output in ("out1", "out2"):
        workers = json.loads((tmp_path / output / "summary.json").read_text())["workers"]
        engines = [w for w in workers.values() if w["engine"]]
        assert len(engines) == 1 and engines[0]["partitions_captioned"] >= 1
        loads.append(engines[0]["model_loads"])
    assert loads == [{str(tiny_models["vlm"]): 1}, {}]  # loaded once across both jobs

    pids = [int(p.read_text()) for p in state.glob("*.pid")]
    assert len(pids) == 3  # scheduler, CPU workers, engine workers
    stop = subprocess.run(["bash", str(CLUSTER_SCRIPT), "stop", "--dir", str(state)], capture_output=True, text=True, timeout=60, env=cluster_env())
    assert stop.returncode == 0, stop.stderr
    assert not any(_group_alive(pid) for pid in pids)


def test_captions_on_a_cluster_without_engine_workers_are_refused(cluster, tmp_path, samples, tiny_models):
    start, _ = cluster
    address = start(cpu=1, engines=0)
    result = _submit("-m", "daskcap.cli", "run", str(samples / "bikes.mp4"), str(tmp_path / "out"), "--scheduler", address,
                     "--captioning-model", str(tiny_models["vlm"]), "--quiet")
    assert result.returncode == 2
    assert "engine workers" in result.stderr and "GPU=1" in result.stderr
    assert not (tmp_path / "out").exists()
    # Without captions the same cluster runs the job.
    result = _submit("-m", "daskcap.cli", "run", str(samples / "bikes.mp4"), str(tmp_path / "out"), "--scheduler", address, "--quiet")
    assert result.returncode == 0, result.stderr
