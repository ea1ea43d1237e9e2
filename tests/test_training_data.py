"""`daskcap export` and `daskcap run --export`: a real captioned run (tiny models, synthetic
clips, a window that fails to encode, windows the caption checks flag as duplicates) exported
on an embedded cluster, read back by the readers trainers use (webdataset, Hugging Face
datasets, lance), every sample checked against its own row of windows/."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import sys
from pathlib import Path

import av
import pandas as pd
import pytest
from test_s3 import s3_env  # noqa: F401  (the moto server fixture)
from videogen import write_stamped_video

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parent.parent


def daskcap(*args: str, timeout: float = 200, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daskcap.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def export(output: Path | str, dest: Path | str, *flags: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return daskcap("export", str(output), str(dest), "--n-workers", "2", *flags, env=env)


@pytest.fixture(scope="module")
def job(tmp_path_factory, tiny_models) -> dict:
    """One captioned run (windows of 64 frames, so the tiny model's same caption of a clip's
    windows is flagged `duplicate`), exported as it runs with --export."""
    from daskcap.samples import write_synthetic

    folder = tmp_path_factory.mktemp("job")
    videos = folder / "videos"
    write_synthetic(videos)
    write_stamped_video(videos / "strip 4000x16.mp4", 60, width=4000, height=16)  # its window: encode_failed
    write_stamped_video(videos / "long.mp4", 400)  # three clips of 5 s
    output, during = folder / "out", folder / "exported-by-run"
    result = daskcap("run", str(videos), str(output), "--captioning-model", str(tiny_models["vlm"]),
                     "--captioning-max-output-tokens", "32", "--fixed-stride-split-duration", "5",
                     "--captioning-window-size", "64", "--captioning-remainder-threshold", "16",
                     "--windows-per-partition", "4", "--n-workers", "1", "--engine-workers", "1", "--quiet", "--no-report",
                     "--export", f"webdataset:{during}", "--samples-per-shard", "2")
    assert result.returncode == 0, result.stderr
    windows = pd.read_parquet(output / "windows")
    return {"folder": folder, "output": output, "during": during, "windows": windows, "stdout": result.stdout}


def expected_keys(windows: pd.DataFrame, *, include_flagged: bool = False, min_frames: int = 0) -> list[str]:
    """What the filter keeps, worked out from windows/ alone."""
    kept = windows[(windows["status"] == "ok") & windows["caption"].fillna("").str.strip().ne("")]
    if not include_flagged:
        kept = kept[kept["caption_flags"].map(len) == 0]
    kept = kept[kept["end_frame"] - kept["start_frame"] + 1 >= min_frames]
    return sorted(f"{row.clip_id}_{row.window_index}" for row in kept.itertuples())


def decoded_frames(mp4: bytes) -> int:
    with av.open(io.BytesIO(mp4)) as container:
        return sum(1 for _ in container.decode(video=0))


def check_sample(key: str, mp4: bytes, text: str, meta: dict, windows: pd.DataFrame) -> None:
    """The sample is its own window's: key -> row of windows/ -> caption, clip span, frames, bytes."""
    clip_id, window_index = key.rsplit("_", 1)
    [row] = windows[(windows["clip_id"] == clip_id) & (windows["window_index"] == int(window_index))].itertuples()
    assert text == row.caption
    assert mp4 == row.window_mp4
    assert decoded_frames(mp4) == row.end_frame - row.start_frame + 1 == meta["num_frames"]
    assert (meta["clip_id"], meta["window_index"], meta["start_frame"], meta["end_frame"]) == (clip_id, int(window_index), row.start_frame, row.end_frame)
    assert (meta["clip_start_s"], meta["clip_end_s"], meta["video_path"]) == (row.clip_start_s, row.clip_end_s, row.video_path)
    assert meta["window_start_s"] == pytest.approx(row.clip_start_s + row.start_frame / row.fps)
    assert (meta["display_width"], meta["display_height"]) == (176, 128) and meta["prompt_variant"] == "default"
    assert meta["caption_model"] == row.caption_model and meta["caption_flags"] == list(row.caption_flags)


def digests(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.glob("*.tar"))}


def test_webdataset_shards_read_back_by_webdataset_and_datasets(job, tmp_path):
    import datasets
    import webdataset as wds

    windows, dest = job["windows"], tmp_path / "shards"
    result = export(job["output"], dest, "--samples-per-shard", "2", "--with-preview")
    assert result.returncode == 0, result.stderr
    keys = expected_keys(windows)
    assert 0 < len(keys) < len(windows)
    stats = json.loads((dest / "shard-stats.json").read_text())
    shards = sorted(str(path) for path in dest.glob("shard-*.tar"))
    assert [Path(s).name for s in shards] == [f"shard-{n:06d}.tar" for n in range(len(shards))] == [s["name"] for s in stats["shards"]]
    assert [s["samples"] for s in stats["shards"]] == [2] * (len(keys) // 2) + [1] * (len(keys) % 2)
    assert stats["samples"] == len(keys) and stats["windows"] == len(windows)
    assert sum(s["bytes"] for s in stats["shards"]) == sum(Path(s).stat().st_size for s in shards) == stats["bytes"]
    flagged = int((windows["caption_flags"].map(lambda f: f is not None and len(f) > 0)).sum())
    assert stats["left_out"] == {"total": len(windows) - len(keys), "by_reason": {"flagged": flagged, "status:encode_failed": 1},
                                 "flags": {"duplicate": flagged}}

    seen = []
    for sample in wds.WebDataset(shards, shardshuffle=False).decode():
        check_sample(sample["__key__"], sample["mp4"], sample["txt"], sample["json"], windows)
        [row] = windows[windows["clip_id"] == sample["json"]["clip_id"]].query(f"window_index == {sample['json']['window_index']}").itertuples()
        assert sample["webp"] == row.preview_webp  # decode() leaves images as bytes
        seen.append(sample["__key__"])
    assert sorted(seen) == keys

    loaded = datasets.load_dataset("webdataset", data_files={"train": shards}, split="train")
    loaded = loaded.cast_column("mp4", datasets.Video(decode=False))  # PyAV decodes it (torchcodec is not installed)
    assert sorted(loaded["__key__"]) == keys
    for sample in loaded:
        check_sample(sample["__key__"], sample["mp4"]["bytes"], sample["txt"], sample["json"], windows)


def test_run_with_export_writes_the_same_shards_as_a_later_export(job, tmp_path):
    assert "samples:" in job["stdout"] and (job["during"] / "shard-stats.json").exists()
    summary = json.loads((job["output"] / "summary.json").read_text())
    assert summary["export"]["samples"] == len(expected_keys(job["windows"]))
    result = export(job["output"], tmp_path / "later", "--samples-per-shard", "2")
    assert result.returncode == 0, result.stderr
    assert digests(job["during"]) == digests(tmp_path / "later") and digests(job["during"])


def test_an_interrupted_export_is_redone_to_identical_shards(job, tmp_path):
    dest = tmp_path / "shards"
    assert export(job["output"], dest, "--samples-per-shard", "1").returncode == 0
    first = digests(dest)
    assert len(first) == len(expected_keys(job["windows"]))
    # What a kill during shard 2 leaves: no stats file, shard 2 and later not renamed into place
    # (a temporary of shard 2 half written), no markers for them.
    (dest / "shard-stats.json").unlink()
    for number in range(2, len(first)):
        (dest / f"shard-{number:06d}.tar").unlink()
        (dest / "_daskcap_export" / "done" / f"shard-{number:06d}.json").unlink()
    (dest / f".shard-000002.tar.{'0' * 32}.tmp").write_bytes(b"half a shard")
    result = export(job["output"], dest, "--samples-per-shard", "1")
    assert result.returncode == 0, result.stderr
    stats = json.loads((dest / "shard-stats.json").read_text())
    assert (stats["shards_written"], stats["shards_kept"]) == (len(first) - 2, 2)
    assert digests(dest) == first
    assert [s["sha256"] for s in stats["shards"]] == list(first.values())


def test_filters_keep_flagged_and_drop_short_windows_on_request(job, tmp_path):
    windows, dest = job["windows"], tmp_path / "shards"
    result = export(job["output"], dest, "--include-flagged", "--min-frames", "30", "--samples-per-shard", "100")
    assert result.returncode == 0, result.stderr
    import webdataset as wds

    keys = sorted(sample["__key__"] for sample in wds.WebDataset(sorted(map(str, dest.glob("*.tar"))), shardshuffle=False))
    assert keys == expected_keys(windows, include_flagged=True, min_frames=30)
    stats = json.loads((dest / "shard-stats.json").read_text())
    short = int(((windows["end_frame"] - windows["start_frame"] + 1 < 30) & (windows["status"] == "ok")).sum())
    assert short > 0 and stats["left_out"]["by_reason"] == {"status:encode_failed": 1, "too_few_frames": short}


def test_lance_table_reads_back_and_a_later_export_appends(job, tmp_path):
    import lance

    windows, output, dest = job["windows"], tmp_path / "out", tmp_path / "windows.lance"
    shutil.copytree(job["output"], output)
    # The run as an interrupted one left it: the last part holding kept windows not yet written.
    parts = sorted((output / "windows").glob("*.parquet"))
    keys = set(expected_keys(windows))
    with_kept = [part for part in parts if keys & set(expected_keys(pd.read_parquet(part)))]
    held = tmp_path / "later-parts"
    held.mkdir()
    shutil.move(with_kept[-1], held / with_kept[-1].name)
    result = export(output, dest, "--format", "lance")
    assert result.returncode == 0, result.stderr
    first = lance.dataset(str(dest)).to_table().to_pandas()
    assert 0 < len(first) < len(expected_keys(windows))
    for part in held.iterdir():  # the resumed run writes them
        shutil.move(part, output / "windows" / part.name)
    result = export(output, dest, "--format", "lance")
    assert result.returncode == 0, result.stderr
    stats = json.loads((dest / "_daskcap_export" / "stats.json").read_text())
    # Parts whose kept rows the table holds are not read again; the one the resumed run wrote is.
    assert (stats["parts_in_table"], stats["parts_read"]) == (len(with_kept) - 1, len(parts) - len(with_kept) + 1)
    assert stats["samples"] == len(keys) - len(first) and stats["table_rows"] == len(keys)
    table = lance.dataset(str(dest)).to_table().to_pandas()
    assert sorted(table["key"]) == expected_keys(windows)  # every kept window once
    for row in table.itertuples():
        check_sample(row.key, row.window_mp4, row.text, json.loads(row.metadata), windows)
        assert row.preview_webp == windows.set_index("preview_path").loc[row.preview_path, "preview_webp"]
    again = export(output, dest, "--format", "lance")
    assert again.returncode == 0 and lance.dataset(str(dest)).count_rows() == len(table)  # nothing new: nothing added


def test_bad_destinations_are_refused_with_one_line_and_nothing_is_removed(job, tmp_path):
    def refused(result, words):
        assert result.returncode == 2, result.stderr
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("daskcap: error:") and words in line, line

    refused(export(tmp_path, tmp_path / "x"), "is not a daskcap output")
    refused(export(job["output"], job["output"] / "shards"), "is inside the output")
    refused(export(job["output"], job["output"]), "is the output")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    refused(export(job["output"], mine), "holds files daskcap did not write (notes.txt)")
    refused(export(job["output"], mine, "--format", "lance"), "holds files daskcap did not export")
    refused(export(job["output"], mine, "--overwrite"), "holds files daskcap did not write")
    assert (mine / "notes.txt").read_text() == "keep me" and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    dest = tmp_path / "shards"
    assert export(job["output"], dest, "--samples-per-shard", "2").returncode == 0
    refused(export(job["output"], dest, "--samples-per-shard", "3"), "holds an export with other settings")
    assert export(job["output"], dest, "--samples-per-shard", "3", "--overwrite").returncode == 0
    assert json.loads((dest / "shard-stats.json").read_text())["settings"]["samples_per_shard"] == 3


def test_export_to_a_bucket(job, s3_env, tmp_path):  # noqa: F811
    import os

    import fsspec

    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir("daskcap-export")
    result = export(job["output"], "s3://daskcap-export/shards", "--samples-per-shard", "2", env={**os.environ, **s3_env})
    assert result.returncode == 0, result.stderr
    fs.invalidate_cache()
    fs.get("daskcap-export/shards/", str(tmp_path / "fetched"), recursive=True)
    assert digests(tmp_path / "fetched") == digests(job["during"])  # the bytes a local export writes
    stats = json.loads((tmp_path / "fetched" / "shard-stats.json").read_text())
    assert [s["name"] for s in stats["shards"]] == list(digests(job["during"]))
    from daskcap.storage import TEMPORARY_NAME

    assert not [path for path in fs.find("daskcap-export") if TEMPORARY_NAME.fullmatch(path.rsplit("/", 1)[-1])]


def test_shard_size_limit_ends_shards_before_they_pass_it(job, tmp_path):
    import webdataset as wds

    dest, limit_mb = tmp_path / "shards", 0.02  # the kept windows are about 8 KB each
    result = export(job["output"], dest, "--shard-size-mb", str(limit_mb))
    assert result.returncode == 0, result.stderr
    stats = json.loads((dest / "shard-stats.json").read_text())
    assert len(stats["shards"]) > 1
    # A shard's members stay under the limit (its tar end blocks and record padding aside), unless one sample is a shard alone.
    for shard in stats["shards"]:
        with tarfile.open(dest / shard["name"]) as tar:
            members = tar.getmembers()
        held = sum(512 + -(-m.size // 512) * 512 for m in members)
        assert held <= limit_mb * 2**20 or len(members) == 3, shard
    keys = sorted(sample["__key__"] for sample in wds.WebDataset(sorted(map(str, dest.glob("*.tar"))), shardshuffle=False))
    assert keys == expected_keys(job["windows"])


def test_shards_are_planned_contiguously_across_parts():
    from daskcap.training_data.plan import plan_shards

    shards = plan_shards([3, 0, 4, 2], 4)
    assert [s.slices for s in shards] == [((0, 0, 3), (2, 0, 1)), ((2, 1, 4), (3, 0, 1)), ((3, 1, 2),)]
    assert [s.number for s in shards] == [0, 1, 2]
    sized = plan_shards([3, 1], 10, sizes=[[5, 5, 20], [1]], max_bytes=10)
    assert [s.slices for s in sized] == [((0, 0, 2),), ((0, 2, 3),), ((1, 0, 1),)]
