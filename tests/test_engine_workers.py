"""Engine workers of the embedded cluster: pinned to a GPU the way dask-cuda pins its workers,
with room for a model in host memory, fed partitions as large as the engines batch, and
counting what they generate (tokens, engine seconds, load seconds) into summary.json."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from distributed import Client
from distributed.system import MEMORY_LIMIT

from daskcap.engines.base import visible_gpus as _visible_gpus
from daskcap.run.cluster import embedded_cluster, engine_worker_options
from daskcap.run.job import ClusterOptions

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from gpu import build_model  # noqa: E402

HAS_DASK_CUDA = importlib.util.find_spec("dask_cuda") is not None


def test_engine_workers_go_round_the_gpus_each_with_its_own_first():
    visible = [engine_worker_options(i, 3, ["2", "3"])["env"]["CUDA_VISIBLE_DEVICES"] for i in range(3)]
    assert visible == ["2,3", "3,2", "2,3"]
    uuids = ["GPU-aaaa", "GPU-bbbb"]
    assert engine_worker_options(1, 2, uuids)["env"]["CUDA_VISIBLE_DEVICES"] == "GPU-bbbb,GPU-aaaa"


def test_an_engine_worker_without_gpus_gets_no_device_and_a_share_of_the_machines_memory():
    options = engine_worker_options(0, 2, [])
    assert "CUDA_VISIBLE_DEVICES" not in options["env"] and options["resources"] == {"GPU": 1}
    assert options["memory_limit"] == MEMORY_LIMIT // 2  # not one core's share: a model is loaded there
    assert "cpu_affinity" not in options


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, GPU-abc,")
    assert _visible_gpus() == ["3", "GPU-abc"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert _visible_gpus() == []


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_engine_worker_has_the_machines_memory_not_one_cores_share():
    with embedded_cluster(ClusterOptions(n_workers=1, engine_workers=1), needs_engines=True) as cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        workers = list(client.scheduler_info(n_workers=-1)["workers"].values())
    engine = [w for w in workers if w["resources"].get("GPU")]
    cpu = [w for w in workers if not w["resources"].get("GPU")]
    assert [w["memory_limit"] for w in engine] == [MEMORY_LIMIT]
    assert cpu[0]["memory_limit"] <= MEMORY_LIMIT


@pytest.fixture(scope="module")
def random_vlm(tmp_path_factory) -> Path:
    """A Qwen2.5-VL of toy size with random weights, saved like a checkpoint (about a second)."""
    directory = tmp_path_factory.mktemp("models") / "vlm"
    build_model(directory, size="tiny", device="cpu")
    return directory


def _caption_run(video: Path, output: Path, model: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "daskcap.cli", "run", str(video), str(output), "--captioning-model", str(model),
         "--captioning-max-output-tokens", "6", "--n-workers", "2", "--engine-workers", "1", "--no-report", "--quiet"],
        capture_output=True, text=True, timeout=230,
    )
    assert result.returncode == 0, result.stderr
    return json.loads((output / "summary.json").read_text())


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_caption_job_feeds_its_engine_whole_partitions_and_counts_tokens(tmp_path, stamped, random_vlm):
    summary = _caption_run(stamped(1800, 30), tmp_path / "out", random_vlm)  # six 10 s clips, a window each
    # Spread over the one engine (not the two CPU workers): 3 windows a partition, not 2.
    assert summary["partitions"] == 2
    windows = pd.read_parquet(tmp_path / "out" / "windows")
    assert len(windows) == 6 and (windows["status"] == "ok").all()
    [engine] = [w for w in summary["workers"].values() if w["engine"]]
    assert engine["partitions_captioned"] == 2 and engine["windows_captioned"] == 6
    caption = summary["engines"]["caption"]
    assert caption["generations"] == 6
    assert caption["prompt_tokens"] == windows["caption_prompt_tokens"].sum() == engine["caption_prompt_tokens"]
    assert caption["output_tokens"] == windows["caption_output_tokens"].sum() == engine["caption_output_tokens"]
    assert 0 < caption["engine_s"] < summary["stage_seconds"]["caption"]
    assert caption["prompt_tokens_per_s"] == pytest.approx(caption["prompt_tokens"] / caption["engine_s"], rel=0.01)
    assert summary["engines"]["model_load_s"] == pytest.approx(sum(engine["model_load_s"].values()), abs=0.01)
    assert summary["engines"]["model_load_s"] > 0


def _cuda_device() -> bool:
    torch = pytest.importorskip("torch")
    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_on_a_gpu_captions_run_on_a_pinned_engine_worker(tmp_path, samples, random_vlm):
    if not _cuda_device():
        pytest.skip("no CUDA device")
    summary = _caption_run(samples / "bigbuckbunny.mp4", tmp_path / "out", random_vlm)
    [engine] = [w for w in summary["workers"].values() if w["engine"]]
    assert engine["windows_captioned"] == 1
    first = (_visible_gpus() or ["0"])[0]
    assert engine["cuda_visible_devices"].split(",")[0] == first
    assert engine["dask_cuda"] is HAS_DASK_CUDA
    assert engine["gpu_name"] and engine["gpu_peak_allocated_mb"] > 0  # the engine ran on the GPU
