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
from daskcap.engines.vision import video_grid, video_token_count

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
    if not cuda_visible():
        # vLLM's CPU backend: eager, as CUDA graphs do not exist there and compiling for
        # the CPU costs minutes of start-up.
        kwargs["enforce_eager"] = True
    # Text models keep the context length their config declares. The user's settings win
    # (NeMo Curator passes both and fails with a duplicate keyword).
    user = json.loads(config.vllm_kwargs) if config.vllm_kwargs else {}
    if "max_model_len" in user and "max_num_batched_tokens" not in user and "max_num_batched_tokens" in kwargs:
        # One step must still hold the longest prompt the model takes.
        kwargs["max_num_batched_tokens"] = max(int(user["max_model_len"]), 2048)
    kwargs.update(user)
    return kwargs


def sampling_kwargs(max_tokens: int, seeded: bool = True) -> dict:
    """The reference's sampling. ``seeded``: a per-request seed, for identical captions run to
    run on a GPU. vLLM's CPU backend cannot rewind a seeded CPU generator when a long prompt's
    prefill is split over steps (``CPU Generator does not use offset``, the engine dies), so it
    samples unseeded there; top_p 0.001 keeps only the likeliest token anyway."""
    kwargs = {"temperature": TEMPERATURE, "top_p": TOP_P, "repetition_penalty": REPETITION_PENALTY, "max_tokens": max_tokens}
    return {**kwargs, "seed": 0} if seeded else kwargs


def video_metadata(request: VideoRequest) -> dict:
    """What vLLM's Qwen-VL processor needs to take the frames as they are: they are the
    window's sampled frames (no sampling again), spaced ``1 / sampled_fps`` apart."""
    count = int(request.frames.shape[0])
    return {
        "fps": float(request.sampled_fps),
        "frames_indices": list(range(count)),
        "total_num_frames": count,
        "duration": count / float(request.sampled_fps),
        "video_backend": "daskcap",
        "do_sample_frames": False,
    }


def video_prompt(tokenizer, request: VideoRequest) -> dict:
    """One vLLM prompt: rendered chat text plus the pre-sampled frames and their metadata.

    ``do_sample_frames=False`` and the metadata stop vLLM's processor from
    sampling the frames again; they are already at the model grid, so its resize
    keeps them as they are.
    """
    return {
        "prompt": render(tokenizer, video_messages(request.prompt)),
        "multi_modal_data": {"video": (np.ascontiguousarray(request.frames), video_metadata(request))},
        "mm_processor_kwargs": {"do_sample_frames": False},
    }


def text_prompt(tokenizer, request: TextRequest) -> dict:
    return {"prompt": render(tokenizer, text_messages(request.prompt))}


def to_generation(output) -> Generation:
    """A vLLM ``RequestOutput`` as a Generation."""
    completion = output.outputs[0]
    tokens = len(completion.token_ids)
    if completion.finish_reason == "stop" and completion.stop_reason is None and tokens:
        tokens -= 1  # the end-of-turn token it stopped at: not counted, as the transformers engine counts
    return Generation(
        text=completion.text.strip(),
        prompt_tokens=len(output.prompt_token_ids or []),
        output_tokens=tokens,
        finish_reason="length" if completion.finish_reason == "length" else "stop",
    )


def prompt_tokens(tokenizer, family: str, prompt: dict, request) -> int | None:
    """The tokens vLLM will count for this prompt, computed by daskcap: the rendered text's,
    with the one video placeholder standing for ``prod(grid) / merge²`` visual tokens
    (Qwen2.5-VL). None where daskcap does not count them itself (Qwen3-VL also writes
    timestamps into the prompt)."""
    text_tokens = len(tokenizer(prompt["prompt"], add_special_tokens=False)["input_ids"])
    if not isinstance(request, VideoRequest):
        return text_tokens
    if family != "qwen2.5-vl":
        return None
    count, height, width, _ = request.frames.shape
    return text_tokens - 1 + video_token_count(video_grid(count, height, width))


class VllmEngine(Engine):
    backend = "vllm"

    def __init__(self, config: EngineConfig, model: LoadedModel):
        super().__init__(config, model)
        try:
            from vllm import LLM, SamplingParams
        except ImportError as exc:
            raise EngineError("the vLLM engine needs vllm: pip install -e '.[gpu]' (GPU machines)") from exc
        self._sampling = SamplingParams
        self.on_gpu = cuda_visible()
        self.llm = LLM(**llm_kwargs(config, model))
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)
        self.token_mismatches = 0  # prompts whose token count vLLM saw otherwise than daskcap
        log.info("vLLM engine: %s (max_model_len %d)", config.model, self.max_model_len)

    def _run(self, requests: list, prompts: list[dict]) -> dict[str, Generation | str]:
        """One ``LLM.generate`` call for every request that fits the model; the others map to
        why they do not (vLLM would refuse the whole call for one of them)."""
        results: dict[str, Generation | str] = {}
        expected: dict[str, int | None] = {}
        kept, kept_prompts = [], []
        for request, prompt in zip(requests, prompts, strict=True):
            tokens = expected[request.request_id] = prompt_tokens(self.tokenizer, self.family, prompt, request)
            if tokens is not None and tokens >= self.max_model_len:
                results[request.request_id] = (
                    f"the prompt is {tokens} tokens and the model's length is {self.max_model_len}: "
                    "fewer frames (--captioning-sampling-fps, --captioning-window-size) or a larger max_model_len (--vllm-kwargs)"
                )
                continue
            kept.append(request)
            kept_prompts.append(prompt)
        if not kept:
            return results
        params = [self._sampling(**sampling_kwargs(r.max_tokens, seeded=self.on_gpu)) for r in kept]
        # One call for everything waiting (this partition's and other tasks' windows); vLLM
        # batches them continuously. Outputs come in submission order: mapped by id here.
        outputs = self.llm.generate(kept_prompts, params, use_tqdm=False)
        if len(outputs) != len(kept):
            raise EngineError(f"vLLM returned {len(outputs)} outputs for {len(kept)} requests")
        for request, output in zip(kept, outputs, strict=True):
            generation = results[request.request_id] = to_generation(output)
            wanted = expected[request.request_id]
            if wanted is not None and wanted != generation.prompt_tokens:
                self.token_mismatches += 1
                log.warning("vLLM counted %d prompt tokens where daskcap counted %d (%s)", generation.prompt_tokens, wanted, request.request_id)
        return results

    def caption(self, requests: list[VideoRequest]) -> dict[str, Generation | str]:
        if self.family == "qwen-text":
            raise EngineError(f"{self.config.model} is a text model; captions need a vision-language model")
        return self._run(requests, [video_prompt(self.tokenizer, r) for r in requests])

    def complete(self, requests: list[TextRequest]) -> dict[str, Generation | str]:
        return self._run(requests, [text_prompt(self.tokenizer, r) for r in requests])

    def close(self) -> None:
        """Stop vLLM's EngineCore process (and its workers) now, not when the garbage
        collector gets to it: a replaced or failed engine must not hold memory or outlive
        the worker."""
        llm, self.llm = self.llm, None
        llm.llm_engine.engine_core.shutdown()
