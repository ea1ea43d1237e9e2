"""The Dask layer's own logic: partition sizing by window count."""

import pandas as pd
import pytest

from daskcap import schema
from daskcap.run.plan import plan_partitions
from daskcap.stages.prepare import CaptionPreparationStage
from daskcap.video.windows import split_windows


def _clips(frame_counts):
    return schema.frame_from_rows(
        [{"video_path": f"v{i // 3}", "clip_index": i % 3, "num_frames": n, "status": "ok"} for i, n in enumerate(frame_counts)],
        schema.CLIP_SCHEMA,
    )


def test_partitions_are_bounded_by_window_count():
    # 300-frame clips are one window; 900-frame clips are four (256/128 windows).
    clips = _clips([300, 900, 300, 300, 900, 900, 300, 3, 300, 300])
    groups = plan_partitions(clips, CaptionPreparationStage(), windows_per_partition=4, n_workers=1)
    assert sum(len(g) for g in groups) == len(clips)
    assert pd.concat(groups)["num_frames"].tolist() == clips["num_frames"].tolist()  # order kept
    for group in groups:
        windows = sum(len(split_windows(n, 256, 128)) for n in group["num_frames"])
        assert windows <= 4 or len(group) == 1  # a clip bigger than the bound stays alone


def test_small_jobs_still_spread_over_every_worker():
    clips = _clips([300] * 8)
    groups = plan_partitions(clips, CaptionPreparationStage(), windows_per_partition=64, n_workers=2)
    assert len(groups) == 4  # two per worker, not one partition of 8


def test_no_clips_no_partitions():
    assert plan_partitions(_clips([]), CaptionPreparationStage(), 8, 2) == []


def test_an_output_that_is_not_a_daskcap_run_is_refused_then_overwritten_on_request(tmp_path):
    from daskcap.run.job import UsageError
    from daskcap.run.state import prepare_output
    from daskcap.stages.write import ClipWriterStage

    output = tmp_path / "out"
    (output / "windows").mkdir(parents=True)
    (output / "windows" / "part-00000-00003.parquet").write_bytes(b"an old run's")
    (output / "notes.txt").write_text("not ours")
    writer = ClipWriterStage(output_path=str(output))
    with pytest.raises(UsageError, match="already holds files \\(windows\\).*--overwrite"):
        prepare_output(writer, overwrite=False)
    assert (output / "windows" / "part-00000-00003.parquet").exists()  # nothing removed without --overwrite
    (output / "windows" / "old.parquet").write_bytes(b"someone else's")
    with pytest.raises(UsageError, match="did not write \\(windows/old.parquet\\)"):
        prepare_output(writer, overwrite=True)
    assert (output / "windows" / "part-00000-00003.parquet").exists()  # refused before removing anything
    (output / "windows" / "old.parquet").unlink()
    prepare_output(writer, overwrite=True)
    assert not (output / "windows").exists() and (output / "notes.txt").read_text() == "not ours"  # only its own files go
    prepare_output(ClipWriterStage(output_path=str(tmp_path / "dry"), dry_run=True), overwrite=False)
    assert not (tmp_path / "dry").exists()  # a dry run touches nothing
