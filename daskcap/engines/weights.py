"""Find model weights: a local path, ``<model_dir>/<org>/<name>``, or a one-time download.

A missing model is downloaded once per node (huggingface_hub), under a file
lock so engine workers on one node do not race each other.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from daskcap.engines.base import EngineError

# model_variant -> default weights. NeMo Curator calls Qwen2.5 "qwen2.5" since 1.3 and
# "qwen" before (the name its docs still show): both are accepted.
DEFAULT_CAPTION_MODELS = {"qwen": "Qwen/Qwen2.5-VL-7B-Instruct", "qwen2.5": "Qwen/Qwen2.5-VL-7B-Instruct", "qwen3": "Qwen/Qwen3-VL-8B-Instruct"}
DEFAULT_ENHANCE_MODELS = {"qwen": "Qwen/Qwen2.5-14B-Instruct", "qwen2.5": "Qwen/Qwen2.5-14B-Instruct", "qwen3": "Qwen/Qwen3-14B"}

_FAMILIES = {"qwen2_5_vl": "qwen2.5-vl", "qwen3_vl": "qwen3-vl", "qwen2": "qwen-text", "qwen3": "qwen-text"}


@dataclass(frozen=True)
class ModelLocation:
    name: str  # as the user gave it
    path: Path  # where the weights are (or will be, once downloaded)
    present: bool


def locate(model: str, model_dir: str) -> ModelLocation:
    """Where ``model`` (a local directory or an ``org/name`` hub id) lives under ``model_dir``."""
    local = Path(model).expanduser()
    if local.is_dir():
        return ModelLocation(model, local.resolve(), (local / "config.json").is_file())
    if model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise EngineError(f"model {model!r} is neither a local directory nor an 'org/name' hub id")
    path = Path(model_dir).expanduser().resolve() / model
    return ModelLocation(model, path, (path / "config.json").is_file())


def model_family(path: Path) -> str:
    """The model's family from its config.json (``model_type``)."""
    config = json.loads((path / "config.json").read_text())
    model_type = config.get("model_type", "")
    if model_type not in _FAMILIES:
        raise EngineError(f"{path}: model_type {model_type!r} is not supported (supported: {', '.join(sorted(_FAMILIES))})")
    return _FAMILIES[model_type]


def hub_reachable(model: str) -> str | None:
    """None when ``model`` can be downloaded from here, else why not."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        return "HF_HUB_OFFLINE is set"
    try:
        from huggingface_hub import HfApi

        HfApi().model_info(model, timeout=10)
    except Exception as exc:  # noqa: BLE001 (any failure means: no download possible)
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip()
    return None


def check_available(model: str, model_dir: str) -> list[str]:
    """Problems (one line each) that would stop ``model`` from loading; run before any video is read."""
    try:
        location = locate(model, model_dir)
    except EngineError as exc:
        return [str(exc)]
    if location.present:
        try:
            model_family(location.path)
        except EngineError as exc:
            return [str(exc)]
        return []
    if Path(model).expanduser().is_dir():
        return [f"model directory {location.path} has no config.json"]
    why = hub_reachable(model)
    if why:
        return [f"model {model} is not in {location.path} and cannot be downloaded ({why}); "
                f"put its weights there, pass --model-dir, or pass a local path with its weights"]
    return []


def ensure_local(model: str, model_dir: str) -> Path:
    """The weights' directory, downloading them first if needed (once per node)."""
    location = locate(model, model_dir)
    if location.present:
        return location.path
    from filelock import FileLock

    location.path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(location.path) + ".lock"):
        if not (location.path / "config.json").is_file():  # another worker may have finished it
            from huggingface_hub import snapshot_download

            try:
                snapshot_download(model, local_dir=str(location.path))
            except Exception as exc:
                raise EngineError(f"downloading {model} to {location.path} failed: {exc}") from exc
    return location.path
