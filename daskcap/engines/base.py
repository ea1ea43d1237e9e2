"""The engine interface: caption a batch of windows, complete a batch of texts."""

from __future__ import annotations

import importlib.util
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

BACKENDS = ("auto", "vllm", "transformers")

# Sampling the reference uses; near-greedy, so captions are reproducible.
TEMPERATURE, TOP_P, REPETITION_PENALTY = 0.1, 0.001, 1.05


class EngineError(RuntimeError):
    """An engine cannot be built or used; the message says what to install or change."""


class EngineUnavailable(EngineError):
    """A model failed to load again and again on this worker: the job stops with its error
    instead of loading it once more for every partition."""


@dataclass(frozen=True)
class EngineConfig:
    """Everything that identifies one loaded engine; equal configs share it."""

    model: str  # HF id ("org/name") or local directory, as the user gave it
    model_dir: str  # where "org/name" weights live (and are downloaded to)
    role: str = "caption"  # "caption" or "enhance": a worker keeps one engine per role
    backend: str = "auto"  # "auto", "vllm" or "transformers"
    fp8: bool = False
    disable_mmcache: bool = False
    preprocess_dtype: str = "float32"
    batch_size: int = 16  # transformers: windows per forward pass
    vllm_kwargs: str = ""  # JSON of vllm.LLM arguments that override daskcap's (vLLM only)


@dataclass(frozen=True)
class LoadedModel:
    """Where an engine's weights are and what they are, found on the worker."""

    path: str
    family: str  # "qwen2.5-vl", "qwen3-vl" or "qwen-text"


@dataclass(frozen=True)
class VideoRequest:
    request_id: str
    frames: np.ndarray  # (T, H, W, 3) uint8, already at the model grid
    sampled_fps: float  # frames per second of the sampled frames
    prompt: str
    max_tokens: int


@dataclass(frozen=True)
class TextRequest:
    request_id: str
    prompt: str
    max_tokens: int


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    output_tokens: int
    finish_reason: str  # "stop", or "length" when cut at max_tokens


class Engine(ABC):
    """One loaded model. Results come back keyed by request id, never by position."""

    def __init__(self, config: EngineConfig, model: LoadedModel):
        self.config = config
        self.model_path = model.path
        self.family = model.family

    @abstractmethod
    def caption(self, requests: list[VideoRequest]) -> dict[str, Generation]: ...

    @abstractmethod
    def complete(self, requests: list[TextRequest]) -> dict[str, Generation]: ...

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release the model's memory."""


def cuda_visible() -> bool:
    """Whether a CUDA device is visible, without initialising CUDA in this process.

    vLLM must be the first to touch CUDA in a worker, so this looks at the
    device nodes and CUDA_VISIBLE_DEVICES instead of asking torch.
    """
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")


def resolve_backend(backend: str) -> str:
    """``auto``: vLLM when it is importable and a CUDA device is visible, else transformers."""
    if backend not in BACKENDS:
        raise EngineError(f"engine must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend != "auto":
        return backend
    if importlib.util.find_spec("vllm") is not None and cuda_visible():
        return "vllm"
    return "transformers"


def build_engine(config: EngineConfig) -> Engine:
    """Load ``config``'s model (downloading it once per node if needed) in its backend."""
    from daskcap.engines.weights import ensure_local, model_family

    path = ensure_local(config.model, config.model_dir)
    model = LoadedModel(str(path), model_family(path))
    backend = resolve_backend(config.backend)
    if backend == "vllm":
        from daskcap.engines.vllm_engine import VllmEngine

        return VllmEngine(config, model)
    from daskcap.engines.hf_engine import TransformersEngine

    return TransformersEngine(config, model)
