"""Which engine a configuration gets: the one module that knows every backend.

``engines/base.py`` is the interface and knows none of them, so nothing imports
back what imports it.
"""

from __future__ import annotations

from daskcap.engines.base import Engine, EngineConfig, LoadedModel, resolve_backend
from daskcap.engines.weights import ensure_local, model_family


def build_engine(config: EngineConfig) -> Engine:
    """Load ``config``'s model (downloading it once per node if needed) in its backend, or
    connect to its endpoint."""
    if config.endpoint is not None:
        from daskcap.engines.endpoint import EndpointEngine

        return EndpointEngine(config)
    path = ensure_local(config.model, config.model_dir)
    model = LoadedModel(str(path), model_family(path))
    if resolve_backend(config.backend) == "vllm":
        from daskcap.engines.vllm_engine import VllmEngine  # vLLM is imported only where it runs

        return VllmEngine(config, model)
    from daskcap.engines.hf_engine import TransformersEngine

    return TransformersEngine(config, model)
