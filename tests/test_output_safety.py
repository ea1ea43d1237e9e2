"""Safe by default (issue 23): what daskcap writes stays in OUTPUT and is daskcap's own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# --- containment --------------------------------------------------------------------------------


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_hostile_parquet_list_writes_nothing_outside_output(tmp_path, samples):
    import pandas as pd

    videos = tmp_path / "videos"
    (videos / "sub").mkdir(parents=True)
    for name in ("bikes.mp4", "carphone_pristine.mp4"):
        (videos / name).write_bytes((samples / name).read_bytes())
    listed = [
        "file:///../../.." + str(videos / "bikes.mp4"),  # `..` above the URL's root
        f"file://{videos}/sub/../../videos/carphone_pristine.mp4",  # `..` inside it
    ]
    pd.DataFrame({"path": listed}).to_parquet(tmp_path / "list.parquet")
    output = tmp_path / "deep" / "out"
    before = _files(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "daskcap.cli", "run", str(tmp_path / "list.parquet"), str(output), "--quiet", "--n-workers", "1",
         "--write-metas", "--upload-clips", "--generate-previews", "--fixed-stride-split-duration", "60"],
        cwd=ROOT, capture_output=True, text=True, timeout=200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    written = _files(tmp_path) - before
    assert written and all(output in path.parents for path in written), sorted(map(str, written - set(output.rglob("*"))))
    names = sorted(str(p.relative_to(output / "processed_videos")) for p in (output / "processed_videos").rglob("*.json"))
    assert names == [f"{videos.relative_to('/')}/{n}.json" for n in ("bikes.mp4", "carphone_pristine.mp4")]
    table = pd.read_parquet(output / "videos")
    assert sorted(table["video_path"]) == [f"file://{videos}/bikes.mp4", f"file://{videos}/carphone_pristine.mp4"]
    assert (table["status"] == "ok").all()


@pytest.mark.timeout(30)
def test_names_from_video_paths_stay_under_the_output():
    from daskcap.stages.nemo_files import video_relpath
    from daskcap.storage import OutsideOutput, normalise_video_path, under_root

    assert normalise_video_path("file:///../../x/v.mp4") == "file:///x/v.mp4"
    assert normalise_video_path("s3://bucket/../../a/./b.mp4") == "s3://bucket/a/b.mp4"
    for hostile in ("../../x/v.mp4", "file:///../../x/v.mp4", "s3://b/../../../x/v.mp4", "/..", "a/./../../../..", "..\x00/v.mp4"):
        relpath = video_relpath(hostile, "/in")
        assert under_root("/out", f"processed_videos/{relpath}.json").startswith("/out/processed_videos/")
        assert ".." not in relpath.split("/") and relpath
    for name in ("../x.json", "/etc/x", "a/../../b", "./a"):
        with pytest.raises(OutsideOutput):
            under_root("/out", name)


# --- ownership ----------------------------------------------------------------------------------


def _daskcap(*args: str, timeout: float = 200) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daskcap.cli", "run", *args, "--quiet", "--n-workers", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def videos(tmp_path, samples) -> Path:
    """A folder of videos with a user's own clips/ and report/ in it."""
    folder = tmp_path / "videos"
    for sub in ("clips", "report"):
        (folder / sub).mkdir(parents=True)
    (folder / "bikes.mp4").write_bytes((samples / "bikes.mp4").read_bytes())
    (folder / "clips" / "mine.mp4").write_bytes((samples / "carphone_pristine.mp4").read_bytes())
    (folder / "report" / "index.html").write_text("my report")
    return folder


@pytest.mark.timeout(120)
def test_an_output_overlapping_the_input_is_refused_before_any_work(tmp_path, videos):
    before = {p: p.read_bytes() for p in _files(tmp_path)}
    for input_path, output_path, relation in (
        (videos, videos, "is the input"),
        (videos, videos / "out", "is inside the input"),
        (videos / "bikes.mp4", videos, "holds the input"),
        (f"{videos}/*.mp4", videos / "clips", "is inside the input"),
    ):
        result = _daskcap(str(input_path), str(output_path), "--overwrite", "--upload-clips")
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and relation in lines[0] and "Traceback" not in result.stderr, result.stderr
    assert {p: p.read_bytes() for p in _files(tmp_path)} == before  # nothing written, nothing removed
    assert not (videos / "out").exists()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_overwrite_removes_only_what_daskcap_wrote(tmp_path, videos):
    output = tmp_path / "out"
    first = _daskcap(str(videos / "bikes.mp4"), str(output), "--upload-clips", "--write-metas")
    assert first.returncode == 0, first.stderr
    written = _files(output)
    (output / "clips" / "keep.mp4").write_bytes(b"a user's clip")
    refused = _daskcap(str(videos / "bikes.mp4"), str(output), "--overwrite", "--fixed-stride-split-duration", "3")
    assert refused.returncode == 2 and "clips/keep.mp4" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert _files(output) == written | {output / "clips" / "keep.mp4"}  # refused before removing anything
    (output / "clips" / "keep.mp4").unlink()
    (output / "notes.txt").write_text("beside the output, not in daskcap's folders")
    again = _daskcap(str(videos / "bikes.mp4"), str(output), "--overwrite", "--fixed-stride-split-duration", "3", "--no-upload-clips")
    assert again.returncode == 0, again.stderr
    assert (output / "notes.txt").exists() and not (output / "clips").exists()  # no clips this time: the old ones went
    assert json.loads((output / "summary.json").read_text())["clips"]["total"] > 1


@pytest.mark.timeout(120)
def test_a_second_run_into_a_locked_output_is_told_who_holds_it(tmp_path, samples):
    from daskcap.run.state import output_lock
    from daskcap.stages.write import ClipWriterStage

    output = tmp_path / "out"
    with output_lock(ClipWriterStage(output_path=str(output))):
        result = _daskcap(str(samples / "bikes.mp4"), str(output))
        assert [p.name for p in output.iterdir()] == [".daskcap-lock"]  # the refused run wrote nothing
    assert result.returncode == 2
    assert f"being written by another daskcap run (pid {os.getpid()} on" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not output.exists()  # the holder made OUTPUT and left it empty: gone with the lock
    with output_lock(ClipWriterStage(output_path=str(output))):  # released with its holder
        pass


# --- failure hygiene ----------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs (mounting needs root: skipped where it is not permitted)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _readable_tables(output: Path) -> None:
    """Every file a reader's glob finds opens, in pyarrow and in DuckDB."""
    import duckdb
    import pyarrow.parquet as pq

    for folder in ("windows", "videos"):
        parts = sorted((output / folder).glob("*.parquet"))
        for part in parts:
            pq.read_table(part)
        if parts:
            duckdb.sql(f"select count(*) from '{output}/{folder}/*.parquet'").fetchall()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_full_disk_ends_in_one_line_and_a_rerun_with_room_completes(small_disk, samples):
    import duckdb
    import pandas as pd

    from daskcap.storage import TEMPORARY_NAME

    filler = small_disk / "filler"
    stats = os.statvfs(small_disk)
    filler.write_bytes(b"\0" * (stats.f_bavail * stats.f_frsize - 96 * 1024))  # 96 KB left: less than one clip's mp4
    output = small_disk / "out"
    job = (str(samples / "bikes.mp4"), str(output), "--generate-previews", "--fixed-stride-split-duration", "4")
    full = _daskcap(*job)
    assert full.returncode == 1, full.stderr
    lines = full.stderr.strip().splitlines()
    # One line, from the job: the embedded workers leave a failed task to it (run/worker_logging.py).
    assert "Traceback" not in full.stderr and "Compute Failed" not in full.stderr, full.stderr
    assert len(lines) == 1 and lines[-1].startswith("daskcap: error: cannot write ") and "(ENOSPC)" in lines[-1], full.stderr
    assert str(output) in lines[-1]
    _readable_tables(output)

    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    read_only = _daskcap(*job)
    assert read_only.returncode != 0 and "Traceback" not in read_only.stderr
    assert len(read_only.stderr.strip().splitlines()) == 1 and str(output) in read_only.stderr, read_only.stderr
    subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)

    filler.unlink()
    again = _daskcap(*job)
    assert again.returncode == 0, again.stderr
    assert not [p for p in output.rglob("*") if TEMPORARY_NAME.fullmatch(p.name)]
    _readable_tables(output)
    windows = pd.read_parquet(output / "windows")
    assert len(windows) == json.loads((output / "summary.json").read_text())["windows"]["total"] > 1
    assert not windows.duplicated(["clip_id", "window_index"]).any() and (windows["status"] == "ok").all()
    assert duckdb.sql(f"select count(*) from '{output}/windows/*.parquet'").fetchall()[0][0] == len(windows)
    assert duckdb.sql(f"select count(*) from '{output}/videos/*.parquet'").fetchall()[0][0] == 1
