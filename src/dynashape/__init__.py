"""dynashape: compile GPT-2-family models with dynamic shapes that just work.

Public names are re-exported lazily, so ``dynashape --help`` does not pay for importing torch.
"""
from __future__ import annotations

import importlib

__version__ = "0.2.0"

_PUBLIC = {
    "plan": "api", "compile": "api", "load": "api", "verify": "api",
    "Range": "planning.shapes", "ShapePlan": "planning.shapes", "parse_range": "planning.shapes",
    "PlanSettings": "planning.rules", "make_plan": "planning.rules",
    "load_model": "models", "export_plan": "graphs",
    "CompileSettings": "backends", "Engine": "engine", "build_engine": "engine",
    "VerifySettings": "verification", "verify_engine": "verification",
    "SamplingSettings": "runtime.sampling", "Request": "runtime.state",
    "DynashapeError": "errors", "ShapeError": "errors", "PlanError": "errors", "ModelError": "errors",
    "ExportError": "errors", "EngineError": "errors", "BackendError": "errors", "GenerateError": "errors",
    "VerifyError": "errors",
}
__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name: str):
    if name in _PUBLIC:
        module = importlib.import_module(f".{_PUBLIC[name]}", __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dynashape' has no attribute {name!r}")
