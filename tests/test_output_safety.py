"""Safe by default (issue 23): what daskcap writes stays in OUTPUT and is daskcap's own."""

from __future__ import annotations

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
