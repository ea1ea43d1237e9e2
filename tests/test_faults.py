"""Fault injection: bad inputs, a killed worker, a killed client and the resume, with exact row accounting."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from faultcorpus import build_corpus
from videogen import write_stamped_video

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).parent.parent


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "daskcap.cli", "run", *args]


def _run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(_cli(*args), capture_output=True, text=True, timeout=240, cwd=ROOT, **kwargs)


def _tables(output: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    windows = pd.read_parquet(output / "windows").sort_values(["clip_id", "window_index"], ignore_index=True)
    videos = pd.read_parquet(output / "videos").sort_values("video_path", ignore_index=True)
    return windows, videos


def _assert_same_output(output: Path, reference: Path) -> None:
    windows, videos = _tables(output)
    expected_windows, expected_videos = _tables(reference)
    assert not windows.duplicated(["clip_id", "window_index"]).any()  # every window exactly once
    pd.testing.assert_frame_equal(windows, expected_windows)  # same rows, ids, bytes
    pd.testing.assert_frame_equal(videos, expected_videos)
    assert sorted(p.name for p in (output / "clips").iterdir()) == sorted(p.name for p in (reference / "clips").iterdir())


def _markers(output: Path) -> int:
    """Completion markers of every shard."""
    folder = output / "_daskcap" / "shards"
    return len(list(folder.glob("*/done/part-*.json"))) if folder.exists() else 0


def _wait_for_markers(output: Path, count: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while _markers(output) < count:
        assert process.poll() is None, f"the job ended before {count} partitions were done"
        assert time.time() < deadline, "no progress"
        time.sleep(0.1)


# --- bad inputs ---------------------------------------------------------------------------------


def test_every_bad_input_is_a_row_and_the_good_ones_are_complete(tmp_path):
    expected = build_corpus(tmp_path / "corpus")
    listing = tmp_path / "inputs.parquet"
    pd.DataFrame({"path": [str(p) for p in expected]}).to_parquet(listing)
    result = _run(str(listing), str(tmp_path / "out"), "--n-workers", "2", "--quiet")
    assert result.returncode == 0, result.stderr
    assert not (ROOT / "pwned").exists() and not (tmp_path / "pwned").exists()  # names are never run as commands

    windows, videos = _tables(tmp_path / "out")
    statuses = dict(zip(videos["video_path"], videos["status"], strict=True))
    assert statuses == {str(path): status for path, status in expected.items()}  # inputs in = rows out, by status
    assert videos["error"][videos["status"] != "ok"].notna().all()
    assert int(videos["num_windows"].sum()) == len(windows)
    good = videos[videos["status"] == "ok"]
    assert (good["num_windows"] >= 1).all()
    assert windows.loc[windows["video_path"].isin(good["video_path"]), "status"].eq("ok").all()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["videos"]["total"] == len(expected)
    assert sum(summary["windows"]["by_status"].values()) == len(windows)
    # Output paths come only from ids: nothing was written outside the output's own folders.
    assert {p.name for p in (tmp_path / "out").iterdir()} <= {
        "windows", "videos", "previews", "clips", "metas", "processed_videos", "processed_clip_chunks", "summary.json", "report", "_daskcap", ".daskcap-lock"}


def test_a_per_video_timeout_is_recorded(tmp_path, stamped):
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copyfile(stamped(300, 30), videos / "a.mp4")
    result = _run(str(videos), str(tmp_path / "out"), "--video-timeout-s", "0.000001", "--n-workers", "1", "--quiet")
    assert result.returncode == 0, result.stderr
    windows, video_rows = _tables(tmp_path / "out")
    assert windows["status"].tolist() == ["timed_out"] and "--video-timeout-s" in windows["error"].iloc[0]
    assert video_rows["status"].tolist() == ["timed_out"]


# --- killed workers and clients ---------------------------------------------------------------


@pytest.fixture(scope="module")
def long_job(tmp_path_factory):
    """Twenty 10 s clips (one partition each) and a clean, uninterrupted run of them."""
    folder = tmp_path_factory.mktemp("long")
    videos = folder / "videos"
    videos.mkdir()
    for i in range(10):
        write_stamped_video(videos / f"video {i}.mp4", 600, 30, width=320, height=240)
    flags = ["--windows-per-partition", "1", "--n-workers", "2", "--quiet", "--no-report"]
    clean = folder / "clean"
    result = _run(str(videos), str(clean), *flags)
    assert result.returncode == 0, result.stderr
    assert json.loads((clean / "summary.json").read_text())["partitions"] == 20
    return videos, flags, clean


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT], ids=["sigkill", "sigint"])
def test_a_killed_client_resumes_to_the_same_output(long_job, tmp_path, how):
    videos, flags, clean = long_job
    output = tmp_path / "out"
    process = subprocess.Popen(_cli(str(videos), str(output), *flags), cwd=ROOT, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_markers(output, 3, process)
    workers = psutil.Process(process.pid).children(recursive=True)
    if how == signal.SIGKILL:
        os.killpg(process.pid, signal.SIGKILL)  # the client, at once
    else:
        process.send_signal(signal.SIGINT)  # Ctrl-C in the client
    process.wait(timeout=60)
    # The embedded workers (sessions of their own) close once the client is gone, and may
    # finish a partition first: count the markers once they are gone.
    _, alive = psutil.wait_procs(workers, timeout=60)
    assert not alive
    done = _markers(output)
    assert 3 <= done < 20

    rerun = _run(str(videos), str(output), *flags)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads((output / "summary.json").read_text())
    assert summary["resumed"] is True and summary["partitions_computed"] == 20 - done
    _assert_same_output(output, clean)


def test_a_worker_killed_mid_job_loses_nothing(long_job, tmp_path, cluster):
    from distributed import Client

    videos, flags, clean = long_job
    start, _ = cluster
    address = start(cpu=2, engines=0)
    output = tmp_path / "out"
    job_flags = [f for f in flags if f not in ("--n-workers", "2")]
    process = subprocess.Popen(_cli(str(videos), str(output), *job_flags, "--scheduler", address), cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for_markers(output, 2, process)
    with Client(address, timeout="20s") as client:
        pids = client.run(os.getpid)
    os.kill(sorted(pids.values())[0], signal.SIGKILL)  # its nanny starts a new one
    _, stderr = process.communicate(timeout=200)
    assert process.returncode == 0, stderr
    assert json.loads((output / "summary.json").read_text())["windows"]["total"] == 20
    _assert_same_output(output, clean)


# --- reruns -------------------------------------------------------------------------------------


def test_another_configuration_into_the_same_output_is_refused(long_job, tmp_path, stamped):
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copyfile(stamped(90, 30), videos / "a.mp4")
    assert _run(str(videos), str(tmp_path / "out"), "--n-workers", "1", "--quiet").returncode == 0
    again = _run(str(videos), str(tmp_path / "out"), "--n-workers", "1", "--quiet")
    assert again.returncode == 0  # same settings: resumes (nothing left to do)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["partitions_computed"] == 0
    refused = _run(str(videos), str(tmp_path / "out"), "--preview-target-fps", "2", "--quiet")
    assert refused.returncode == 2
    assert "another configuration" in refused.stderr and "--overwrite" in refused.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert len(summary["config_hash"]) == 16


def test_retry_failed_reprocesses_only_the_failures(tmp_path, stamped):
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copyfile(stamped(90, 30), videos / "good.mp4")
    (videos / "late.mp4").write_text("not yet a video")
    write_stamped_video(videos / "strip.mp4", 60, 30, width=4000, height=16)
    flags = ["--n-workers", "1", "--quiet", "--no-report"]
    assert _run(str(videos), str(tmp_path / "out"), *flags).returncode == 0
    _, first = _tables(tmp_path / "out")
    assert first.set_index("video_path")["status"].to_dict()[str(videos / "late.mp4")] == "read_failed"

    shutil.copyfile(stamped(120, 30), videos / "late.mp4")  # the file is fixed
    retry = _run(str(videos), str(tmp_path / "out"), *flags, "--retry-failed")
    assert retry.returncode == 0, retry.stderr
    windows, second = _tables(tmp_path / "out")
    statuses = second.set_index("video_path")["status"].to_dict()
    assert statuses == {str(videos / "good.mp4"): "ok", str(videos / "late.mp4"): "ok", str(videos / "strip.mp4"): "encode_failed"}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["partitions_computed"] == 2  # the strip's partition again, and the late video's new one
    assert len(windows) == 3 and not windows.duplicated(["clip_id", "window_index"]).any()
