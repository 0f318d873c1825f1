"""Backends: one module per backend, one small protocol.

A backend module defines ``NAME`` and three functions::

    compile(program, plan, settings) -> runner       # runner(**inputs) -> logits (B, T, V)
    save(runner, directory) -> dict[str, str]        # extra artifact files written (name -> file)
    load(directory, program, plan, settings) -> runner

The engine saves the exported program itself (program.pt2) for every backend, so a backend only
writes what it adds. Optional backends import their heavy dependencies inside these functions.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from ..errors import BackendError

BACKENDS = {
    "eager": "dynashape.backends.eager",
    "inductor": "dynashape.backends.inductor",
    "aoti": "dynashape.backends.aoti",
    "onnx": "dynashape.backends.onnx",
    "tensorrt": "dynashape.backends.tensorrt",
}


@dataclass
class CompileSettings:
    """How to build an engine. Defaults live here."""

    backend: str = "inductor"
    device: str = "cpu"
    dtype: str = "float32"


def resolve_device(requested: str | None) -> str:
    """The one device rule: 'cuda' when asked for and present (or nothing asked and a GPU is there), else 'cpu'."""
    import torch

    requested = None if requested is None else str(requested)
    if requested in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested != "cpu" and requested.split(":")[0] != "cuda":
        raise BackendError(f"unknown device {requested!r}.", "use --device cpu, cuda or auto.")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise BackendError(f"--device {requested} was asked for, but torch sees no CUDA GPU here.",
                           "use --device cpu (or auto), or run on a machine with a GPU and a CUDA build of torch.")
    return requested


def default_dtype(device: str) -> str:
    """float16 on a GPU, float32 on the CPU: the default wherever no --dtype is given."""
    return "float16" if str(device).startswith("cuda") else "float32"


def get_backend(name: str) -> ModuleType:
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}.", "use --backend " + ", ".join(BACKENDS) + ".")
    try:
        return importlib.import_module(BACKENDS[name])
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("dynashape"):
            raise BackendError(f"backend {name!r} is not available in this dynashape build.",
                               "use --backend eager or inductor.") from None
        raise
