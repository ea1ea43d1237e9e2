"""Model engines: one small interface, backends for vLLM and transformers.

Stages hand an engine a whole partition of requests and get results back
keyed by request (window) id. Engines are built lazily, once per worker
process, by ``daskcap.engines.host.EngineHost``.
"""
