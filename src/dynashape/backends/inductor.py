"""``inductor``: prefill and decode compiled ahead of time by ``torch.compile``, saved, loaded without tracing.

Each graph is ``torch.compile(fn, fullgraph=True, dynamic=True).aot_compile(...)`` (torch's ahead-of-
time precompile): Dynamo traces once at build time, with every planned dynamic dimension marked
with its graph range and examples at the plan's example sizes (>= 2, distinct per dimension), so
one compiled graph serves the whole range. The result (guards, bytecode, Inductor's compiled code)
is written with ``save_compiled_function`` and read back with ``torch.compiler.load_compiled_function``:
no Dynamo tracing at load. The compiled code is looked up in Inductor's cache, so the build
compiles into a cache folder of its own and the engine carries it (``inductor_cache/``); a load
copies it into the process's cache first, so a fresh machine loads without compiling either.

The model is an argument of the compiled function, not a global: Dynamo then guards on its
tensors' shapes and dtypes, not on a module object that cannot be serialised.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from ..errors import BackendError, EngineError
from ..graphs import GENERATION_GRAPHS, generation_examples, graph_dims
from .sidecar import REBUILD, copy_missing, kept_env

NAME = "inductor"
KIND = "generation"
CACHE_DIR = "inductor_cache"


class Runners(dict):
    compiled: dict
    cache: str | None = None


def _require_aot() -> None:
    if not hasattr(torch.compiler, "load_compiled_function"):
        raise BackendError(f"torch {torch.__version__} has no ahead-of-time precompile "
                           "(torch.compiler.load_compiled_function).",
                           "use --backend eager or aoti, or torch 2.10 or newer.")


def _bind(model, compiled: dict) -> Runners:
    runners = Runners({name: (lambda fn: lambda *a: fn(model, *a))(fn) for name, fn in compiled.items()})
    runners.compiled = compiled
    return runners


def build(plan, settings, model=None, program=None, hf_model=None) -> Runners:
    _require_aot()
    cache = tempfile.mkdtemp(prefix="dynashape-inductor-")
    k, v = model.new_cache(plan.runtime.cache_slots, plan.runtime.cache_len)
    examples = generation_examples(plan, k[0].device)
    compiled = {}
    # torch 2.11 offers .aot_compile only with enable_aot_compile (2.13: on by default); floats such as
    # the attention scale are constants (a symbolic float makes aot_compile restart and fail)
    flags = {"specialize_float": True}
    if hasattr(torch._dynamo.config, "enable_aot_compile"):
        flags["enable_aot_compile"] = True
    with kept_env("TORCHINDUCTOR_CACHE_DIR"), torch._dynamo.config.patch(**flags), torch.no_grad():
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        for name, fn in GENERATION_GRAPHS.items():
            args = examples[name]
            for t, dims in zip(args, graph_dims(plan, name)):
                for axis, (lo, hi) in dims.items():
                    torch._dynamo.mark_dynamic(t, axis, min=lo, max=hi)
            try:
                compiled[name] = torch.compile(fn, fullgraph=True, dynamic=True).aot_compile(((model, *args, k, v), {}))
            except Exception as e:  # unsupported op, compiler missing: say which, keep the cause
                first = (str(e).strip().splitlines() or [""])[0][:160]
                raise BackendError(f"torch.compile could not precompile the {name} graph ({type(e).__name__}: "
                                   f"{first}).", "use --backend eager (no compiler) on this machine.") from None
    del k, v
    runners = _bind(model, compiled)
    runners.cache = cache
    return runners


def save(runners, directory) -> dict[str, str]:
    directory = Path(directory)
    files = {}
    for name, fn in runners.compiled.items():
        fn.save_compiled_function(str(directory / f"{name}.aot"))
        files[f"{name}_graph"] = f"{name}.aot"
    if runners.cache:
        shutil.copytree(runners.cache, directory / CACHE_DIR, ignore=shutil.ignore_patterns("locks", "*.lock"))
        files["inductor_cache"] = CACHE_DIR
    return files


def load(directory, plan, settings, model=None, program=None) -> Runners:
    _require_aot()
    from ..models import decode_attention  # noqa: F401  (registers the custom op the graphs call)
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    directory = Path(directory)
    if (directory / CACHE_DIR).is_dir():
        copy_missing(directory / CACHE_DIR, Path(cache_dir()))
    compiled = {}
    for name in GENERATION_GRAPHS:
        try:
            with open(directory / f"{name}.aot", "rb") as f:
                compiled[name] = torch.compiler.load_compiled_function(f)
        except Exception as e:  # another torch/CUDA/Triton/GPU, or a damaged file: torch checks and raises
            first = (str(e).strip().splitlines() or [""])[0][:120]
            raise EngineError(f"{directory}/{name}.aot could not be loaded ({type(e).__name__}: {first}); compiled "
                              "functions load only under the torch, CUDA, Triton and GPU that built them.",
                              REBUILD.format(backend=NAME)) from None
    return _bind(model, compiled)
