"""CaptionGenerationStage and CaptionEnhancementStage: the model stages.

Each takes a partition of window rows and an engine handle (built and kept by
the worker that runs it, see ``daskcap.engines.host``) and sends the whole
partition to the engine in one call. A failed call rebuilds the engine once
and retries; if it fails again, windows are tried one by one so a bad window
is marked ``caption_failed`` / ``enhance_failed`` and the rest are kept.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import pandas as pd

from daskcap import schema
from daskcap.engines.base import BACKENDS, Engine, EngineConfig, EngineUnavailable, EndpointSpec, Generation, TextRequest, VideoRequest
from daskcap.engines.endpoint import VIDEO_MODES, url_problem
from daskcap.engines.weights import DEFAULT_CAPTION_MODELS, DEFAULT_ENHANCE_MODELS
from daskcap.prompts import ENHANCE_PROMPTS, enhance_prompt, stage2_prompt
from daskcap.stages._params import Checks

log = logging.getLogger(__name__)

CAPTION_MODEL_VARIANTS = tuple(DEFAULT_CAPTION_MODELS)
ENHANCE_MODEL_VARIANTS = tuple(DEFAULT_ENHANCE_MODELS)


class EngineAccess(Protocol):
    """What a model stage needs of its engine (``engines.host.EngineHandle`` on a worker): the
    stages stay free of Dask."""

    def get(self) -> Engine: ...

    def rebuild(self) -> Engine: ...

    def serve(self, call: Callable[[Engine, list], dict[str, Generation]], requests: list, alone: bool = False) -> dict[str, Generation]: ...


class _ModelStage:
    """What both model stages share: which model they run, and its engine's identity."""

    DEFAULT_MODELS: ClassVar[dict[str, str]]

    def _check_model(self, checks: Checks, variants: tuple[str, ...]) -> None:
        checks.text("model_dir", self.model_dir)
        checks.choice("model_variant", self.model_variant, variants)
        checks.number("max_output_tokens", self.max_output_tokens, 1, integer=True)
        checks.text("model", self.model, optional=True)
        checks.choice("engine", self.engine, BACKENDS)
        if not isinstance(self.vllm_kwargs, dict) or not all(isinstance(k, str) for k in self.vllm_kwargs):
            checks.fail(f"vllm_kwargs must be a dict of vllm.LLM keyword arguments, got {self.vllm_kwargs!r}")
        else:
            try:
                json.dumps(self.vllm_kwargs)
            except (TypeError, ValueError):
                checks.fail(f"vllm_kwargs must hold JSON values (numbers, strings, lists, dicts), got {self.vllm_kwargs!r}")

    def _check_endpoint(self, checks: Checks) -> None:
        checks.text("endpoint", self.endpoint, optional=True)
        if isinstance(self.endpoint, str) and (problem := url_problem(self.endpoint)):
            checks.fail(f"endpoint {problem}")
        checks.text("endpoint_api_key_env", self.endpoint_api_key_env, optional=True)
        if isinstance(self.endpoint_api_key_env, str) and not self.endpoint_api_key_env.replace("_", "a").isalnum():
            checks.fail(f"endpoint_api_key_env must be the NAME of an environment variable holding the key (letters, digits, _), "
                        f"not the key itself; got a value of {len(self.endpoint_api_key_env)} characters")
        checks.number("endpoint_max_concurrency", self.endpoint_max_concurrency, 1, integer=True)
        checks.number("endpoint_timeout_s", self.endpoint_timeout_s, above=0)
        checks.number("endpoint_max_retries", self.endpoint_max_retries, 0, integer=True)
        checks.number("endpoint_breaker_s", self.endpoint_breaker_s, above=0)

    @property
    def model_name(self) -> str:
        """The model: for an endpoint, the served model name (asked of the server when not given)."""
        return self.model or self.DEFAULT_MODELS[self.model_variant]

    def endpoint_spec(self, slots: int | None = None) -> EndpointSpec | None:
        """The endpoint this stage sends to, ``slots`` requests in flight per worker (default: all
        of ``endpoint_max_concurrency``); None for an in-process engine."""
        if self.endpoint is None:
            return None
        return EndpointSpec(
            url=self.endpoint, model=self.model_name, video=getattr(self, "endpoint_video", "mp4"),
            api_key_env=self.endpoint_api_key_env or "", slots=slots or self.endpoint_max_concurrency,
            timeout_s=self.endpoint_timeout_s, max_retries=self.endpoint_max_retries, breaker_s=self.endpoint_breaker_s,
        )

    def _engine_config(self, role: str, batch_size: int, slots: int | None = None, **extra) -> EngineConfig:
        return EngineConfig(
            model=self.model_name,
            model_dir=self.model_dir,
            role=role,
            backend=self.engine,
            fp8=self.fp8,
            batch_size=batch_size,
            # Hashable, so equal configs still share an engine.
            vllm_kwargs=json.dumps(self.vllm_kwargs, sort_keys=True) if self.vllm_kwargs else "",
            endpoint=self.endpoint_spec(slots),
            **extra,
        )


@dataclass(frozen=True)
class CaptionGenerationStage(_ModelStage):
    """The reference's parameters, plus ``model`` (HF id or local path; default by
    ``model_variant``) and ``engine`` (auto, vllm, transformers)."""

    model_dir: str = "models/qwen"
    model_variant: str = "qwen"
    caption_batch_size: int = 16
    fp8: bool = False
    max_output_tokens: int = 512
    model_does_preprocess: bool = False
    disable_mmcache: bool = False
    generate_stage2_caption: bool = False
    stage2_prompt_text: str | None = None
    verbose: bool = False
    model: str | None = None
    engine: str = "auto"
    preprocess_dtype: str = "float32"
    vllm_kwargs: dict[str, Any] = field(default_factory=dict)  # vllm.LLM arguments, over daskcap's own
    # An OpenAI-compatible server instead of an in-process engine (engines/endpoint.py); the key
    # is read on the workers from the environment variable named here, never passed.
    endpoint: str | None = None
    endpoint_api_key_env: str | None = None
    endpoint_max_concurrency: int = 16  # requests in flight for the whole job
    endpoint_timeout_s: float = 120.0
    endpoint_max_retries: int = 6
    endpoint_breaker_s: float = 300.0
    endpoint_video: str = "mp4"  # "mp4": the window mp4 as a video_url; "frames": the sampled frames as images

    DEFAULT_MODELS: ClassVar[dict[str, str]] = DEFAULT_CAPTION_MODELS

    __hash__ = object.__hash__  # a dict field: identity, not value

    def __post_init__(self) -> None:
        checks = Checks("CaptionGenerationStage")
        self._check_model(checks, CAPTION_MODEL_VARIANTS)
        checks.number("caption_batch_size", self.caption_batch_size, 1, integer=True)
        checks.text("stage2_prompt_text", self.stage2_prompt_text, optional=True)
        self._check_endpoint(checks)
        checks.choice("endpoint_video", self.endpoint_video, VIDEO_MODES)
        checks.done()

    def engine_config(self, slots: int | None = None) -> EngineConfig:
        return self._engine_config(
            "caption", self.caption_batch_size, slots, disable_mmcache=self.disable_mmcache, preprocess_dtype=self.preprocess_dtype
        )


@dataclass(frozen=True)
class CaptionEnhancementStage(_ModelStage):
    """The reference's parameters, plus ``model`` and ``engine`` as above."""

    model_dir: str = "models/qwen"
    model_variant: str = "qwen"
    prompt_variant: str = "default"
    prompt_text: str | None = None
    model_batch_size: int = 128
    fp8: bool = False
    max_output_tokens: int = 512
    verbose: bool = False
    model: str | None = None
    engine: str = "auto"
    captioning_model_variant: str = "qwen2.5"  # NeMo: whose caption to enhance (daskcap has one caption per window)
    vllm_kwargs: dict[str, Any] = field(default_factory=dict)  # vllm.LLM arguments, over daskcap's own
    # An OpenAI-compatible server instead of an in-process engine (engines/endpoint.py); the key
    # is read on the workers from the environment variable named here, never passed.
    endpoint: str | None = None
    endpoint_api_key_env: str | None = None
    endpoint_max_concurrency: int = 16  # requests in flight for the whole job
    endpoint_timeout_s: float = 120.0
    endpoint_max_retries: int = 6
    endpoint_breaker_s: float = 300.0

    DEFAULT_MODELS: ClassVar[dict[str, str]] = DEFAULT_ENHANCE_MODELS

    __hash__ = object.__hash__  # a dict field: identity, not value

    def __post_init__(self) -> None:
        checks = Checks("CaptionEnhancementStage")
        self._check_model(checks, ENHANCE_MODEL_VARIANTS)
        checks.choice("captioning_model_variant", self.captioning_model_variant, CAPTION_MODEL_VARIANTS)
        checks.choice("prompt_variant", self.prompt_variant, ENHANCE_PROMPTS)
        checks.text("prompt_text", self.prompt_text, optional=True)
        checks.number("model_batch_size", self.model_batch_size, 1, integer=True)
        self._check_endpoint(checks)
        checks.done()

    def engine_config(self, slots: int | None = None) -> EngineConfig:
        return self._engine_config("enhance", self.model_batch_size, slots)


def window_id(clip_id: str, window_index: int) -> str:
    return f"{clip_id}/{window_index}"


def run_requests(handle: EngineAccess, call: Callable[[Engine, list], dict[str, Generation]], requests: list) -> dict[str, Generation | str]:
    """Results by request id; a request that keeps failing maps to its error text."""
    if not requests:
        return {}
    # A model that cannot be loaded fails the task here: retrying it request by request
    # would load it once per request (the worker gives up after a few failed loads).
    handle.get()
    try:
        return handle.serve(call, requests)  # with other tasks' requests, when they wait too
    except EngineUnavailable:
        raise  # the job stops (a model that will not load, an endpoint that is gone)
    except Exception as first:  # noqa: BLE001 (any engine failure: rebuild once and retry)
        log.warning("engine failed on %d requests (%r); rebuilding it and retrying", len(requests), first)
    handle.rebuild()
    try:
        return handle.serve(call, requests, alone=True)
    except EngineUnavailable:
        raise
    except Exception as second:  # noqa: BLE001
        log.warning("engine failed again (%r); trying the requests one by one", second)
    results: dict[str, Generation | str] = {}
    for request in requests:
        try:
            results.update(handle.serve(call, [request], alone=True))
        except EngineUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 (this request is the bad one: record it)
            results[request.request_id] = f"{type(exc).__name__}: {exc}"
    return results


def _video_request(window, prompt: str, max_tokens: int, send_mp4: bool = False) -> VideoRequest:
    # An endpoint sent the window's mp4 decodes it itself: the sampled frames are not unpacked.
    mp4 = window.window_mp4 if send_mp4 else None
    frames = None if send_mp4 else schema.unpack_frames(
        window.sampled_frames, window.num_sampled_frames, window.sampled_height, window.sampled_width)
    window_seconds = (window.end_frame - window.start_frame + 1) / window.fps
    return VideoRequest(
        request_id=window_id(window.clip_id, window.window_index),
        frames=frames,
        sampled_fps=window.num_sampled_frames / window_seconds,
        prompt=prompt,
        max_tokens=max_tokens,
        mp4=mp4,  # there when an endpoint takes the window's mp4
    )


def _record(columns: dict[str, list], i: int, text_column: str, prefix: str, result: Generation) -> None:
    """Row ``i`` gets a generation's text and its token counts and finish reason."""
    columns[text_column][i] = result.text
    columns[f"{prefix}_prompt_tokens"][i] = result.prompt_tokens
    columns[f"{prefix}_output_tokens"][i] = result.output_tokens
    columns[f"{prefix}_finish_reason"][i] = result.finish_reason


def _set(frame: pd.DataFrame, column: str, values: list) -> None:
    frame[column] = pd.Series(values, index=frame.index, dtype=frame[column].dtype)


def _video_requests(windows: list, prompts: dict[str, str], max_tokens: int, send_mp4: bool = False) -> tuple[list[VideoRequest], dict[str, str]]:
    """Requests for the windows with a prompt; windows whose model input is unreadable map to errors."""
    requests, errors = [], {}
    for window in windows:
        wid = window_id(window.clip_id, window.window_index)
        if wid not in prompts:
            continue
        try:
            requests.append(_video_request(window, prompts[wid], max_tokens, send_mp4))
        except (ValueError, TypeError, OSError) as exc:  # corrupt or missing model input
            errors[wid] = f"unreadable model input: {type(exc).__name__}: {exc}"
    return requests, errors


def caption_windows(windows: pd.DataFrame, params: CaptionGenerationStage, handle: EngineAccess) -> pd.DataFrame:
    """Caption every ``ok`` window (and refine it with stage 2 when asked)."""
    windows = windows.copy()
    todo = [w for w in windows.itertuples(index=False) if w.status == schema.OK]
    caption = lambda engine, requests: engine.caption(requests)  # noqa: E731
    send_mp4 = params.endpoint is not None and params.endpoint_video == "mp4"
    requests, stage1 = _video_requests(todo, {window_id(w.clip_id, w.window_index): w.prompt for w in todo}, params.max_output_tokens, send_mp4)
    stage1.update(run_requests(handle, caption, requests))
    final = dict(stage1)
    if params.generate_stage2_caption:
        prompts = {
            wid: stage2_prompt(params.stage2_prompt_text, result.text)
            for wid, result in stage1.items()
            if isinstance(result, Generation)
        }
        requests, errors = _video_requests(todo, prompts, params.max_output_tokens, send_mp4)
        final.update(errors)
        final.update(run_requests(handle, caption, requests))
    columns = {name: list(windows[name]) for name in (
        "caption", "stage1_caption", "caption_model", "caption_prompt_tokens", "caption_output_tokens",
        "caption_finish_reason", "status", "error")}
    for i, window in enumerate(windows.itertuples(index=False)):
        wid = window_id(window.clip_id, window.window_index)
        if wid not in final:
            continue
        columns["caption_model"][i] = params.model_name
        first, last = stage1[wid], final[wid]
        if isinstance(first, Generation):
            columns["stage1_caption"][i] = first.text
        if isinstance(last, Generation):
            _record(columns, i, "caption", "caption", last)
        else:
            columns["status"][i] = schema.CAPTION_FAILED
            stage = "stage-2 caption" if isinstance(first, Generation) else "caption"
            columns["error"][i] = f"{stage} failed: {last}"
    for name, values in columns.items():
        _set(windows, name, values)
    if params.verbose:
        log.info("captioned %d windows", len(todo))
    return windows


def enhance_windows(windows: pd.DataFrame, params: CaptionEnhancementStage, handle: EngineAccess) -> pd.DataFrame:
    """Rewrite every captioned window's caption with a text model."""
    windows = windows.copy()
    todo = [w for w in windows.itertuples(index=False) if w.status == schema.OK and isinstance(w.caption, str)]
    requests = [
        TextRequest(window_id(w.clip_id, w.window_index), enhance_prompt(params.prompt_variant, params.prompt_text, w.caption), params.max_output_tokens)
        for w in todo
    ]
    results = run_requests(handle, lambda engine, batch: engine.complete(batch), requests)
    columns = {name: list(windows[name]) for name in (
        "enhanced_caption", "enhance_model", "enhance_prompt_tokens", "enhance_output_tokens",
        "enhance_finish_reason", "status", "error")}
    for i, window in enumerate(windows.itertuples(index=False)):
        result = results.get(window_id(window.clip_id, window.window_index))
        if result is None:
            continue
        columns["enhance_model"][i] = params.model_name
        if isinstance(result, Generation):
            _record(columns, i, "enhanced_caption", "enhance", result)
        else:
            columns["status"][i] = schema.ENHANCE_FAILED
            columns["error"][i] = f"enhancement failed: {result}"
    for name, values in columns.items():
        _set(windows, name, values)
    return windows
