"""The input listed in pieces: the pieces read in order give the whole listing, on
workers, without the client ever holding the paths."""

from __future__ import annotations

import pandas as pd
import pytest
from distributed import Client, LocalCluster

from daskcap.run.job import Job, UsageError
from daskcap.run.listing import list_input
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
