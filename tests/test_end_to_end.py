"""`daskcap run` and the Pipeline API end to end, on a real embedded Dask cluster."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest
from videogen import decode_stamps, parse_webp

from daskcap import schema

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

README = Path(__file__).parent.parent / "README.md"


def daskcap(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "daskcap.cli", *args], capture_output=True, text=True, timeout=200
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, samples, stamped) -> Path:
    """Real videos, a 900-frame stamped video (4 windows), and two broken files."""
    folder = tmp_path_factory.mktemp("corpus")
    for name in ("bikes.mp4", "carphone_pristine.mp4"):
        shutil.copyfile(samples / name, folder / name)
    nested = folder / "more videos"
    nested.mkdir()
    shutil.copyfile(stamped(900, 30), nested / "stamped 900 frames.mp4")
    (folder / "broken.mp4").write_text("this is not a video")
    (folder / "empty.mov").write_bytes(b"")
    return folder


@pytest.fixture(scope="module")
def run_output(corpus, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    output = tmp_path_factory.mktemp("run") / "out"
    result = daskcap(
        "run", str(corpus), str(output),
        "--fixed-stride-split-duration", "30", "--n-workers", "2", "--windows-per-partition", "2", "--quiet",
    )
    assert result.returncode == 0, result.stderr
    return output, result


def test_cli_reports_where_the_output_is(run_output):
    output, result = run_output
    assert str(output) in result.stdout
    assert re.search(r"windows: 6 \(6 ok\)", result.stdout)


def test_video_table(run_output, corpus):
    output, _ = run_output
    videos = pd.read_parquet(output / "videos").set_index("video_path")
    contract = ["status", "error", "duration_s", "fps", "width", "height", "codec", "num_frames", "num_clips", "num_windows"]
    assert set(contract) <= set(videos.columns)
    assert len(videos) == 5  # every input has a row
    stamped = videos.loc[str(corpus / "more videos" / "stamped 900 frames.mp4")]
    assert (stamped.status, stamped.num_frames, stamped.num_clips, stamped.num_windows) == ("ok", 900, 1, 4)
    assert videos.loc[str(corpus / "broken.mp4"), "status"] == schema.READ_FAILED
    assert videos.loc[str(corpus / "empty.mov"), "status"] == schema.READ_FAILED
    assert videos.loc[str(corpus / "bikes.mp4"), "num_windows"] == 1


def test_window_table_schema_and_contents(run_output):
    output, _ = run_output
    table = pq.read_table(output / "windows")
    contract = [
        "video_path", "clip_id", "clip_index", "clip_start_s", "clip_end_s", "window_index", "start_frame", "end_frame",
        "num_sampled_frames", "sampled_width", "sampled_height", "prompt", "caption", "enhanced_caption",
        "preview_path", "preview_webp", "status", "error",
    ]
    assert set(contract) <= set(table.column_names)
    for name in contract:
        assert table.schema.field(name).type == schema.WINDOW_OUTPUT_SCHEMA.field(name).type
    assert "sampled_frames" not in table.column_names  # model input stays in memory by default
    windows = table.to_pandas().sort_values(["video_path", "clip_index", "window_index"])
    assert len(windows) == 6 and windows["status"].eq("ok").all()
    assert windows["caption"].isna().all() and windows["enhanced_caption"].isna().all()
    stamped = windows[windows["video_path"].str.contains("stamped")]
    assert stamped[["start_frame", "end_frame"]].values.tolist() == [[0, 255], [256, 511], [512, 767], [768, 899]]
    assert stamped["num_sampled_frames"].tolist() == [18, 18, 18, 8]
    assert decode_stamps(stamped["window_mp4"].iloc[2]) == list(range(512, 768))


def test_preview_and_clip_files(run_output):
    output, _ = run_output
    windows = pd.read_parquet(output / "windows")
    for window in windows.itertuples():
        assert window.preview_path == f"previews/{window.clip_id}/{window.start_frame}_{window.end_frame}.webp"
        on_disk = (output / window.preview_path).read_bytes()
        assert on_disk == window.preview_webp
        webp = parse_webp(on_disk)
        assert webp["animated"] and webp["loop"] == 0 and webp["canvas"][1] == 240 and webp["canvas"][0] % 2 == 0
    clip_ids = set(windows["clip_id"])
    assert {p.stem for p in (output / "clips").glob("*.mp4")} == clip_ids
    stamped_clip = windows.loc[windows["video_path"].str.contains("stamped"), "clip_id"].iloc[0]
    assert decode_stamps(output / "clips" / f"{stamped_clip}.mp4") == list(range(900))
    from daskcap.storage import TEMPORARY_NAME

    leftovers = [p for p in output.rglob("*") if TEMPORARY_NAME.fullmatch(p.name)]
    assert leftovers == []


def test_summary_json(run_output):
    output, _ = run_output
    summary = json.loads((output / "summary.json").read_text())
    assert summary["videos"] == {"total": 5, "by_status": {"ok": 3, "read_failed": 2}}
    assert summary["windows"] == {"total": 6, "by_status": {"ok": 6}}
    assert summary["clips"]["total"] == 3
    assert set(summary["stage_seconds"]) == {"read", "clip", "prepare", "preview", "write", "finish"}
    # Prepare builds the previews: their seconds are the preview stage's, not prepare's.
    assert summary["stage_seconds"]["preview"] > 0 and summary["stage_seconds"]["prepare"] > 0
    assert set(summary["stage_cpu_seconds"]) == set(summary["stage_seconds"])
    assert summary["stage_cpu_seconds"]["prepare"] > 0
    # A worker holds the Python runtime, pandas, pyarrow and PyAV: tens of MB at least.
    peaks = summary["stage_peak_rss_mb"]
    assert all(50 < peak < 4096 for peak in peaks.values())
    assert [w["peak_rss_mb"] >= max(peaks.values()) for w in summary["workers"].values()].count(True) >= 1
    assert 0 < summary["cluster_start_s"] < summary["wall_s"]
    assert summary["windows_per_s"] > 0
    assert summary["partitions"] >= 2


def test_duckdb_reads_the_tables_as_they_are(run_output):
    output, _ = run_output
    statuses = duckdb.sql(f"select status, count(*) from '{output}/windows/*.parquet' group by status").fetchall()
    assert statuses == [("ok", 6)]
    joined = duckdb.sql(
        f"select v.codec, count(*) from '{output}/windows/*.parquet' w "
        f"join '{output}/videos/*.parquet' v using (video_path) group by v.codec"
    ).fetchall()
    assert joined == [("h264", 6)]


def test_existing_output_is_not_overwritten_silently(run_output, corpus):
    output, _ = run_output
    result = daskcap("run", str(corpus), str(output), "--quiet")
    assert result.returncode == 2
    assert "--overwrite" in result.stderr


def test_bad_flags_are_reported_together_before_any_work(corpus, tmp_path):
    result = daskcap(
        "run", str(corpus), str(tmp_path / "out"),
        "--captioning-window-size", "2", "--preview-quality", "101", "--preview-target-height", "241",
        "--n-workers", "0", "--quiet",
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("daskcap: error:")]
    assert len(lines) == 4
    assert not (tmp_path / "out").exists()


def test_missing_input_is_a_clear_error(tmp_path):
    result = daskcap("run", str(tmp_path / "nope"), str(tmp_path / "out"), "--quiet")
    assert result.returncode == 2 and "input not found" in result.stderr


def test_no_previews_no_clips(corpus, tmp_path):
    output = tmp_path / "out"
    result = daskcap(
        "run", str(corpus / "bikes.mp4"), str(output), "--no-generate-previews", "--no-upload-clips", "--n-workers", "1", "--quiet"
    )
    assert result.returncode == 0, result.stderr
    windows = pd.read_parquet(output / "windows")
    assert len(windows) == 1 and windows["preview_webp"].isna().all() and windows["window_mp4"].isna().all()
    assert not (output / "previews").exists() and not (output / "clips").exists()


def test_help_explains_every_flag():
    result = daskcap("run", "--help")
    assert result.returncode == 0
    for flag in (
        "--video-limit", "--fixed-stride-split-duration", "--fixed-stride-min-clip-length-s", "--limit-clips",
        "--generate-previews", "--preview-target-fps", "--preview-target-height", "--preview-quality",
        "--preview-compression-level", "--generate-captions", "--captioning-window-size",
        "--captioning-remainder-threshold", "--captioning-sampling-fps", "--captioning-prompt-variant",
        "--captioning-prompt-text", "--captioning-preprocess-dtype", "--captioning-model-does-preprocess",
        "--upload-clips", "--verbose", "--model-dir", "--captioning-algorithm", "--captioning-model",
        "--captioning-batch-size", "--captioning-use-fp8-weights", "--captioning-max-output-tokens",
        "--captioning-use-vllm-mmcache", "--captioning-stage2-caption", "--captioning-stage2-prompt-text",
        "--enhance-captions", "--enhance-captions-algorithm", "--enhance-captions-model",
        "--enhance-captions-batch-size", "--enhance-captions-use-fp8-weights",
        "--enhance-captions-max-output-tokens", "--enhance-captioning-prompt-variant",
        "--enhance-captions-prompt-text", "--engine", "--engine-workers",
    ):
        assert flag in result.stdout


def test_readme_quickstart_runs_as_written(tmp_path, samples, monkeypatch):
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copyfile(samples / "bikes.mp4", videos / "bikes.mp4")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    windows = pd.read_parquet(tmp_path / "out" / "windows")
    assert len(windows) == 1 and windows["status"].eq("ok").all()
    assert (tmp_path / "out" / windows["preview_path"].iloc[0]).is_file()


def test_example_config_has_a_key_for_every_flag():
    import argparse
    import tomllib

    from daskcap import cli

    parser = argparse.ArgumentParser()
    run = cli._run_parser(parser.add_subparsers())
    flags = {a.dest.replace("_", "-") for a in run._actions if a.dest not in ("help", "config")}
    text = (README.parent / "jobs" / "example.toml").read_text()
    keys = set(tomllib.loads(text)) | set(re.findall(r"^# ([a-z0-9-]+) = ", text, re.M))
    assert flags == keys


def test_config_file_settings_and_command_line_overrides(corpus, tmp_path):
    config = tmp_path / "job.toml"
    config.write_text(
        f'input = "{corpus / "bikes.mp4"}"\noutput = "{tmp_path / "out"}"\n'
        "fixed-stride-split-duration = 5.0\ngenerate-previews = false\nn-workers = 1\nquiet = true\n"
    )
    result = daskcap("run", "--config", str(config), "--fixed-stride-split-duration", "4.0")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["config"]["clipper"]["clip_len_s"] == 4.0  # the flag won
    assert summary["config"]["preview"] is None  # the file's setting held
    assert summary["clips"]["total"] == 3  # 10 s in 4 s clips (the 2 s tail kept)
    config.write_text('input = "x"\noutput = "y"\nfixed-stride-duration = 3\n')
    result = daskcap("run", "--config", str(config))
    assert result.returncode == 2 and "unknown key 'fixed-stride-duration'" in result.stderr
