"""``eager``: the lean model's prefill and decode run by PyTorch as they are, with no compiler.

On a GPU the plan's decode kernels are dynashape's own Triton kernels (``models/kernels``) and the
runtime captures every step in a CUDA graph, so the Python above them runs once per capture, not
once per token. Triton keeps each compiled kernel in its cache folder; the build compiles into a
folder of its own, the engine stores it (``triton/``), and a load copies it into the process's
Triton cache, so a fresh process launches the kernels without compiling them again. Loading is
reading the weights.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .sidecar import copy_missing

NAME = "eager"
KIND = "generation"
TRITON_DIR = "triton"


class Runners(dict):
    """Graph name -> callable, plus the Triton cache folder the build compiled into (or None)."""
    triton_cache: str | None = None


def _bind(model) -> Runners:
    """On the fused kernels also decode_greedy: the greedy step with its state updates in two kernels
    (the runtime uses it for greedy steps where a backend offers it; the model is configured by now)."""
    runners = Runners(prefill=model.prefill, decode=model.decode)
    if model.kernels == "fused":
        runners["decode_greedy"] = model.decode_greedy
    return runners


def build(plan, settings, model=None, program=None, hf_model=None) -> Runners:
    runners = _bind(model)
    if plan.runtime.kernels == "fused":
        # compile the kernels into a folder of our own, so the engine can carry exactly them
        runners.triton_cache = tempfile.mkdtemp(prefix="dynashape-triton-")
        os.environ["TRITON_CACHE_DIR"] = runners.triton_cache
    return runners


def save(runners, directory) -> dict[str, str]:
    folder = getattr(runners, "triton_cache", None)
    if not folder or not any(Path(folder).iterdir()):
        return {}
    shutil.copytree(folder, Path(directory) / TRITON_DIR)
    return {"triton_kernels": TRITON_DIR}


def triton_cache_dir() -> Path:
    return Path(os.environ.get("TRITON_CACHE_DIR") or Path.home() / ".triton" / "cache")


def install_kernels(directory) -> None:
    """Copy the engine's compiled kernels into this process's Triton cache (entries are content-addressed)."""
    src = Path(directory) / TRITON_DIR
    if src.is_dir():
        copy_missing(src, triton_cache_dir())


def load(directory, plan, settings, model=None, program=None) -> Runners:
    install_kernels(directory)
    return _bind(model)
