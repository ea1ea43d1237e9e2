"""Safe by default (issue 23): what a job listens on, and that it is opened only on purpose."""

from __future__ import annotations

import ipaddress
import logging
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from daskcap.run.cluster import warn_if_open
from daskcap.run.job import ClusterOptions
from daskcap.stages._params import ParamError

ROOT = Path(__file__).resolve().parent.parent


def _listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket of process ``pid`` and its descendants."""
    found = set()
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return found
    for process in processes:
        try:
            connections = process.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        found |= {(c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN}
    return found


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_captioning_job_listens_on_loopback_only(tmp_path, samples, tiny_models):
    job = subprocess.Popen(
        [sys.executable, "-m", "daskcap.cli", "run", str(samples / "bikes.mp4"), str(tmp_path / "out"), "--quiet",
         "--n-workers", "1", "--engine-workers", "1", "--captioning-model", str(tiny_models["vlm"]),
         "--captioning-max-output-tokens", "4", "--no-report"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    seen: set[tuple[str, int]] = set()
    while job.poll() is None:
        seen |= _listening(job.pid)
        time.sleep(0.2)
    stdout, stderr = job.communicate()
    assert job.returncode == 0, stderr[-3000:]
    assert "windows: 1 (1 ok)" in stdout
    # The scheduler, its dashboard, two nannies, two workers and their dashboards at least.
    assert len(seen) >= 6, seen
    assert all(ipaddress.ip_address(ip).is_loopback for ip, _ in seen), seen


@pytest.mark.timeout(30)
def test_opening_the_cluster_is_checked_and_warned_about(caplog):
    with pytest.raises(ParamError) as refused:
        ClusterOptions(listen_host="", dashboard_address="8787")
    assert len(refused.value.problems) == 2
    assert ClusterOptions(listen_host="0.0.0.0", dashboard_address=":8787").dashboard_address == ":8787"
    with caplog.at_level(logging.WARNING, logger="daskcap.run.cluster"):
        warn_if_open("127.0.0.1", "localhost:8787")
        assert not caplog.records
        warn_if_open("0.0.0.0", ":8787")
    assert [r.getMessage().split(" on ")[1].split(" ")[0] for r in caplog.records] == ["0.0.0.0", "every"]


@pytest.mark.timeout(30)
def test_the_listen_flags_reach_the_embedded_cluster(tmp_path):
    from test_flags import _run_args

    from daskcap.flags import build_pipeline

    (tmp_path / "in").mkdir()
    default = build_pipeline(_run_args(tmp_path)).cluster
    assert (default.listen_host, default.dashboard_address) == ("127.0.0.1", None)
    opened = build_pipeline(_run_args(tmp_path, "--listen-host", "0.0.0.0", "--dashboard-address", "127.0.0.1:8790")).cluster
    assert (opened.listen_host, opened.dashboard_address) == ("0.0.0.0", "127.0.0.1:8790")
