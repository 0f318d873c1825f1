"""Backends: one module per backend, one small protocol over named graphs.

A backend module defines ``NAME``, ``KIND`` ("generation": the plan's ``prefill`` and ``decode``
graphs of the lean model; "forward": a no-cache ``forward`` graph of the exported program) and::

    build(plan, settings, model=None, program=None, hf_model=None) -> {graph name: callable}
    save(runners, directory) -> {artifact name: file or folder written}
    load(directory, plan, settings, model=None, program=None) -> {graph name: callable}

Generation runners are ``prefill(idx, last, slots, k, v) -> logits (B, V)`` and
``decode(tok, pos, slots, k, v) -> logits (B, V)`` (cache ``k, v`` updated in place); the forward
runner is ``forward(**inputs) -> logits (B, T, V)``. The engine saves the weights (or the exported
program) itself, so a backend only writes what it adds, and ``load`` must not compile the model
again. Optional backends import their heavy dependencies inside these functions.
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

    backend: str = "eager"
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
