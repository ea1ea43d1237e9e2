"""The streaming runner: shards, bounded partitions in flight, per-shard outputs and resume."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def daskcap(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daskcap.cli", "run", *args], capture_output=True, text=True, timeout=280)


@pytest.fixture(scope="module")
def twelve_videos(tmp_path_factory, stamped):
    folder = tmp_path_factory.mktemp("twelve")
    for i in range(12):
        shutil.copyfile(stamped(60 + 10 * i, 30), folder / f"v{i:02d}.mp4")
    return folder


def test_shards_stream_with_few_partitions_in_flight(twelve_videos, tmp_path):
    output = tmp_path / "out"
    flags = ["--videos-per-shard", "5", "--windows-per-partition", "1", "--n-workers", "1", "--quiet", "--no-report"]
    result = daskcap(str(twelve_videos), str(output), *flags)
    assert result.returncode == 0, result.stderr
    summary = json.loads((output / "summary.json").read_text())
    assert summary["shards"] == 3 and summary["partitions"] == 12 and summary["windows"]["by_status"] == {"ok": 12}
    assert summary["videos"] == {"total": 12, "by_status": {"ok": 12}}
    # One CPU worker: two partitions in flight at most, and the scheduler never held the whole job.
    assert 1 <= summary["most_partitions_in_flight"] <= 2
    assert summary["client"]["scheduler_most_tasks"] < 12 * 3
    assert summary["client"]["first_window_s"] is not None and summary["client"]["first_window_s"] < summary["wall_s"]
    assert sorted(p.name for p in (output / "videos").iterdir()) == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    videos = pd.read_parquet(output / "videos")
    assert sorted(videos["video_path"]) == sorted(str(p) for p in twelve_videos.iterdir())
    assert (videos["num_windows"] == 1).all()
    windows = pd.read_parquet(output / "windows")
    assert len(windows) == 12 and not windows.duplicated(["clip_id", "window_index"]).any()

    # A finished job resumes from each shard's counts: nothing is computed again.
    again = daskcap(str(twelve_videos), str(output), *flags)
    assert again.returncode == 0, again.stderr
    resumed = json.loads((output / "summary.json").read_text())
    assert resumed["resumed"] and resumed["partitions_computed"] == 0
    assert resumed["windows"] == summary["windows"] and resumed["videos"] == summary["videos"]


def test_a_shard_left_unfinished_is_completed_on_resume(twelve_videos, tmp_path):
    output = tmp_path / "out"
    flags = ["--videos-per-shard", "5", "--windows-per-partition", "1", "--n-workers", "1", "--quiet", "--no-report"]
    assert daskcap(str(twelve_videos), str(output), *flags).returncode == 0
    clean = pd.read_parquet(output / "windows").sort_values(["clip_id"]).reset_index(drop=True)
    # As if the client died in shard 1: two of its partitions and its end were never written.
    shard = output / "_daskcap" / "shards" / "00001"
    (shard / "finished.json").unlink()
    for number in (1, 3):
        (shard / "done" / f"part-{number:05d}.json").unlink()
        (output / "windows" / f"part-00001-{number:05d}.parquet").unlink()
    (output / "videos" / "part-00001.parquet").unlink()
    result = daskcap(str(twelve_videos), str(output), *flags)
    assert result.returncode == 0, result.stderr
    summary = json.loads((output / "summary.json").read_text())
    assert summary["partitions_computed"] == 2 and summary["windows"]["by_status"] == {"ok": 12}
    pd.testing.assert_frame_equal(pd.read_parquet(output / "windows").sort_values(["clip_id"]).reset_index(drop=True), clean)
    assert len(pd.read_parquet(output / "videos")) == 12
