"""Captions and enhancements from an OpenAI-compatible server, through `daskcap run`.

The server is real: ``daskcap.engines.serve`` (HTTP on loopback, the tiny models through the
transformers engine, a Bearer key, a request log, and test hooks that answer 429 / 500 / a
refusal), started by the tests and killed by them. `tests/test_endpoint_vllm.py` does the same
against vLLM's own server (`make test-vllm`).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from email.utils import formatdate
from pathlib import Path

import pandas as pd
import pytest

from conftest import free_port
from daskcap import schema
from daskcap.engines import serve
from daskcap.engines.chat_api import error_message, to_generation
from daskcap.engines.endpoint import backoff_s, display_url, retry_after_s, url_problem
from daskcap.engines.tiny import words_in
from daskcap.samples import write_synthetic
from daskcap.stages.clip import FixedStrideClipStage, make_clips
from daskcap.stages.listing import list_videos
from daskcap.stages.read import VideoReaderStage, read_videos

KEY_ENV = "DASKCAP_TEST_ENDPOINT_KEY"
KEY = "sk-test-" + secrets.token_hex(12)  # must appear in no output, log or message
ENV = {KEY_ENV: KEY}
os.environ[KEY_ENV] = KEY  # the job's workers read it by name, as users' workers do


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Twelve one-window synthetic clips (the six of daskcap.samples, twice under other names)."""
    folder = tmp_path_factory.mktemp("endpoint-videos")
    for path in write_synthetic(folder):
        shutil.copy(path, path.with_name(path.stem + "_again.mp4"))
    return folder


def clip_ids(folder: Path) -> dict[str, str]:
    """clip id -> video file name, as the job will name them."""
    paths = list_videos(VideoReaderStage(str(folder)))
    clips = make_clips(read_videos(paths, VideoReaderStage(str(folder))), FixedStrideClipStage())
    return {row.clip_id: Path(row.video_path).name for row in clips.itertuples()}


def start_server(tiny_models, log: Path, port: int | None = None) -> serve.Served:
    return serve.start(["--model", str(tiny_models["vlm"]), "--model", str(tiny_models["lm"]), "--api-key-env", KEY_ENV,
                        "--test-hooks", "--log", str(log)], port or free_port(), env=ENV)


@pytest.fixture
def server(tiny_models, tmp_path):
    served = start_server(tiny_models, tmp_path / "requests.jsonl")
    yield served
    served.stop()


def daskcap(*args: str, wait: bool = True, **kwargs):
    command = [sys.executable, "-m", "daskcap.cli", "run", *map(str, args), "--n-workers", "2", "--quiet", "--no-report"]
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, capture_output=True, text=True, timeout=kwargs.get("timeout", 240))


def answered(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def assert_key_nowhere(*places) -> None:
    """The key is in no file of the outputs and in nothing the job printed."""
    for place in places:
        if isinstance(place, Path):
            for path in place.rglob("*"):
                if path.is_file():
                    assert KEY.encode() not in path.read_bytes(), path
        else:
            assert KEY not in place


def caption_args(server: serve.Served, model: str, video: str = "frames") -> list[str]:
    return ["--captioning-endpoint", server.url, "--captioning-model", model, "--endpoint-video", video,
            "--endpoint-api-key-env", KEY_ENV, "--captioning-max-output-tokens", "32"]


# --- the pieces, on their own -------------------------------------------------------------------


def test_retry_after_is_read_as_seconds_or_a_date_and_backoff_waits_at_least_that():
    import random

    assert retry_after_s("3") == 3.0
    assert 8 <= retry_after_s(formatdate(time.time() + 10, usegmt=True)) <= 10
    assert retry_after_s("soon") is None and retry_after_s(None) is None
    rng = random.Random(0)
    waits = [backoff_s(tries, None, rng) for tries in range(12)]
    assert all(0.25 <= w <= 30 for w in waits) and waits[4] > waits[0]  # grows, jittered, capped
    assert backoff_s(0, 7.5, rng) == 7.5  # Retry-After wins over a shorter backoff


def test_answers_map_to_captions_token_counts_and_finish_reasons():
    usage = {"prompt_tokens": 531, "completion_tokens": 11}
    done = to_generation({"choices": [{"message": {"content": " A red square. "}, "finish_reason": "stop"}], "usage": usage})
    assert (done.text, done.prompt_tokens, done.output_tokens, done.finish_reason) == ("A red square.", 531, 11, "stop")
    assert to_generation({"choices": [{"message": {"content": "A red"}, "finish_reason": "length"}], "usage": usage}).finish_reason == "length"
    refused = to_generation({"choices": [{"message": {"content": None, "refusal": "I can't."}, "finish_reason": "stop"}]})
    assert (refused.text, refused.finish_reason) == ("I can't.", "content_filter")
    filtered = to_generation({"choices": [{"message": {"content": ""}, "finish_reason": "content_filter"}]})
    assert (filtered.text, filtered.finish_reason) == ("", "content_filter")
    assert error_message(500, b'{"error": {"message": "out of memory"}}') == "HTTP 500: out of memory"
    assert error_message(400, b'{"object": "error", "message": "too long"}') == "HTTP 400: too long"  # vLLM's older shape
    assert error_message(502, b"<html>Bad gateway</html>") == "HTTP 502: <html>Bad gateway</html>"


def test_endpoint_urls_carry_no_credentials():
    assert url_problem("http://127.0.0.1:8000/v1") is None
    assert "credentials" in url_problem("https://user:secret@api.example.com/v1")
    assert "credentials" in url_problem("https://api.example.com/v1?api_key=secret")
    assert "http" in url_problem("127.0.0.1:8000/v1")
    assert display_url("https://api.example.com:443/v1/") == "https://api.example.com:443/v1"


# --- before any work ----------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_a_wrong_key_an_unset_key_or_no_server_is_one_line_before_any_window(server, videos, tiny_models, tmp_path):
    output = tmp_path / "out"
    wrong = subprocess.run(
        [sys.executable, "-m", "daskcap.cli", "run", str(videos), str(output), *caption_args(server, str(tiny_models["vlm"])),
         "--endpoint-api-key-env", "DASKCAP_WRONG_KEY", "--quiet"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "DASKCAP_WRONG_KEY": "sk-wrong-" + KEY[-6:]},
    )
    assert wrong.returncode == 2 and wrong.stdout == "", wrong
    [line] = wrong.stderr.splitlines()
    assert line.startswith("daskcap: error: CaptionGenerationStage: the endpoint http://127.0.0.1:") and "refused the API key (HTTP 401" in line, line
    assert "sk-wrong" not in line
    assert not (output / "windows").exists() and answered(tmp_path / "requests.jsonl") == []  # no window prepared or sent
    unset = daskcap(videos, output, *caption_args(server, str(tiny_models["vlm"])), "--endpoint-api-key-env", "DASKCAP_UNSET_KEY")
    assert unset.returncode == 2 and unset.stderr.splitlines() == [
        "daskcap: error: CaptionGenerationStage: the endpoint's API key variable DASKCAP_UNSET_KEY is not set (or empty) in this process's environment"]
    nobody = daskcap(videos, output, *caption_args(server, "any"), "--captioning-endpoint", f"http://127.0.0.1:{free_port()}/v1")
    assert nobody.returncode == 2 and len(nobody.stderr.splitlines()) == 1 and "cannot reach the endpoint" in nobody.stderr, nobody.stderr
    unknown = daskcap(videos, output, *caption_args(server, "not-served"))
    assert unknown.returncode == 2 and "does not serve 'not-served'" in unknown.stderr and len(unknown.stderr.splitlines()) == 1
    assert not (output / "windows").exists()


# --- end to end ----------------------------------------------------------------------------------


def _words(output: Path) -> dict[str, tuple]:
    windows = pd.read_parquet(output / "windows")
    assert (windows["status"] == schema.OK).all(), windows[["status", "error"]]
    return {Path(w.video_path).name: tuple(map(words_in, (w.stage1_caption, w.caption, w.enhanced_caption))) for w in windows.itertuples()}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_captions_and_enhancements_from_the_server_say_what_the_in_process_engines_say(server, videos, tiny_models, tmp_path):
    vlm, lm = str(tiny_models["vlm"]), str(tiny_models["lm"])
    common = ["--captioning-stage2-caption", "--enhance-captions-max-output-tokens", "64", "--captioning-max-output-tokens", "32"]
    in_process = daskcap(videos, tmp_path / "in-process", "--captioning-model", vlm, "--enhance-captions", "--enhance-captions-model", lm,
                         "--engine-workers", "1", *common)
    assert in_process.returncode == 0, in_process.stderr
    # Both stages on the server, the window as frames: no engine worker at all.
    frames = daskcap(videos, tmp_path / "frames", *caption_args(server, vlm, "frames"), "--enhance-captions-endpoint", server.url,
                     "--enhance-captions-model", lm, *common)
    assert frames.returncode == 0, frames.stderr
    # Captions on the server from the window mp4, enhancement in process (the served model name asked of the server
    # would be ambiguous here: it serves two, so it is named).
    mp4 = daskcap(videos, tmp_path / "mp4", *caption_args(server, vlm, "mp4"), "--enhance-captions", "--enhance-captions-model", lm,
                  "--engine-workers", "1", *common)
    assert mp4.returncode == 0, mp4.stderr
    expected = _words(tmp_path / "in-process")
    assert len(expected) == 12
    for run in ("frames", "mp4"):
        assert _words(tmp_path / run) == expected, run
        summary = json.loads((tmp_path / run / "summary.json").read_text())
        endpoint = summary["endpoints"]["caption"]
        assert endpoint["url"] == server.url and endpoint["model"] == vlm and endpoint["video"] == run
        assert endpoint["requests"] == 24 and endpoint["retries"] == 0 and endpoint["failed_requests"] == 0  # stage 1 and 2
        windows = pd.read_parquet(tmp_path / run / "windows")
        assert (windows["caption_prompt_tokens"] > 100).all() and (windows["caption_output_tokens"] > 3).all()
        assert set(windows["caption_finish_reason"]) == {"stop"} and set(windows["caption_model"]) == {vlm}
    frames_summary = json.loads((tmp_path / "frames" / "summary.json").read_text())
    assert frames_summary["cluster"]["engine_workers"] == 0 and frames_summary["endpoints"]["enhance"]["requests"] == 12
    assert len({json.loads((tmp_path / run / "summary.json").read_text())["config_hash"] for run in ("in-process", "frames", "mp4")}) == 3
    # 12 windows x (stage 1 + stage 2) from both runs, and the frames run's 12 enhancements: all answered once.
    assert [entry["status"] for entry in answered(tmp_path / "requests.jsonl")] == [200] * 60
    assert_key_nowhere(tmp_path / "frames", tmp_path / "mp4", frames.stdout + frames.stderr, mp4.stdout + mp4.stderr)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_busy_and_failing_answers_are_retried_then_recorded(server, videos, tiny_models, tmp_path):
    ids = {name: clip for clip, name in clip_ids(videos).items()}
    broken, refused = ids["square_red_left.mp4"], ids["square_blue_up.mp4"]
    server.set_faults(
        {"match": broken, "status": 500, "message": "the GPU fell over (injected)"},
        {"match": refused, "refuse": True},
        {"status": 429, "retry_after": "1", "times": 3, "message": "slow down"},
    )
    output = tmp_path / "out"
    result = daskcap(videos, output, *caption_args(server, str(tiny_models["vlm"])), "--endpoint-max-retries", "2")
    assert result.returncode == 0, result.stderr
    windows = pd.read_parquet(output / "windows").set_index("clip_id")
    assert windows.loc[broken, "status"] == schema.CAPTION_FAILED
    assert windows.loc[broken, "error"] == "caption failed: HTTP 500: the GPU fell over (injected)"
    assert windows.loc[refused, "status"] == schema.OK and windows.loc[refused, "caption_finish_reason"] == "content_filter"
    assert "refusal" in list(windows.loc[refused, "caption_flags"])
    others = windows.drop([broken, refused])
    assert (others["status"] == schema.OK).all() and others["caption"].str.startswith("A ").all()
    log = answered(tmp_path / "requests.jsonl")
    assert [e["status"] for e in log if broken in e["request_id"]] == [500] * 3  # the first try and two retries
    busy = [e for e in log if e["status"] == 429]
    assert len(busy) == 3
    for first in busy:  # each retried no sooner than Retry-After said
        later = [e["t"] for e in log if e["request_id"] == first["request_id"] and e["t"] > first["t"]]
        assert later and min(later) - first["t"] >= 0.95, (first, later)
    endpoint = json.loads((output / "summary.json").read_text())["endpoints"]["caption"]
    assert endpoint["retries"] == 3 + 2 and endpoint["failed_requests"] == 1 and endpoint["requests"] == 12 + 5
    assert_key_nowhere(output, result.stdout + result.stderr)


def _wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_server_killed_and_restarted_mid_job_loses_nothing_and_repeats_nothing(server, videos, tiny_models, tmp_path):
    log = tmp_path / "requests.jsonl"
    server.set_faults({"delay_s": 0.5})  # a slower server: the job is mid-way when it is killed
    output = tmp_path / "out"
    job = daskcap(videos, output, *caption_args(server, str(tiny_models["vlm"])), "--windows-per-partition", "1",
                  "--endpoint-max-concurrency", "2", wait=False)
    try:
        _wait_for(lambda: sum(e["status"] == 200 for e in answered(log)) >= 3, 120, "three answers")
        server.kill()
        killed_after = sum(e["status"] == 200 for e in answered(log))
        time.sleep(2)  # requests meet a closed port meanwhile
        restarted = start_server(tiny_models, log, port=server.port)
        try:
            stdout, stderr = job.communicate(timeout=200)
        finally:
            restarted.stop()
    finally:
        job.kill()
    assert job.returncode == 0, stderr
    windows = pd.read_parquet(output / "windows")
    assert len(windows) == 12 and (windows["status"] == schema.OK).all() and windows["caption"].str.startswith("A ").all()
    answers = [e for e in answered(log) if e["status"] == 200]
    assert 3 <= killed_after < 12 and len({e["pid"] for e in answers}) == 2  # answered by both servers
    assert sorted(e["request_id"] for e in answers) == sorted(f"caption:{w.clip_id}/{w.window_index}" for w in windows.itertuples())
    endpoint = json.loads((output / "summary.json").read_text())["endpoints"]["caption"]
    assert endpoint["retries"] >= 1 and endpoint["failed_requests"] == 0
    assert_key_nowhere(output, stdout + stderr)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_server_gone_for_good_stops_the_job_in_one_line_and_the_rerun_sends_only_the_rest(server, videos, tiny_models, tmp_path):
    log = tmp_path / "requests.jsonl"
    server.set_faults({"delay_s": 0.5})
    output = tmp_path / "out"
    args = [videos, output, *caption_args(server, str(tiny_models["vlm"])), "--windows-per-partition", "1",
            "--endpoint-max-concurrency", "2", "--endpoint-breaker-s", "3"]
    job = daskcap(*args, wait=False)
    try:
        _wait_for(lambda: sum(e["status"] == 200 for e in answered(log)) >= 3, 120, "three answers")
        server.kill()
        stdout, stderr = job.communicate(timeout=120)
    finally:
        job.kill()
    assert job.returncode == 1, stderr
    assert len(stderr.splitlines()) == 1, stderr
    [line] = stderr.splitlines()
    assert line.startswith(f"daskcap: error: the captioning endpoint {server.url} gave no successful answer for 3 s (last: "), line
    assert line.endswith("the job stops here: what was written is kept, the same command resumes it"), line
    first = pd.read_parquet(output / "windows") if (output / "windows").exists() else pd.DataFrame(columns=["clip_id", "window_index"])
    written = {f"caption:{w.clip_id}/{w.window_index}" for w in first.itertuples()}
    assert 1 <= len(written) < 12
    before = len(answered(log))
    restarted = start_server(tiny_models, log, port=server.port)
    try:
        rerun = daskcap(*args)
    finally:
        restarted.stop()
    assert rerun.returncode == 0, rerun.stderr
    windows = pd.read_parquet(output / "windows")
    assert len(windows) == 12 and (windows["status"] == schema.OK).all()
    sent_again = {e["request_id"] for e in answered(log)[before:]}
    assert not sent_again & written and sent_again | written == {f"caption:{w.clip_id}/{w.window_index}" for w in windows.itertuples()}
    assert json.loads((output / "summary.json").read_text())["resumed"] is True
    assert_key_nowhere(output, stdout + stderr + rerun.stdout + rerun.stderr)
