"""The vLLM backend: production captioning on GPU workers.

The engine is built lazily inside the worker process on its first task (vLLM
must be the first to touch CUDA there, and its start-up takes minutes), and
each call submits the whole partition to ``LLM.generate`` so the scheduler
keeps the GPU full. Request building is plain data, tested without vLLM.
"""

from __future__ import annotations

import json
import logging

import numpy as np

from daskcap.engines.base import (
    REPETITION_PENALTY,
    TEMPERATURE,
    TOP_P,
    Engine,
    EngineConfig,
    EngineError,
    Generation,
    LoadedModel,
    TextRequest,
    VideoRequest,
    cuda_visible,
)
from daskcap.engines.chat import render, text_messages, video_messages

log = logging.getLogger(__name__)

MAX_MODEL_LEN = 32768


GPU_MEMORY_UTILIZATION = 0.85


def memory_utilization(on_gpu: bool) -> float:
    """vLLM's share of device memory: 0.85 of a GPU's; on the CPU backend (where it is a share
    of a NUMA node's memory, which must be free at start-up) at most 80% of the free share of
    the tightest node."""
    if on_gpu:
        return GPU_MEMORY_UTILIZATION
    return round(max(0.05, min(GPU_MEMORY_UTILIZATION, 0.8 * free_memory_share())), 3)


def free_memory_share() -> float:
    """The share of memory free, as vLLM's CPU backend counts it: per NUMA node (free, file
    cache and reclaimable slabs over the node's total; a machine may hold memory outside
    its nodes) and under a container's memory limit, the lowest; else the machine's."""
    import glob

    import psutil

    shares = []
    for path in glob.glob("/sys/devices/system/node/node*/meminfo"):
        info = {}
        with open(path) as handle:
            for line in handle:
                parts = line.split()  # "Node 0 MemTotal: 9398484 kB"
                if len(parts) >= 4:
                    info[parts[2].rstrip(":")] = int(parts[3])
        total = info.get("MemTotal", 0)
        if total:
            free = sum(info.get(key, 0) for key in ("MemFree", "Active(file)", "Inactive(file)", "SReclaimable"))
            shares.append(free / total)
    limit, used = _read_number("/sys/fs/cgroup/memory.max"), _read_number("/sys/fs/cgroup/memory.current")
    if limit and used is not None:  # a container's limit, which vLLM honours too
        shares.append(max(0.0, limit - used) / limit)
    if shares:
        return min(shares)
    memory = psutil.virtual_memory()
    return memory.available / memory.total


def _read_number(path: str) -> int | None:
    try:
        with open(path) as handle:
            text = handle.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def llm_kwargs(config: EngineConfig, model: LoadedModel) -> dict:
    """Arguments of ``vllm.LLM`` for this engine (see docs/design.md, "Engines")."""
    kwargs = {
        "model": model.path,
        "gpu_memory_utilization": memory_utilization(cuda_visible()),
        "quantization": "fp8" if config.fp8 else None,
        "seed": 0,
    }
    if model.family != "qwen-text":
        kwargs["max_model_len"] = MAX_MODEL_LEN
        # Must cover the largest window's visual tokens, or long windows are refused.
        kwargs["max_num_batched_tokens"] = MAX_MODEL_LEN
        kwargs["limit_mm_per_prompt"] = {"image": 0, "video": 1}
        kwargs["mm_processor_cache_gb"] = 0 if config.disable_mmcache else 4
    # Text models keep the context length their config declares. The user's settings win
    # (NeMo Curator passes both and fails with a duplicate keyword).
    if config.vllm_kwargs:
        kwargs.update(json.loads(config.vllm_kwargs))
    return kwargs


def sampling_kwargs(max_tokens: int) -> dict:
    return {"temperature": TEMPERATURE, "top_p": TOP_P, "repetition_penalty": REPETITION_PENALTY, "max_tokens": max_tokens, "seed": 0}


def video_prompt(tokenizer, request: VideoRequest) -> dict:
    """One vLLM prompt: rendered chat text plus the pre-sampled frames and their metadata.

    ``do_sample_frames=False`` and the metadata stop vLLM's processor from
    sampling the frames again; they are already the window's sampled frames.
    """
    frames = request.frames
    count = int(frames.shape[0])
    metadata = {
        "fps": float(request.sampled_fps),
        "frames_indices": list(range(count)),
        "total_num_frames": count,
        "duration": count / float(request.sampled_fps),
        "do_sample_frames": False,
    }
    return {
        "prompt": render(tokenizer, video_messages(request.prompt)),
        "multi_modal_data": {"video": (np.ascontiguousarray(frames), metadata)},
        "mm_processor_kwargs": {"do_sample_frames": False},
    }


def text_prompt(tokenizer, request: TextRequest) -> dict:
    return {"prompt": render(tokenizer, text_messages(request.prompt))}


def to_generation(output) -> Generation:
    """A vLLM ``RequestOutput`` as a Generation."""
    completion = output.outputs[0]
    return Generation(
        text=completion.text.strip(),
        prompt_tokens=len(output.prompt_token_ids or []),
        output_tokens=len(completion.token_ids),
        finish_reason="length" if completion.finish_reason == "length" else "stop",
    )


class VllmEngine(Engine):
    def __init__(self, config: EngineConfig, model: LoadedModel):
        super().__init__(config, model)
        try:
            from vllm import LLM, SamplingParams
        except ImportError as exc:
            raise EngineError("the vLLM engine needs vllm: pip install -e '.[gpu]' (GPU machines)") from exc
        self._sampling = SamplingParams
        self.llm = LLM(**llm_kwargs(config, model))
        self.tokenizer = self.llm.get_tokenizer()
        log.info("vLLM engine: %s", config.model)

    def _run(self, requests, prompts: list[dict]) -> dict[str, Generation]:
        params = [self._sampling(**sampling_kwargs(r.max_tokens)) for r in requests]
        # One call for the whole partition; LLM.generate returns its outputs in
        # submission order, which we turn into a mapping by request id here.
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        if len(outputs) != len(requests):
            raise EngineError(f"vLLM returned {len(outputs)} outputs for {len(requests)} requests")
        return {request.request_id: to_generation(output) for request, output in zip(requests, outputs, strict=True)}

    def caption(self, requests: list[VideoRequest]) -> dict[str, Generation]:
        if self.family == "qwen-text":
            raise EngineError(f"{self.config.model} is a text model; captions need a vision-language model")
        return self._run(requests, [video_prompt(self.tokenizer, r) for r in requests])

    def complete(self, requests: list[TextRequest]) -> dict[str, Generation]:
        return self._run(requests, [text_prompt(self.tokenizer, r) for r in requests])

    def close(self) -> None:
        del self.llm
