"""What an output remembers for resuming: completion markers at any partition count."""

from __future__ import annotations

import json

import pandas as pd

from daskcap import schema
from daskcap.run.state import OutputState, ShardState
from daskcap.stages.write import INDEX_COLUMNS


def test_markers_past_five_digits_are_read_whole(tmp_path):
    state = ShardState(str(tmp_path), 3)
    index = schema.empty_frame(schema.WINDOW_SCHEMA)[INDEX_COLUMNS]
    for number in (7, 10_000, 12_345, 99_999, 100_000, 123_456, 1_000_000):
        state.mark_done(number, index, {"write": 0.1})
    # Read as five digits, part-100000 was partition 10000 and part-123456 was 12345.
    assert state.done_partitions() == {7, 10_000, 12_345, 99_999, 100_000, 123_456, 1_000_000}
    frame, seconds = state.read_done(123_456)
    assert frame.empty and seconds == {"write": 0.1}


def test_a_resume_over_a_hundred_thousand_partitions_skips_exactly_the_finished_ones(tmp_path):
    """120,000 partitions, markers written directly; the unfinished ones are those a
    five-digit reading would have taken for finished ones (and a few others)."""
    state = ShardState(str(tmp_path), 0)
    total = 120_000
    unfinished = {10_000, 12_345, 100_000, 100_001, 119_999, 0, 54_321}
    folder = tmp_path / "_daskcap" / "shards" / "00000" / "done"
    folder.mkdir(parents=True)
    marker = json.dumps({"partition": 0, "stage_seconds": {}, "windows": []})
    for number in range(total):
        if number not in unfinished:
            (folder / f"part-{number:05d}.json").write_text(marker)
    (folder / ".tmp-part-00000.json").write_text(marker)  # an interrupted write is not a marker
    done = state.done_partitions()
    assert len(done) == total - len(unfinished)
    pending = [n for n in range(total) if n not in done]  # what run_job computes again
    assert pending == sorted(unfinished)
    assert pd.Index(sorted(done)).is_unique


def test_shards_are_row_ranges_of_the_listed_pieces(tmp_path):
    from daskcap.run.listing import Listing

    state = OutputState(str(tmp_path))
    assert not state.has_listing()
    names = iter(f"v{i:02d}.mp4" for i in range(10))
    for number, count in enumerate([3, 5, 2]):
        state.save_piece(number, pd.DataFrame({"video_path": [next(names) for _ in range(count)]}))
    listing = Listing([3, 5, 2], 10, videos_per_shard=4)
    state.save_listing(listing.info())
    assert state.has_listing()
    saved = Listing.from_info(state.listing_info())
    assert saved.shards == 3 and [saved.size(n) for n in range(3)] == [4, 4, 2]
    assert saved.ranges(0) == [("piece-00000", 0, 3), ("piece-00001", 0, 1)]
    shards = [state.load_paths(saved.ranges(n))["video_path"].tolist() for n in range(3)]
    assert shards == [["v00.mp4", "v01.mp4", "v02.mp4", "v03.mp4"], ["v04.mp4", "v05.mp4", "v06.mp4", "v07.mp4"], ["v08.mp4", "v09.mp4"]]
    # A video limit cuts the last shard short, mid-piece.
    assert state.load_paths(Listing([3, 5, 2], 6, 4).ranges(1))["video_path"].tolist() == ["v04.mp4", "v05.mp4"]


def test_a_listing_saved_per_shard_by_an_earlier_daskcap_still_resumes(tmp_path):
    from daskcap.run.listing import Listing

    state = OutputState(str(tmp_path))
    (tmp_path / "_daskcap" / "listing").mkdir(parents=True)
    for number, start in enumerate((0, 3)):
        paths = pd.DataFrame({"video_path": [f"v{i}.mp4" for i in range(start, start + 3)]})
        paths.to_parquet(tmp_path / "_daskcap" / "listing" / f"shard-{number:05d}.parquet", index=False)
    state.save_listing({"shards": 2, "videos": 6})
    listing = Listing.from_info(state.listing_info())
    assert listing.shards == 2
    assert state.load_paths(listing.ranges(1))["video_path"].tolist() == ["v3.mp4", "v4.mp4", "v5.mp4"]


def test_a_shard_remembers_it_is_finished(tmp_path):
    shard = OutputState(str(tmp_path)).shard(1)
    assert shard.finished() is None
    shard.mark_finished({"videos": {"total": 3}})
    assert shard.finished() == {"videos": {"total": 3}}
    shard.clear_finished()
    assert shard.finished() is None


def test_fields_that_change_no_output_stay_out_of_the_hash():
    from daskcap.run.job import config_hash

    base = {"writer": {"output_path": "o", "generate_captions": False, "verbose": False},
            "caption": {"model_does_preprocess": False, "max_output_tokens": 512},
            "prepare": {"model_does_preprocess": False}}
    same = {"writer": {"output_path": "o", "generate_captions": True, "verbose": True},
            "caption": {"model_does_preprocess": True, "max_output_tokens": 512},
            "prepare": {"model_does_preprocess": False}}
    assert config_hash(base) == config_hash(same)
    changed = {**base, "prepare": {"model_does_preprocess": True}}  # this one keeps frames at source size
    assert config_hash(changed) != config_hash(base)
