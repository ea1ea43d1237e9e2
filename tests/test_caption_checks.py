"""Caption checks: each rule on crafted captions (both ways), the stage on a partition, the
pipeline and flags, and end to end: a run whose captions are cut, its summary, page and `daskcap check`."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pyarrow.parquet as pq
import pytest

from daskcap import schema
from daskcap.pipeline import Pipeline
from daskcap.samples import SYNTHETIC_CLIPS, write_synthetic
from daskcap.stages import check
from daskcap.stages._params import ParamError
from daskcap.stages.caption import CaptionGenerationStage
from daskcap.stages.check import CaptionCheckStage, check_windows, count_flags
from daskcap.stages.clip import FixedStrideClipStage
from daskcap.stages.prepare import CaptionPreparationStage
from daskcap.stages.read import VideoReaderStage
from daskcap.stages.write import ClipWriterStage

DEFAULTS = CaptionCheckStage()
GOOD = "A red car drives along a wet road at night while rain falls and the camera follows it from behind."


def flags_of(text: str, finish_reason: str = "stop", english: bool = True) -> list[str]:
    return check.text_flags(text, finish_reason, DEFAULTS, english)[0]


# --- one rule at a time ---------------------------------------------------------------------------


def test_a_good_caption_has_no_flags():
    assert flags_of(GOOD) == []
    assert flags_of("Red car, highway, sunset, drone shot.") == []  # terse English is still English


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty(text):
    assert check.is_empty(text) and "empty" in flags_of(text)


def test_not_empty():
    assert not check.is_empty(" a ")


def test_truncated_is_the_engines_finish_reason():
    assert check.is_truncated("length") and flags_of(GOOD, "length") == ["truncated"]
    assert not check.is_truncated("stop") and not check.is_truncated(None)


@pytest.mark.parametrize("text", [
    "the car drives the car drives the car drives the car drives the car drives",
    "A man walks. A man walks. A man walks. A man walks.",
    "The scene shows a busy street with people walking and the scene shows a busy street with people walking",
])
def test_repetitive(text):
    assert "repetitive" in flags_of(text)


@pytest.mark.parametrize("text", [
    GOOD,
    # Natural prose repeats a phrase or two without looping.
    "In the background a bus passes, in the background a dog barks at a cyclist who rides past the shops and turns left at the corner.",
    "go go go",  # too short to call a loop
])
def test_not_repetitive(text):
    assert "repetitive" not in flags_of(text)


def test_repetition_threshold_is_tunable():
    tokens = check.words("in the background a bus passes and in the background a dog barks")
    assert check.repeated_share(tokens, 3) == 8 / 13  # "in the background a", twice
    assert check.is_repetitive(tokens, 3, 0.4) and not check.is_repetitive(tokens, 3, 0.7)
    assert not check.is_repetitive(tokens, 5, 0.4)  # no 5-word phrase repeats


@pytest.mark.parametrize("text", [
    "I'm sorry, but I can't help with identifying people in this video.",
    "I am unable to view videos.",
    "As an AI language model, I cannot watch videos.",
    "Sorry, I cannot describe this.",
    "The video shows a video.",
    "This is a video.",
])
def test_refusal(text):
    assert "refusal" in flags_of(text)


@pytest.mark.parametrize("text", [
    GOOD,
    "This video is a video game playthrough: a red car races through a city at night.",
    "A man says sorry to a woman he bumped into on the platform, then both laugh.",
    "The video shows a chef slicing onions on a wooden board.",
])
def test_not_refusal(text):
    assert "refusal" not in flags_of(text)


@pytest.mark.parametrize("text", [
    "Une voiture rouge roule sur la route dans la ville avec les phares allumés.",
    "Un coche rojo conduce por la carretera con las luces encendidas.",
    "Ein rotes Auto fährt auf der Straße und die Kamera folgt ihm.",
    "一辆红色的汽车在雨夜的路上行驶。",
    "Красная машина едет по мокрой дороге ночью.",
])
def test_not_english(text):
    assert "not_english" in flags_of(text)
    assert "not_english" not in flags_of(text, english=False)  # the prompt asked for another language


@pytest.mark.parametrize("text", [GOOD, "Café owner pours crème brûlée for a customer at the counter.", "OK."])
def test_english(text):
    assert "not_english" not in flags_of(text)


def test_a_prompt_that_asks_for_another_language_turns_the_language_check_off():
    assert check.asks_for_other_language("Describe this video in French.")
    assert check.asks_for_other_language("Write a Japanese caption for the clip.")
    assert check.asks_for_other_language("描述这个视频。")
    assert not check.asks_for_other_language("Describe this video in detail.")
    assert not check.asks_for_other_language(None)


@pytest.mark.parametrize("text", ["A red car\ufffd drives.", "A red car\x00 drives.", "A red\x1b[31m car.", "A car\x85 drives."])
def test_invalid_text(text):
    assert "invalid_text" in flags_of(text)


def test_valid_text_with_newlines_tabs_and_accents():
    assert "invalid_text" not in flags_of("A café.\nThen a tab\there, and ünïcödé and 汽车.")


def test_duplicates_within_a_group():
    texts = [check.words(t) for t in (GOOD, GOOD.lower().rstrip("."), "A dog sleeps on a sofa in a sunny room.", "")]
    assert check.duplicates(texts) == {0, 1}
    near = check.words(GOOD.replace("wet road", "wet street"))
    assert check.duplicates([check.words(GOOD), near], similarity=0.8) == {0, 1}
    assert check.duplicates([check.words(GOOD), near], similarity=1.0) == set()  # identical only


def test_too_short_absolute_and_relative():
    assert check.too_short([2, 20, 20]) == {0}  # under the floor of 3 words
    assert check.too_short([4, 40, 44, 38]) == {0}  # under a quarter of the others' median
    assert check.too_short([12, 14, 13]) == set()
    assert check.too_short([0, 30]) == set()  # empty is its own flag
    assert check.too_short([5], min_words=3) == set()


def test_thresholds_are_checked():
    with pytest.raises(ParamError) as caught:
        CaptionCheckStage(repetition_ngram=0, repetition_share=1.5, duplicate_similarity=0, check_language="yes")
    assert len(caught.value.problems) == 4


# --- the stage on a partition ---------------------------------------------------------------------


def _windows(rows: list[dict]) -> pd.DataFrame:
    base = {"status": "ok", "prompt": "Describe this video.", "caption_finish_reason": "stop", "enhance_finish_reason": None}
    return schema.frame_from_rows([{**base, **row} for row in rows], schema.WINDOW_SCHEMA)


def test_check_windows_flags_per_clip_and_never_changes_status():
    windows = _windows([
        {"clip_id": "a", "window_index": 0, "caption": GOOD, "enhanced_caption": GOOD + " It is late."},
        {"clip_id": "a", "window_index": 1, "caption": GOOD, "enhanced_caption": "A long different sentence about a dog that runs across the beach at dawn."},
        {"clip_id": "a", "window_index": 2, "caption": "Car.", "caption_finish_reason": "length"},
        {"clip_id": "b", "window_index": 0, "caption": GOOD},  # same text, other clip: not a duplicate
        {"clip_id": "b", "window_index": 1, "caption": None, "status": "caption_failed"},
    ])
    out = check_windows(windows, DEFAULTS)
    assert list(out["caption_flags"][:4]) == [["duplicate"], ["duplicate"], ["truncated", "too_short"], []]
    assert out["caption_flags"][4] is None  # nothing to check
    assert list(out["enhance_flags"][:2]) == [[], []] and out["enhance_flags"][2] is None
    assert list(out["status"]) == list(windows["status"])
    counts = count_flags(out["caption_flags"])
    assert counts["checked"] == 4 and counts["flagged"] == 3
    assert counts["by_flag"]["duplicate"] == 2 and counts["by_flag"]["refusal"] == 0  # zeros are listed


def test_the_language_check_follows_the_prompts():
    french = "Une voiture rouge roule sur la route dans la ville."
    windows = _windows([
        {"clip_id": "a", "window_index": 0, "caption": french, "enhanced_caption": french},
        {"clip_id": "b", "window_index": 0, "caption": french, "prompt": "Describe this video in French.", "enhanced_caption": french},
    ])
    out = check_windows(windows, DEFAULTS, enhance_prompt="Rewrite this description in French.")
    assert list(out["caption_flags"]) == [["not_english"], []]
    assert list(out["enhance_flags"]) == [[], []]
    assert list(check_windows(windows, CaptionCheckStage(check_language=False))["caption_flags"]) == [[], []]


def test_checks_are_fast_enough_for_every_row():
    """Not a timing assertion (benchmarks/checks.py measures it): one pass over a realistic mix works."""
    texts = [GOOD, "", "the car the car the car the car the car", "I'm sorry, I can't.", "Une voiture rouge roule sur la route."] * 200
    windows = _windows([{"clip_id": str(i // 4), "window_index": i % 4, "caption": t} for i, t in enumerate(texts)])
    counts = count_flags(check_windows(windows, DEFAULTS)["caption_flags"])
    assert counts["checked"] == 1000 and counts["by_flag"]["empty"] == 200 and counts["by_flag"]["refusal"] == 200


# --- pipeline and flags ---------------------------------------------------------------------------


def _pipeline(**kwargs) -> Pipeline:
    pipeline = Pipeline("p", **kwargs)
    for stage in (VideoReaderStage(input_video_path="in"), FixedStrideClipStage(), CaptionPreparationStage(), CaptionGenerationStage()):
        pipeline.add_stage(stage)
    return pipeline


def test_captions_are_checked_by_default_and_can_be_turned_off():
    assert _pipeline().add_stage(ClipWriterStage(output_path="out")).build().check == CaptionCheckStage()
    assert _pipeline(caption_checks=False).add_stage(ClipWriterStage(output_path="out")).build().check is None
    custom = CaptionCheckStage(min_words=5)
    assert _pipeline().add_stage(custom).add_stage(ClipWriterStage(output_path="out")).build().check == custom
    with pytest.raises(ParamError, match="do one or the other"):
        _pipeline(caption_checks=False).add_stage(custom).add_stage(ClipWriterStage(output_path="out")).build()


def test_thresholds_come_from_flags_and_the_config_file(tmp_path):
    import argparse

    from daskcap import cli
    from daskcap.flags import build_pipeline

    (tmp_path / "in").mkdir()
    config = tmp_path / "job.toml"
    config.write_text('check-min-words = 6\ncheck-repetition-share = 0.7\n')
    parser = argparse.ArgumentParser()
    run_parser = cli._run_parser(parser.add_subparsers(dest="command"))
    args = cli.apply_config(parser, run_parser, ["run", str(tmp_path / "in"), str(tmp_path / "out"), "--config", str(config), "--captioning-model", "m", "--check-min-words", "7"])
    job = build_pipeline(args).build()
    assert job.check == CaptionCheckStage(min_words=7, repetition_share=0.7)  # the flag wins over the file
    args = cli.apply_config(parser, run_parser, ["run", str(tmp_path / "in"), str(tmp_path / "out"), "--captioning-model", "m", "--no-caption-checks"])
    assert build_pipeline(args).build().check is None


# --- end to end -----------------------------------------------------------------------------------


def daskcap(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daskcap.cli", *args], capture_output=True, text=True, timeout=280)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_cut_captions_are_flagged_counted_shown_and_rechecked(tiny_models, tmp_path):
    videos = tmp_path / "videos"
    write_synthetic(videos)
    output = tmp_path / "out"
    result = daskcap("run", str(videos), str(output), "--captioning-model", str(tiny_models["vlm"]),
                     "--captioning-max-output-tokens", "3", "--n-workers", "1", "--engine-workers", "1", "--quiet")
    assert result.returncode == 0, result.stderr
    n = len(SYNTHETIC_CLIPS)
    assert f"flagged: {n} of {n} captions ({n} truncated)" in result.stdout

    windows = pd.read_parquet(output / "windows")
    assert (windows["status"] == "ok").all()  # flags never fail a window
    assert all(list(flags) == ["truncated"] for flags in windows["caption_flags"]), windows["caption_flags"]
    assert windows["enhance_flags"].isna().all()  # no enhancement ran
    summary = json.loads((output / "summary.json").read_text())
    assert summary["caption_flags"]["by_flag"]["truncated"] == n and summary["caption_flags"]["flagged"] == n
    assert summary["config"]["check"] == {**CaptionCheckStage().__dict__}
    page = (output / "report" / "index.html").read_text()
    assert f'data-flag="truncated">{n} truncated' in page and 'id="flag-filter"' in page

    # New thresholds on the old run: the 3-token captions ("A red square") are now too short.
    result = daskcap("check", str(output), "--check-min-words", "4")
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.startswith("  ")}
    assert lines["truncated"][1:3] == [str(n), "100.0%"] and lines["too_short"][1:3] == [str(n), "100.0%"]
    assert lines["refusal"][1:3] == ["0", "0.0%"]
    windows = pd.read_parquet(output / "windows")
    assert all(list(flags) == ["truncated", "too_short"] for flags in windows["caption_flags"])
    summary = json.loads((output / "summary.json").read_text())
    assert summary["caption_flags"]["by_flag"]["too_short"] == n and summary["caption_checks"]["min_words"] == 4
    assert f'data-flag="too_short">{n} too_short' in (output / "report" / "index.html").read_text()

    # A run written before the checks existed has no flag columns: check adds them.
    for part in (output / "windows").glob("*.parquet"):
        table = pq.read_table(part)
        pq.write_table(table.drop_columns(["caption_flags", "enhance_flags"]), part)
    result = daskcap("check", str(output), "--no-write")
    assert result.returncode == 0 and "not written" in result.stdout
    assert "caption_flags" not in pq.read_schema(next((output / "windows").glob("*.parquet"))).names
    assert daskcap("check", str(output)).returncode == 0
    assert all(list(flags) == ["truncated"] for flags in pd.read_parquet(output / "windows")["caption_flags"])


def test_check_refuses_a_folder_that_is_not_an_output(tmp_path):
    result = daskcap("check", str(tmp_path))
    assert result.returncode == 2 and "no summary.json" in result.stderr
