"""Planning rules: turn the ranges a user asks for into a ShapePlan that compiles on the installed
torch and serves the whole requested range.

Each rule is one small function ``rule(ctx) -> Finding`` that may adjust the plan being built.
The order matters: limits first (a refusal stops nothing else, so doctor shows every finding),
then attention, 0/1 specialisation, examples, shared dimensions, and the cache.

Background (torch.export dynamic shapes): sizes 0 and 1 are specialised by the symbolic-shape
system, so a dynamic dimension must start at 2 and its example must be >= 2; a size 1 is served by
padding (right-padding a causal LM's sequence does not change the real positions' logits; a dummy
batch row does not change the other rows). https://pytorch.org/docs/stable/export.html
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .shapes import DIM_NAMES, Finding, InputSpec, Range, ShapePlan

DEFAULT_INPUTS = ("input_ids", "attention_mask")
SPECIALISED = (0, 1)         # sizes torch's symbolic shapes turn into constants
EAGER_MASK_FIXED = (5, 2)    # transformers >= 5.2: eager attention no longer slices a fixed mask buffer


@dataclass
class PlanSettings:
    """What the user asks for. Defaults live here and nowhere else.

    ``seq`` is the number of positions a sequence may reach (prompt plus new tokens for a generation
    engine); ``batch`` the rows served at once. ``backend`` and ``device`` decide which graphs the
    engine holds and the runtime policy (``policy.py``); the last five override that policy.
    """

    seq: Range
    batch: Range = field(default_factory=lambda: Range(1, 1))
    example_len: int | None = None
    example_batch: int | None = None
    attn: str = "sdpa"
    inputs: tuple[str, ...] = DEFAULT_INPUTS
    dtype: str = "float32"
    backend: str = "auto"                      # auto: eager on a GPU (fused kernels), inductor on the CPU
    device: str = "cpu"
    graph_batches: tuple[int, ...] | None = None   # CUDA-graph batch sizes (None: the planner's choice)
    kernels: str = "auto"                      # decode layers: auto | fused | torch
    pdl: bool = True                           # fused kernels: programmatic dependent launch (Hopper)
    fused_prefill: bool = True                 # fused kernels: the prefill on them too (else PyTorch ops)
    prefill_bucket: int | None = None
    steps_per_graph: int = 8
    vocab_pad: int = 64


@dataclass
class _Ctx:
    model: dict
    settings: PlanSettings
    versions: dict
    serve: dict[str, Range]
    graph: dict[str, Range] = field(default_factory=dict)
    examples: dict[str, int] = field(default_factory=dict)
    pad_to: dict[str, dict[int, int]] = field(default_factory=dict)
    attn: str = "sdpa"


def _version_tuple(text: str) -> tuple[int, int]:
    nums = []
    for part in str(text).split(".")[:2]:
        digits = "".join(ch for ch in part if ch.isdigit())
        nums.append(int(digits) if digits else 0)
    return tuple(nums + [0] * (2 - len(nums)))  # type: ignore[return-value]


def installed_versions() -> dict:
    import torch
    import transformers

    return {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__}


# ---- rules --------------------------------------------------------------------------------------

def rule_seq_limit(ctx: _Ctx) -> Finding:
    n_pos, seq = ctx.model["n_positions"], ctx.serve["seq"]
    name = ctx.model.get("name", "the model")
    if seq.max > n_pos:
        lo = min(seq.min, n_pos)
        return Finding("model-limit", "REFUSED",
                       f"--seq max {seq.max} is above {name}'s n_positions {n_pos}: its position embeddings "
                       f"stop there, so longer inputs fail at run time; the largest max that works is {n_pos}.",
                       f"--seq {lo}:{n_pos}")
    return Finding("model-limit", "OK", f"--seq max {seq.max} is within {name}'s n_positions {n_pos}.")


def rule_attention(ctx: _Ctx) -> Finding:
    asked = ctx.settings.attn
    old = _version_tuple(ctx.versions.get("transformers", "99.0")) < EAGER_MASK_FIXED
    if asked == "eager" and old and ctx.serve["seq"].max >= ctx.model["n_positions"]:
        ctx.attn = "sdpa"
        return Finding("attention", "ADJUSTED",
                       f"transformers {ctx.versions['transformers']} eager attention slices a fixed "
                       f"{ctx.model['n_positions']}x{ctx.model['n_positions']} causal-mask buffer, which guards "
                       f"the length to != {ctx.model['n_positions']} (the '7 to 1023' trap); using sdpa attention, "
                       "which computes the same logits without that buffer.", "--attn sdpa")
    ctx.attn = asked
    return Finding("attention", "OK", f"{asked} attention exports over the whole range on transformers "
                   f"{ctx.versions.get('transformers', '?')}.")


def _specialise(ctx: _Ctx, dim: str) -> Finding:
    r = ctx.serve[dim]
    if ctx.settings.backend == "eager":
        ctx.graph[dim] = r
        return Finding(f"{dim}-specialisation", "OK", f"the eager backend traces nothing, so {dim} "
                       f"{r.min}..{r.max} runs as it is, without padding.")
    if r.static or r.min > 1:
        ctx.graph[dim] = r
        kind = f"static size {r.min}" if r.static else f"dynamic {r.min}..{r.max}"
        return Finding(f"{dim}-specialisation", "OK", f"{dim} is {kind}: no size that torch specialises.")
    lo = 2
    hi = max(r.max, lo)
    opt = None if r.opt is None else max(r.opt, lo)
    ctx.graph[dim] = Range(lo, hi, opt)
    ctx.pad_to[dim] = {1: 2}
    hint = " (serving batch 1 only? --batch 1 builds a static graph with no padding)" if dim == "batch" else ""
    return Finding(f"{dim}-specialisation", "ADJUSTED",
                   f"torch specialises a dynamic {dim} of size 1 to a constant, so the graph is built for "
                   f"{lo}..{hi} and {dim} 1 is padded to 2 and sliced back (exact: padding never reaches "
                   f"the real rows or positions){hint}.")


def rule_batch_specialisation(ctx: _Ctx) -> Finding:
    return _specialise(ctx, "batch")


def rule_seq_specialisation(ctx: _Ctx) -> Finding:
    return _specialise(ctx, "seq")


def _pick_example(g: Range, avoid: set[int], preferred: int) -> int:
    """An example size >= 2, not in avoid, strictly inside the graph range where the inside allows."""
    if g.static:
        return g.min
    for lo, hi in ((g.min + 1, g.max - 1), (g.min, g.max)):  # the inside first, then the boundaries
        start = min(max(preferred, lo), hi)
        for delta in range(0, max(hi - lo + 1, 0)):
            for cand in (start + delta, start - delta):
                if lo <= cand <= hi and cand not in avoid:
                    return cand
    return min(max(preferred, g.min), g.max)


def _example_rule(ctx: _Ctx, dim: str, given: int | None, preferred: int) -> Finding:
    g = ctx.graph[dim]
    avoid = set(ctx.examples.values())
    flag = "--example-len" if dim == "seq" else "--example-batch"
    if given is not None:
        reasons = []
        if given in SPECIALISED:
            reasons.append(f"size {given} is specialised to a constant by torch")
        elif given not in g:
            reasons.append(f"it is outside the graph's range {g.min}..{g.max} (torch raises "
                           f"ConstraintViolationError)")
        elif not g.static and g.max - g.min >= 2 and given in (g.min, g.max):
            reasons.append("it sits on the range's boundary, where torch may specialise the trace")
        elif given in avoid:
            reasons.append("it equals another dimension's example, so torch would treat the two as one size")
        if not reasons:
            ctx.examples[dim] = given
            return Finding(f"{dim}-example", "OK", f"{flag} {given} is inside {g.min}..{g.max}.")
        ctx.examples[dim] = _pick_example(g, avoid, preferred)
        return Finding(f"{dim}-example", "ADJUSTED",
                       f"{flag} {given} cannot be the export example: {reasons[0]}; using {ctx.examples[dim]}.",
                       f"{flag} {ctx.examples[dim]}")
    ctx.examples[dim] = _pick_example(g, avoid, preferred)
    if g.static:
        return Finding(f"{dim}-example", "OK", f"{dim} is static: the export example is its size {g.min}.")
    return Finding(f"{dim}-example", "OK", f"export example {dim} = {ctx.examples[dim]} (inside {g.min}..{g.max}, "
                   f">= 2, distinct from the other dimensions' examples).")


def rule_batch_example(ctx: _Ctx) -> Finding:
    return _example_rule(ctx, "batch", ctx.settings.example_batch, preferred=ctx.graph["batch"].min + 1)


def rule_seq_example(ctx: _Ctx) -> Finding:
    g = ctx.graph["seq"]
    preferred = g.opt if g.opt is not None else 16
    return _example_rule(ctx, "seq", ctx.settings.example_len, preferred=preferred)


def rule_shared_dims(ctx: _Ctx) -> Finding:
    names = ", ".join(ctx.settings.inputs)
    return Finding("shared-dims", "OK", f"{names} share one batch and one seq dimension (torch otherwise "
                   "reports 'must always be equal' or specialises the mask to the example size).")


FORWARD_BACKENDS = ("onnx", "tensorrt")   # export-only: a no-cache forward graph (onnx adds its own decode)


def rule_use_cache(ctx: _Ctx) -> Finding:
    if ctx.settings.backend in FORWARD_BACKENDS:
        return Finding("use-cache", "OK", "the forward graph is exported with use_cache=False: a DynamicCache "
                       "output is not a type torch.export can flatten, and a no-cache graph serves every length.")
    return Finding("use-cache", "OK", "Hugging Face's DynamicCache is not a type torch.export can flatten, so the "
                   "prefill and decode graphs take dynashape's static cache tensors as inputs and update them in "
                   "place.")


RULES = (rule_seq_limit, rule_attention, rule_batch_specialisation, rule_seq_specialisation,
         rule_batch_example, rule_seq_example, rule_shared_dims, rule_use_cache)


def resolve_backend(settings: PlanSettings) -> str:
    """``auto``: eager (dynashape's fused kernels, no compiler) on a GPU, inductor on the CPU."""
    if settings.backend != "auto":
        return settings.backend
    return "eager" if str(settings.device).startswith("cuda") else "inductor"


def make_plan(model_info: dict, settings: PlanSettings, versions: dict | None = None) -> ShapePlan:
    """Apply every rule; the plan carries each finding (REFUSED ones make ``plan.ok`` false)."""
    from dataclasses import replace

    from .policy import POLICY_RULES, RuntimeCtx

    versions = dict(versions or installed_versions())
    settings = replace(settings, backend=resolve_backend(settings))
    ctx = _Ctx(model=dict(model_info), settings=settings, versions=versions,
               serve={"batch": settings.batch, "seq": settings.seq})
    findings = [rule(ctx) for rule in RULES]
    inputs = [InputSpec(name, "int64", list(DIM_NAMES)) for name in settings.inputs]
    for dim in DIM_NAMES:  # the graph's opt defaults to the example: TensorRT-style profiles need one
        g = ctx.graph[dim]
        if g.opt is None and not g.static:
            ctx.graph[dim] = Range(g.min, g.max, ctx.examples[dim])
    plan = ShapePlan(model=ctx.model, serve=ctx.serve, graph=ctx.graph, examples=ctx.examples,
                     pad_to=ctx.pad_to, inputs=inputs, use_cache=False, attn_implementation=ctx.attn,
                     dtype=settings.dtype, findings=findings, versions=versions)
    rctx = RuntimeCtx(plan, settings)
    plan.findings += [rule(rctx) for rule in POLICY_RULES]
    return plan
