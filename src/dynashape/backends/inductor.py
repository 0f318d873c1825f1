"""``inductor``: ``torch.compile`` of the exported program's module with dynamic shapes.

Each planned dynamic dimension is marked with its graph range and the first call is made at the
plan's example sizes (>= 2, distinct per dimension), so Dynamo traces one graph that serves the
whole range: no recompilation anywhere inside it (tests count recompiles). Sizes the plan pads are
padded by the engine before they get here. Loading compiles again (Inductor's on-disk cache makes
that faster); the AOTInductor backend (``aoti``) is the one that loads without compiling.

torch's compile caches can hand back a graph cached for a narrower range, whose guards (e.g.
``batch <= 3``) then clash with the marked range (ConstraintViolationError, seen with torch 2.13 and
transformers 4.46.3); the compile is then retried once with those caches off.
"""
from __future__ import annotations

import torch

from ..graphs import example_inputs

NAME = "inductor"


def _mark(inputs: dict, plan) -> None:
    for spec in plan.inputs:
        for axis, dim in enumerate(spec.dims):
            r = plan.graph[dim]
            if not r.static:
                torch._dynamo.mark_dynamic(inputs[spec.name], axis, min=r.min, max=r.max)


def _compile_and_warm(program, plan, device):
    compiled = torch.compile(program.module(), dynamic=True)
    inputs = example_inputs(plan, device)
    _mark(inputs, plan)
    with torch.no_grad():
        compiled(**inputs)
    return compiled


def _compile_fresh(program, plan, device):
    """_compile_and_warm, retried once without the compile caches when a cached graph's guards clash."""
    from torch.fx.experimental.symbolic_shapes import ConstraintViolationError

    try:
        return _compile_and_warm(program, plan, device)
    except ConstraintViolationError:
        torch._dynamo.reset()
        with torch._inductor.config.patch(fx_graph_cache=False), \
                torch._functorch.config.patch(enable_autograd_cache=False):
            return _compile_and_warm(program, plan, device)


def compile(program, plan, settings):
    return _compile_fresh(program, plan, settings.device)


def save(runner, directory) -> dict[str, str]:
    return {}


def load(directory, program, plan, settings):
    return _compile_fresh(program, plan, settings.device)
