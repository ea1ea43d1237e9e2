"""The runner's resume and failure logic, fast: ``run_job`` against a LocalCluster in this
process (threads, not processes), on a handful of tiny real videos."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from distributed import Client, LocalCluster

from daskcap.run import tasks
from daskcap.run.job import ClusterOptions, Job, UsageError
from daskcap.run.runner import run_job
from daskcap.stages.clip import FixedStrideClipStage
from daskcap.stages.prepare import CaptionPreparationStage
from daskcap.stages.preview import PreviewStage
from daskcap.stages.read import VideoReaderStage
from daskcap.stages.write import ClipWriterStage

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def scheduler():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, Client(cluster):
        yield cluster.scheduler_address


@pytest.fixture
def videos(tmp_path, stamped):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(5):
        shutil.copyfile(stamped(30 + 10 * i, 30), folder / f"v{i}.mp4")
    return folder


def _job(source, output) -> Job:
    return Job(VideoReaderStage(str(source)), FixedStrideClipStage(clip_len_s=10.0, min_clip_length_s=0.5),
               CaptionPreparationStage(window_size=16, remainder_threshold=8), ClipWriterStage(str(output)), preview=PreviewStage())


def _run(job, scheduler, **kwargs) -> dict:
    options = ClusterOptions(scheduler=scheduler, windows_per_partition=2, videos_per_shard=2)
    return run_job(job, options, progress=False, **kwargs)


def _windows(output) -> pd.DataFrame:
    return pd.read_parquet(output / "windows").sort_values(["clip_id", "window_index"], ignore_index=True)


def test_a_resume_computes_only_the_partitions_without_a_marker(videos, tmp_path, scheduler):
    output = tmp_path / "out"
    first = _run(_job(videos, output), scheduler)
    assert first["shards"] == 3 and first["windows"]["by_status"] == {"ok": first["windows"]["total"]}
    reference = _windows(output)
    # Shard 1 loses a partition: its marker, its part file and the shard's finished mark.
    shard = output / "_daskcap" / "shards" / "00001"
    (shard / "finished.json").unlink()
    (shard / "done" / "part-00000.json").unlink()
    (output / "windows" / "part-00001-00000.parquet").unlink()
    again = _run(_job(videos, output), scheduler)
    assert again["resumed"] and again["partitions_computed"] == 1
    pd.testing.assert_frame_equal(_windows(output), reference)  # every window exactly once, same bytes
    assert again["videos"] == first["videos"] and again["windows"] == first["windows"]
    finished = _run(_job(videos, output), scheduler)  # nothing left to do
    assert finished["partitions_computed"] == 0


def test_a_run_stopped_while_listing_resumes_from_its_shards(videos, tmp_path, scheduler, monkeypatch):
    """Shards start while the input is still being listed: a run stopped then has shards
    done and no whole listing. The rerun lists again (checked against what the first run
    used), skips the finished shards, and computes only the missing partitions."""
    from daskcap.stages import listing

    monkeypatch.setattr(listing, "FILES_PER_PIECE", 2)  # three pieces of the five videos
    output = tmp_path / "out"
    first = _run(_job(videos, output), scheduler)
    reference = _windows(output)
    state = output / "_daskcap"
    (state / "listing" / "shards.json").unlink()
    assert len(json.loads((state / "listing" / "progress.json").read_text())["pieces"]) == 3
    shard = state / "shards" / "00002"
    (shard / "finished.json").unlink()
    (shard / "done" / "part-00000.json").unlink()
    (output / "windows" / "part-00002-00000.parquet").unlink()
    again = _run(_job(videos, output), scheduler)
    assert again["resumed"] and again["partitions_computed"] == 1 and again["windows"] == first["windows"]
    pd.testing.assert_frame_equal(_windows(output), reference)
    assert (state / "listing" / "shards.json").exists()


def test_retry_failed_probes_the_failed_videos_again(videos, tmp_path, scheduler, stamped):
    output = tmp_path / "out"
    broken = videos / "v9.mp4"
    broken.write_bytes(b"not a video")
    first = _run(_job(videos, output), scheduler)
    assert first["videos"]["by_status"] == {"ok": 5, "read_failed": 1}
    with pytest.raises(UsageError, match="--retry-failed needs an earlier run"):
        _run(_job(videos, tmp_path / "elsewhere"), scheduler, retry_failed=True)
    shutil.copyfile(stamped(40, 30), broken)  # the file is fixed
    untouched = _run(_job(videos, output), scheduler)  # a plain rerun keeps the failure
    assert untouched["partitions_computed"] == 0 and untouched["videos"]["by_status"] == {"ok": 5, "read_failed": 1}
    retried = _run(_job(videos, output), scheduler, retry_failed=True)
    assert retried["videos"]["by_status"] == {"ok": 6}
    assert retried["partitions_computed"] == 1  # only the fixed video's new partition
    windows = _windows(output)
    assert not windows.duplicated(["clip_id", "window_index"]).any() and str(broken) in set(windows["video_path"])


def test_a_failed_partition_marks_its_videos_and_a_rerun_completes_them(videos, tmp_path, scheduler, monkeypatch):
    output = tmp_path / "out"
    real = tasks.write_windows

    def refuse_v3(frame, params, name):  # a fault injected into the write of v3's partition
        if frame["video_path"].str.endswith("v3.mp4").any():
            raise OSError("injected: the disk refused the part file")
        return real(frame, params, name)

    monkeypatch.setattr(tasks, "write_windows", refuse_v3)
    failed = _run(_job(videos, output), scheduler)
    [failure] = failed["failed_partitions"]
    assert "injected" in failure["error"] and failure["videos"] == [str(videos / "v3.mp4")]
    table = pd.read_parquet(output / "videos").set_index("video_path")
    assert table.loc[str(videos / "v3.mp4"), "status"] == "task_failed"
    assert "injected" in table.loc[str(videos / "v3.mp4"), "error"]
    assert (table.drop(index=str(videos / "v3.mp4"))["status"] == "ok").all()
    assert not (output / "_daskcap" / "shards" / f"{failure['shard']:05d}" / "finished.json").exists()
    monkeypatch.setattr(tasks, "write_windows", real)
    rerun = _run(_job(videos, output), scheduler)
    assert rerun["failed_partitions"] == [] and rerun["partitions_computed"] == 1
    assert rerun["videos"]["by_status"] == {"ok": 5}
    summary = json.loads((output / "summary.json").read_text())
    assert summary["windows"]["total"] == len(_windows(output))


def test_a_shards_stages_are_map_partitions_of_its_dataframes(videos, tmp_path, scheduler):
    """paths -> read -> clip -> plan, then partitions -> prepare -> write: each read runs
    once though both the videos and the clips need it, and the windows of a partition are
    one fused task whose result is what the stage functions give called by hand."""
    from distributed import Client

    from daskcap.run import frames
    from daskcap.run.plan import probe_chunk, shard_group

    job = _job(videos, tmp_path / "out")
    paths = pd.DataFrame({"video_path": sorted(str(p) for p in videos.iterdir())})
    graph = frames.plan_graph(0, frames.shard_paths_frame(paths, len(paths), 3), job, 2, 2)
    names = [key[0] if isinstance(key, tuple) else key for key in dict(graph.__dask_graph__())]
    assert sum(name.startswith("read_partition") for name in names) == 3
    assert sum(name.startswith("clip_partition") for name in names) == 3
    with Client(scheduler) as client:
        plan = client.compute(graph)
        assert len(plan.result().videos) == 5
        videos_by_hand, clips_by_hand = probe_chunk(paths, job)
        pd.testing.assert_frame_equal(plan.result().clips.drop(columns="partition"), clips_by_hand)
        pending = plan.result().pending
        written = frames.windows_frame(plan, pending, job, write=False)
        parts = frames.partitions_of(written)
        assert len(parts) == len(pending) and all(len(dict(part.__dask_graph__())) == len(pending) for part in parts)
        computed = client.gather(client.compute(parts[:1]))[0]
        by_hand = tasks.prepare_partition(shard_group(plan.result(), pending[0]), job)
        pd.testing.assert_frame_equal(computed.drop(columns=["sampled_frames", "preview_webp", "window_mp4"], errors="ignore"),
                                      by_hand.drop(columns=["sampled_frames", "preview_webp", "window_mp4"], errors="ignore"))
