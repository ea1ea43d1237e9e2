"""The input listed in pieces: the pieces read in order give the whole listing, on
workers, without the client ever holding the paths."""

from __future__ import annotations

import pandas as pd
import pytest
from distributed import Client, LocalCluster, as_completed

from daskcap.run.job import Job, UsageError
from daskcap.run.listing import InputListing, list_input
from daskcap.run.progress import Progress
from daskcap.run.state import OutputState
from daskcap.stages import listing
from daskcap.stages.clip import FixedStrideClipStage
from daskcap.stages.listing import list_piece, list_videos, plan_pieces
from daskcap.stages.prepare import CaptionPreparationStage
from daskcap.stages.read import VideoReaderStage
from daskcap.stages.write import ClipWriterStage


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, Client(cluster) as client:
        yield client


def _job(source: str, output: str, **reader) -> Job:
    return Job(VideoReaderStage(source, **reader), FixedStrideClipStage(), CaptionPreparationStage(), ClipWriterStage(output))


def _tree(root) -> list[str]:
    """Folders and files whose sorted order interleaves: top-level files between folders."""
    names = ["a.mp4", "a/x.mp4", "a/y/z.mov", "a_b.mp4", "b/1.mp4", "b/2.mkv", "b/notes.txt", "b.mp4", "c/d/e.webm", "d.MP4", "z.mp4"]
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    return sorted(str(root / name) for name in names if not name.endswith(".txt"))


def test_a_directory_in_many_pieces_lists_as_one_sorted_whole(tmp_path, monkeypatch):
    expected = _tree(tmp_path)
    whole = list_videos(VideoReaderStage(str(tmp_path)))["video_path"].tolist()
    assert whole == expected
    monkeypatch.setattr(listing, "FILES_PER_PIECE", 1)
    monkeypatch.setattr(listing, "FOLDERS_PER_PIECE", 1)
    pieces = plan_pieces(VideoReaderStage(str(tmp_path)))
    assert len(pieces) >= 8
    assert [p for piece in pieces for p in list_piece(piece, VideoReaderStage(str(tmp_path)))["video_path"]] == expected


def test_a_parquet_list_is_read_in_row_ranges_keeping_its_order_and_each_path_once(tmp_path, monkeypatch):
    paths = [f"/videos/v{i:03d}.mp4" for i in (5, 3, 9, 3, 1, 7, 5, 2, 8, 1, 0)]
    table = tmp_path / "list.parquet"
    pd.DataFrame({"path": paths}).to_parquet(table, row_group_size=4)  # row groups and pieces do not line up
    monkeypatch.setattr(listing, "ROWS_PER_PIECE", 3)
    assert len(plan_pieces(VideoReaderStage(str(table)))) == 4
    once = list(dict.fromkeys(paths))
    assert list_videos(VideoReaderStage(str(table)))["video_path"].tolist() == once
    assert list_videos(VideoReaderStage(str(table), video_limit=4))["video_path"].tolist() == once[:4]


def test_workers_list_the_pieces_and_the_client_keeps_counts(tmp_path, monkeypatch, client):
    paths = [f"/videos/v{i:03d}.mp4" for i in (5, 3, 9, 3, 1, 7, 5, 2, 8, 1, 0)]
    pd.DataFrame({"path": paths}).to_parquet(tmp_path / "list.parquet", row_group_size=4)
    monkeypatch.setattr(listing, "ROWS_PER_PIECE", 3)
    job = _job(str(tmp_path / "list.parquet"), str(tmp_path / "out"))
    saved = list_input(client, job, videos_per_shard=2, workers={}, max_in_flight=2, progress=Progress(False))
    once = list(dict.fromkeys(paths))
    # The later copies of 3, 5 and 1 were dropped from their pieces; the pieces' counts say so.
    assert saved.pieces == [3, 2, 2, 1] and saved.videos == len(once) and saved.shards == 4
    state = OutputState(job.writer.output_path)
    shards = [state.load_paths(saved.ranges(n))["video_path"].tolist() for n in range(saved.shards)]
    assert [p for shard in shards for p in shard] == once and all(len(s) <= 2 for s in shards)
    assert state.listing_info() == saved.info()


def test_an_input_with_no_video_is_refused_after_listing(tmp_path, client):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("no videos here")
    job = _job(str(tmp_path / "in"), str(tmp_path / "out"))
    with pytest.raises(UsageError, match="no videos found"):
        list_input(client, job, videos_per_shard=2, workers={}, max_in_flight=2, progress=Progress(False))
    with pytest.raises(FileNotFoundError, match="input not found"):
        list_input(client, _job(str(tmp_path / "missing"), str(tmp_path / "out")), 2, workers={}, max_in_flight=2, progress=Progress(False))


def _listed_step_by_step(lister: InputListing) -> list[tuple[int, bool]]:
    """Drive ``lister`` alone; (shards ready, complete) after each of its futures."""
    seen = []
    running = as_completed(lister.start())
    for future in running:
        if lister.owns(future):
            running.update(lister.on_done(future))
            seen.append((lister.ready(), lister.complete))
    return seen


def test_the_first_shards_are_ready_before_the_whole_input_is_listed(tmp_path, monkeypatch, client):
    paths = [f"/videos/v{i:03d}.mp4" for i in (5, 3, 9, 3, 1, 7, 5, 2, 8, 1, 0)]
    pd.DataFrame({"path": paths}).to_parquet(tmp_path / "list.parquet", row_group_size=4)
    monkeypatch.setattr(listing, "ROWS_PER_PIECE", 3)
    job = _job(str(tmp_path / "list.parquet"), str(tmp_path / "out"))
    lister = InputListing(client, job, 2, workers={}, max_in_flight=1, progress=Progress(False))
    steps = _listed_step_by_step(lister)
    # One piece at a time: shard 0 (rows 0-1) is ready once piece 0 (3 rows) is final.
    assert steps[0] == (1, False)
    assert steps[-1] == (4, True) and [ready for ready, _ in steps] == sorted(ready for ready, _ in steps)
    assert lister.listing().pieces == [3, 2, 2, 1]


def test_listing_stops_at_the_video_limit(tmp_path, monkeypatch, client):
    paths = [f"/videos/v{i:03d}.mp4" for i in range(30)]
    pd.DataFrame({"path": paths}).to_parquet(tmp_path / "list.parquet")
    monkeypatch.setattr(listing, "ROWS_PER_PIECE", 3)
    job = _job(str(tmp_path / "list.parquet"), str(tmp_path / "out"), video_limit=4)
    lister = InputListing(client, job, 2, workers={}, max_in_flight=1, progress=Progress(False))
    steps = _listed_step_by_step(lister)
    assert steps[-1] == (2, True) and lister.videos == 4
    state = OutputState(job.writer.output_path)
    assert [p for n in range(2) for p in state.load_paths(lister.listing().ranges(n))["video_path"]] == paths[:4]
    # Two of the ten pieces were listed (one more may have started before the limit was reached).
    assert len(list((tmp_path / "out" / "_daskcap" / "listing").glob("piece-*.parquet"))) <= 3


def test_a_run_stopped_while_listing_refuses_an_input_that_changed(tmp_path, monkeypatch, client):
    table = tmp_path / "list.parquet"
    pd.DataFrame({"path": [f"/videos/v{i:03d}.mp4" for i in range(7)]}).to_parquet(table)
    monkeypatch.setattr(listing, "ROWS_PER_PIECE", 3)
    job = _job(str(table), str(tmp_path / "out"))
    list_input(client, job, 2, workers={}, max_in_flight=2, progress=Progress(False))
    state = OutputState(job.writer.output_path)
    (tmp_path / "out" / "_daskcap" / "listing" / "shards.json").unlink()  # as if stopped before the listing was whole
    assert [count for count, _ in state.listing_progress()] == [3, 3, 1]
    # Listed again unchanged, it goes on; with a path of piece 1 changed, it stops.
    assert list_input(client, job, 2, workers={}, max_in_flight=2, progress=Progress(False)).videos == 7
    (tmp_path / "out" / "_daskcap" / "listing" / "shards.json").unlink()
    pd.DataFrame({"path": [f"/videos/v{i:03d}.mp4" for i in (0, 1, 2, 3, 40, 5, 6)]}).to_parquet(table)
    with pytest.raises(UsageError, match="changed since the run"):
        list_input(client, job, 2, workers={}, max_in_flight=2, progress=Progress(False))
