"""Serving: an OpenAI-compatible HTTP server over one engine, with continuous batching.

    from dynashape.serve import EngineSource, ServeSettings, build_app, run_server
    run_server(EngineSource("engines/gpt2").load, ServeSettings(), port=8000)

``app`` (routes), ``completion`` (one request), ``scheduler`` (the thread that owns the generator),
``metrics``, ``server`` (uvicorn, signals), ``ray`` (Ray Serve replicas), ``workload`` (request log ->
suggested plan). Names are imported lazily: fastapi and uvicorn load only when used.
"""
from __future__ import annotations

import importlib

_PUBLIC = {"build_app": "app", "ServeSettings": "app", "EngineSource": "source", "run_server": "server",
           "run_ray": "ray", "Scheduler": "scheduler", "RequestLog": "workload"}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dynashape.serve' has no attribute {name!r}")
