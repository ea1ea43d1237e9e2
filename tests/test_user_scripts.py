"""A user's script calls ``pipeline.run()`` at module level, unguarded, as NeMo Curator's quickstart
does: it runs from a file, from ``python -c``, and, stopped by Ctrl-C or killed, leaves no
process behind. The embedded cluster's workers are processes of their own (run/worker_process.py)
that never import the user's ``__main__``."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from test_docs import REPO, check_output, processes_tagged, run_as_user

QUICKSTART = re.search(r"## Python quickstart.*?```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)[1]


@pytest.fixture
def folder(tmp_path, samples) -> Path:
    (tmp_path / "videos").mkdir()
    for name in ("bikes.mp4", "carphone_pristine.mp4"):
        os.symlink(samples / name, tmp_path / "videos" / name)
    return tmp_path


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_quickstart_runs_from_python_c_and_says_the_low_resolution_once(folder):
    result = run_as_user([sys.executable, "-c", QUICKSTART], folder)
    assert result.returncode == 0, result.stderr[-3000:]
    assert check_output(folder) is not None
    # One line for the job, with a count, not one per video from every worker.
    lines = [line for line in result.stderr.splitlines() if "below the preview" in line]
    assert len(lines) == 1 and "1 of 2 videos have a source height below the preview's 240 px" in lines[0], lines


def _start(folder: Path, tag: str) -> subprocess.Popen:
    (folder / "quickstart.py").write_text(QUICKSTART)
    env = {**os.environ, "DOC_TEST_RUN": tag}
    # As a terminal starts it: SIGINT delivered to the script (a test runner's background job ignores it).
    return subprocess.Popen([sys.executable, "quickstart.py"], cwd=folder, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for_workers(script: subprocess.Popen, n: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        workers = [p for p in psutil.Process(script.pid).children() if "daskcap.run.worker_process" in " ".join(p.cmdline())]
        if len(workers) >= n:
            time.sleep(1.0)  # and their nannies' workers
            return
        time.sleep(0.2)
    raise AssertionError("the embedded cluster's workers did not start")


@pytest.fixture
def many_videos(folder, samples) -> Path:
    for i in range(12):
        os.symlink(samples / "bikes.mp4", folder / "videos" / f"bikes_{i:02d}.mp4")
    return folder


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "killed"])
def test_a_script_stopped_mid_job_leaves_no_process(many_videos, how):
    tag = uuid.uuid4().hex
    script = _start(many_videos, tag)
    _wait_for_workers(script, 2)
    script.send_signal(how)
    script.wait(60)
    assert script.returncode != 0
    assert not processes_tagged(tag), "workers outlived the script"
