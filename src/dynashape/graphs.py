"""Plan -> the graphs an engine compiles.

Forward graphs (onnx, tensorrt): the Hugging Face model is wrapped so the graph takes exactly the
plan's inputs and returns only the logits (``use_cache=False``); ``export_plan`` exports it. Every
axis named the same in the plan shares one ``torch.export.Dim``; static axes get ``Dim.STATIC``. When
torch still raises, the error is translated by ``diagnose``; a retry is made once when the diagnosis
says one is safe, and the plan's findings say so.

Generation graphs (eager, inductor, aoti): ``prefill`` and ``decode`` of the lean model, functions of
``(model, *inputs, k, v)`` whose cache tensors ``k, v`` are explicit inputs updated in place (one
cache shared by both graphs; a mutated buffer would give each compiled graph its own copy).
``generation_examples`` gives their example inputs at the plan's example sizes and ``graph_dims``
the plan's dynamic dimension of every axis; ``export_generation`` exports them (for AOTInductor).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch.export import Dim

from .planning.shapes import Finding, ShapePlan


class LogitsOnly(torch.nn.Module):
    """GPT2LMHeadModel -> a module whose forward takes the plan's inputs and returns logits (B, T, V)."""

    def __init__(self, model, input_names: list[str]):
        super().__init__()
        self.m = model
        self.input_names = list(input_names)

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        out = self.m(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                     use_cache=False, return_dict=True)
        return out.logits


STATIC = getattr(Dim, "STATIC", None)  # torch >= 2.6 wants Dim.STATIC rather than None


def torch_dims(plan: ShapePlan) -> dict:
    """One Dim per planned dimension (Dim.STATIC where the graph is static)."""
    return {name: STATIC if r.static else Dim(name, min=r.min, max=r.max) for name, r in plan.graph.items()}


def dynamic_shapes(plan: ShapePlan) -> dict:
    dims = torch_dims(plan)
    return {spec.name: {axis: dims[d] for axis, d in enumerate(spec.dims)} for spec in plan.inputs}


def example_inputs(plan: ShapePlan, device: str | torch.device = "cpu", seed: int = 0) -> dict[str, torch.Tensor]:
    """Example inputs at the planned example sizes: random ids, an all-ones mask, positions 0..T-1."""
    b, t = plan.examples["batch"], plan.examples["seq"]
    g = torch.Generator().manual_seed(seed)
    out = {}
    for spec in plan.inputs:
        if spec.name == "input_ids":
            out[spec.name] = torch.randint(0, plan.model["vocab_size"], (b, t), generator=g)
        elif spec.name == "attention_mask":
            out[spec.name] = torch.ones(b, t, dtype=torch.long)
        elif spec.name == "position_ids":
            out[spec.name] = torch.arange(t).expand(b, t).contiguous()
    return {k: v.to(device) for k, v in out.items()}


@dataclass
class ExportResult:
    program: torch.export.ExportedProgram
    seconds: float
    retried: bool = False


def _export_once(module, kwargs, shapes, extra: dict):
    return torch.export.export(module, (), kwargs=kwargs, dynamic_shapes=shapes, strict=False, **extra)


def export_plan(model, plan: ShapePlan, device: str | torch.device = "cpu") -> ExportResult:
    """Export ``model`` (HF GPT2LMHeadModel on ``device``) for ``plan``; raise ExportError on failure."""
    names = [s.name for s in plan.inputs]
    module = LogitsOnly(model, names).eval()
    kwargs = example_inputs(plan, device)
    shapes = dynamic_shapes(plan)
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            ep = _export_once(module, kwargs, shapes, {})
        return ExportResult(ep, time.perf_counter() - t0)
    except Exception as exc:  # torch raises many types; each is translated below
        from .planning import diagnose

        error = diagnose.as_export_error(exc, input_names=names, plan=plan)
        d = error.diagnosis
        if d is None or not d.retry:
            raise error from None
    try:
        with torch.no_grad():
            ep = _export_once(module, kwargs, shapes, dict(d.retry))
    except Exception as exc2:
        from .planning import diagnose

        raise diagnose.as_export_error(exc2, input_names=names, plan=plan) from None
    plan.findings.append(Finding("export-retry", "ADJUSTED",
                                 f"first export failed ({d.cause}); retried once with {d.retry}, which "
                                 "turns the guard into a run-time assert, and it succeeded."))
    return ExportResult(ep, time.perf_counter() - t0, retried=True)


def program_sizes(ep: torch.export.ExportedProgram, plan: ShapePlan) -> dict[str, object]:
    """Planned dimension -> what the program has there: an int (static) or (lo, hi) (dynamic)."""
    out: dict[str, object] = {}
    for spec in plan.inputs:
        node = next((n for n in ep.graph.nodes if n.op == "placeholder" and n.name == spec.name), None)
        if node is None:
            continue
        for axis, dim in enumerate(spec.dims):
            size = node.meta["val"].shape[axis]
            if isinstance(size, int):
                out.setdefault(dim, size)
                continue
            vr = ep.range_constraints.get(size.node.expr)
            out.setdefault(dim, (int(vr.lower), int(vr.upper)) if vr is not None else (None, None))
    return out


def check_program(ep: torch.export.ExportedProgram, plan: ShapePlan) -> list[Finding]:
    """Prove the program really has the plan's dynamic ranges (export can 'succeed' with none)."""
    findings = []
    for dim, size in program_sizes(ep, plan).items():
        want = plan.graph[dim]
        ok = size == want.min if want.static else size == (want.min, want.max)
        if not ok:
            findings.append(Finding("program-check", "REFUSED",
                                    f"the exported {dim} dimension came out as {size} instead of the planned "
                                    f"{want.text()}.", "report this as a dynashape bug with `doctor --json`."))
    if not findings:
        findings.append(Finding("program-check", "OK", "exported graph has the planned dynamic dimensions."))
    return findings


# ---- generation graphs --------------------------------------------------------------------------

def prefill_graph(model, idx, last, slots, k, v):
    return model.prefill(idx, last, slots, k, v)


def decode_graph(model, tok, pos, slots, k, v):
    return model.decode(tok, pos, slots, k, v)


GENERATION_GRAPHS = {"prefill": prefill_graph, "decode": decode_graph}


def generation_examples(plan: ShapePlan, device) -> dict[str, tuple[torch.Tensor, ...]]:
    """Example inputs (without model and cache) per graph, at the plan's example sizes (>= 2, distinct)."""
    B, T = plan.examples["batch"], plan.examples["seq"]
    dev = torch.device(device)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, plan.model["vocab_size"], (B, T), generator=g).to(dev)
    slots = torch.arange(B, device=dev)
    return {"prefill": (ids, torch.full((B,), T - 1, device=dev), slots),
            # a fresh (B,) tensor, not a column of ids: at B = 1 that column keeps stride T (a size-1 dim counts
            # as contiguous), and a graph of static sizes guards on the stride, which the runtime's tok never has
            "decode": (torch.randint(0, plan.model["vocab_size"], (B,), generator=g).to(dev),
                       torch.full((B,), T, device=dev), slots)}


def graph_dims(plan: ShapePlan, graph: str) -> list[dict[int, tuple[int, int]]]:
    """Per input of ``graph`` (plan order): {axis: (min, max)} of its dynamic axes."""
    out = []
    for spec in plan.graphs[graph]:
        out.append({axis: (plan.graph[d].min, plan.graph[d].max) for axis, d in enumerate(spec.dims)
                    if not plan.graph[d].static})
    return out


class _GraphModule(torch.nn.Module):
    """``fn(model, *inputs)`` as a module, so torch.export sees the lean model's weights as parameters."""

    def __init__(self, model, fn):
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, a, b, slots, k, v):          # prefill: idx, last; decode: tok, pos
        return self.fn(self.model, a, b, slots, k, v)


def export_generation(model, plan: ShapePlan, graph: str, k, v) -> torch.export.ExportedProgram:
    """torch.export of one generation graph with the plan's dynamic dims; the cache inputs are static."""
    dims = {name: Dim(name, min=r.min, max=r.max) for name, r in plan.graph.items() if not r.static}
    shapes = [{axis: dims[d] for axis, d in enumerate(spec.dims) if d in dims} or None for spec in plan.graphs[graph]]
    args = generation_examples(plan, k[0].device)[graph] + (k, v)
    module = _GraphModule(model, GENERATION_GRAPHS[graph]).eval()
    static = [[None] * len(k), [None] * len(v)]                # per-layer cache tensors: static shapes
    with torch.no_grad():
        return torch.export.export(module, args, dynamic_shapes=shapes + static, strict=False)
