"""``inductor``: ``torch.compile`` of the exported program's module with dynamic shapes.

Each planned dynamic dimension is marked with its graph range and the first call is made at the
plan's example sizes (>= 2, distinct per dimension), so Dynamo traces one graph that serves the
whole range: no recompilation anywhere inside it (tests count recompiles). Sizes the plan pads are
padded by the engine before they get here. Loading compiles again (Inductor's on-disk cache makes
that faster); the AOTInductor backend (``aoti``) is the one that loads without compiling.
"""
from __future__ import annotations

import torch

from ..export import example_inputs

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


def compile(program, plan, settings):
    return _compile_and_warm(program, plan, settings.device)


def save(runner, directory) -> dict[str, str]:
    return {}


def load(directory, program, plan, settings):
    return _compile_and_warm(program, plan, settings.device)
