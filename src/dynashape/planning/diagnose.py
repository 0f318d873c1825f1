"""Known torch shape errors -> one plain sentence: which input and dimension, the cause, the fix.

``diagnose(exc)`` reads the text of an exception and its causes (torch.export, torch.compile, an
exported program's module, the ONNX exporters, ONNX Runtime, TensorRT) and translates it with a
table of small rules, one ``(pattern, builder)`` pair per known failure, in the order of the
DESIGN.md trap catalogue. ``diagnose_program(ep)`` finds the traps that do not raise: an export that
"succeeded" with no dynamic dim, a min of 0 or 1 that ``ep.module()`` never checks, a max above the
model's positions.

torch names inputs by source (``L['input_ids'].size()[1]``, ``L['args'][0][0].size()[1]``,
``L['kwargs']['attention_mask']``, ``input_ids.size()[1]``) or by ``Dim`` name (``seq``); both are
mapped back to an input and an axis through ``input_names`` (positional args) and the plan's inputs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import ExportError

SEQ_INPUTS = ("input_ids", "attention_mask", "position_ids")
RETRY_WITH_ASSERTS = {"prefer_deferred_runtime_asserts_over_guards": True}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SOURCE = re.compile(r"(?:\bL|\binputs)((?:\[[^\[\]]+\])+)\.(?:size\(\)|shape)\[(\d+)\]"
                     r"|\b([A-Za-z_]\w*)\.(?:size\(\)|shape)\[(\d+)\]")


@dataclass
class Diagnosis:
    kind: str                    # short id, e.g. "specialized_constant", "causal_mask_buffer"
    cause: str                   # plain words, one sentence
    fix: str                     # the exact flag / value that works, in dynashape terms
    input: str | None = None     # e.g. "input_ids"
    dim: int | None = None       # axis index
    torch_suggestions: list[str] = field(default_factory=list)  # torch's "Suggested fixes" lines
    retry: dict | None = None    # export kwargs that make a safe retry, or None

    def where(self) -> str:
        if self.input is None:
            return ""
        return f"{self.input} dim {self.dim}: " if self.dim is not None else f"{self.input}: "

    def one_line(self) -> str:
        return " ".join(f"{self.where()}{self.cause} Fix: {self.fix}".split())


# ---- reading torch's text -------------------------------------------------------------------
def _text(exc: BaseException) -> str:
    """The messages of ``exc`` and its causes (ONNX wraps torch.export's error), without colours."""
    chain: list[BaseException] = []
    while exc is not None and exc not in chain and len(chain) < 8:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return _ANSI.sub("", "\n".join(f"{type(e).__name__}: {e}" for e in chain))


def _input_name(keys: list[str], input_names: list[str] | None) -> str:
    keys = [k.strip("'\"") for k in keys]
    if keys[0] == "args" and len(keys) > 1:  # L['args'][0][i]: the i-th positional argument
        idx = int(keys[2] if keys[1] == "0" and len(keys) > 2 else keys[1])
        return input_names[idx] if input_names and idx < len(input_names) else f"args[{idx}]"
    return keys[1] if keys[0] == "kwargs" and len(keys) > 1 else keys[0]


def sources(text: str, input_names: list[str] | None = None) -> list[tuple[str, int]]:
    """Every ``(input name, axis)`` that torch's text names, in order, without repeats."""
    found: list[tuple[str, int]] = []
    for m in _SOURCE.finditer(text):
        if m.group(1):
            item = (_input_name(re.findall(r"\[([^\[\]]+)\]", m.group(1)), input_names), int(m.group(2)))
        else:
            item = (m.group(3), int(m.group(4)))
        if item not in found:
            found.append(item)
    return found


def suggested_fixes(text: str) -> list[str]:
    """torch's own 'Suggested fixes:' lines, e.g. ``["seq = Dim('seq', max=1024)"]``."""
    m = re.search(r"Suggested fixes:\n((?:[ \t]+\S.*\n?)+)", text)
    return [ln.strip() for ln in m.group(1).splitlines() if ln.strip()] if m else []


def _canonical(name: str | None) -> str | None:
    """A Dim name ("seq_len", "batch_size", "past_len") -> our dimension, when the name says which."""
    low = (name or "").lower()
    return next((d for d, keys in (("past", ("past",)), ("batch", ("batch",)), ("seq", ("seq", "len", "tok")))
                 if any(k in low for k in keys)), None)


@dataclass
class _Ctx:
    text: str
    input_names: list[str] | None
    plan: Any

    @property
    def n_positions(self) -> int | None:
        return (self.plan.model or {}).get("n_positions") if self.plan is not None else None

    def where(self, dim_name: str | None = None, text: str | None = None) -> tuple[str | None, int | None]:
        """Input and axis: a torch source in ``text``, else the plan's input holding ``dim_name``."""
        found = sources(self.text if text is None else text, self.input_names)
        if found:
            return found[0]
        for spec in (self.plan.inputs if self.plan is not None and dim_name else []):
            if dim_name in spec.dims:
                return spec.name, spec.dims.index(dim_name)
        dim_name = _canonical(dim_name)
        if dim_name in ("batch", "seq") and (self.input_names is None or "input_ids" in self.input_names):
            return "input_ids", 0 if dim_name == "batch" else 1  # every GPT-2 graph has input_ids
        return None, None

    def dim_name(self, name: str | None, inp: str | None, axis: int | None) -> str:
        """The planned dimension ("seq", "batch", "past", ...) of a Dim name or an input axis."""
        spec = next((s for s in self.plan.inputs if s.name == inp), None) if self.plan is not None else None
        if spec is not None and axis is not None and axis < len(spec.dims):
            return spec.dims[axis]
        if _canonical(name):
            return _canonical(name)
        if inp in SEQ_INPUTS and axis is not None:
            return "batch" if axis == 0 else "seq"
        return name or "seq"

    def range_of(self, dim: str, which: str = "serve") -> tuple[int, int] | None:
        r = getattr(self.plan, which, {}).get(dim) if self.plan is not None else None
        return (r.min, r.max) if r is not None else None

    def lowest(self, dim: str = "seq") -> int:
        return (self.range_of(dim) or (1, None))[0]

    def example_for(self, dim: str, lo: int | None = None, hi: int | None = None) -> int:
        """An example size strictly inside the range where possible, and never below 2."""
        ex = (self.plan.examples or {}).get(dim) if self.plan is not None else None
        rng = (lo, hi) if lo is not None else self.range_of(dim, "graph")
        if ex and ex >= 2 and (rng is None or rng[0] <= ex <= rng[1]):
            return ex
        if rng is None:
            return 8
        lo2 = max(2, rng[0])
        return lo2 + 1 if rng[1] > lo2 + 1 else lo2


def _example_fix(ctx: _Ctx, dim: str, size: int) -> str:
    if dim == "batch":
        return f"--batch MIN:MAX: dynashape exports with a batch example >= 2 and pads batch {size} with dummy rows."
    if dim == "past":
        return (f"give the past length an example of {ctx.example_for('past')} (>= 2), or use dynashape's "
                "static KV-cache decode, which has no dynamic past length.")
    return (f"--example-len {ctx.example_for(dim)} (any size >= 2 inside the range; dynashape pads length "
            f"{size} up to the graph's minimum).")


def _translate(line: str, ctx: _Ctx) -> str | None:
    """One torch suggestion in our flags: ``seq = Dim('seq', max=256)`` -> ``--seq 1:256``."""
    m = re.match(r"\w+ = Dim\('(\w+)'(.*)\)", line)
    if not m:
        return None
    dim = ctx.dim_name(m.group(1), None, None)
    lo, hi = re.search(r"min=(\d+)", m.group(2)), re.search(r"max=(\d+)", m.group(2))
    cur = ctx.range_of(dim) or (1, "MAX")
    return f"--{dim} {lo.group(1) if lo else max(1, cur[0])}:{hi.group(1) if hi else cur[1]}"


# ---- the rules, in catalogue order (first match wins) ---------------------------------------
def _fixed(kind: str, cause: str, fix: str, inp: str | None = None, dim: int | None = None):
    """A rule whose diagnosis does not depend on the text; ``{0}`` in ``cause`` is the match's group 1."""
    return lambda ctx, m: Diagnosis(kind, cause.format(*m.groups()), fix, inp, dim)


def _data_dependent(ctx: _Ctx, m: re.Match) -> Diagnosis:
    call = re.search(r"raised this error:\s*\n\s*File \"([^\"]+)\", line (\d+), in \w+\n\s*(.+)", ctx.text)
    at = f" (`{call.group(3).strip()}` at {call.group(1).rsplit('/', 1)[-1]}:{call.group(2)})" if call else ""
    return Diagnosis("data_dependent", f"the exported code branches on or sizes a tensor by tensor values{at}, "
                     f"which a graph cannot do ({m.group(1)} is only known at run time).",
                     "move value-dependent code (.item(), int(tensor), `if tensor.any()`) out of the exported "
                     "forward; dynashape's own wrapper takes input_ids and attention_mask and never branches "
                     "on their values.")


def _recompile(ctx: _Ctx, m: re.Match) -> Diagnosis:
    failed = [g.split("#")[0].strip() for g in re.findall(r"^\s*- [\d/]+: (.+)$", ctx.text, re.M)]
    guard = next((g for g in failed if re.search(r"\d+ <= .*<= \d+", g)), failed[0] if failed else m.group(1))
    inp, axis = ctx.where(text=guard)
    bounds = re.search(r"(\d+) <= .*?<= (\d+)", guard)
    why = " (size 1 is specialised away by 0/1 specialisation)" if bounds and bounds.group(1) == "2" else ""
    rng = f"{min(int(bounds.group(1)), 1)}:{bounds.group(2)}" if bounds else "MIN:MAX"
    return Diagnosis("recompile", f"torch.compile guarded the graph with `{guard}`, so sizes outside it "
                     f"compile a new graph{why}, and the new graph has no upper bound.",
                     f"--{ctx.dim_name(None, inp, axis)} {rng}: dynashape compiles one graph for the planned "
                     "range, pads size 1 up to 2 and refuses sizes outside the range before they reach the model.",
                     inp, axis)


def _runtime_guard(ctx: _Ctx, m: re.Match) -> Diagnosis:
    guard = m.group(1).strip()
    inp, axis = ctx.where(text=guard)
    dim, n = ctx.dim_name(None, inp, axis), ctx.n_positions
    top = n if (dim == "seq" and n) else "MAX"
    above = re.search(r"<= (\d+)", guard)
    return Diagnosis("guard_failed_at_runtime", f"a size {'above ' + above.group(1) + ' ' if above else ''}was "
                     f"sent to a program exported only for `{guard}`.", "send sizes the program was built for, "
                     f"or rebuild covering them, e.g. --{dim} {ctx.lowest(dim)}:{top}"
                     + (f" (the model has {n} positions)." if top == n else "."), inp, axis)


def _runtime_assert(ctx: _Ctx, m: re.Match) -> Diagnosis:
    size = int(m.group(2))
    mask = size == (ctx.n_positions or 1024)  # the `!= n_positions` guard of the causal-mask buffer
    return Diagnosis("guard_failed_at_runtime", f"the program was exported with a run-time assert "
                     f"`{m.group(1)}({m.group(2)})` excluding size {size}, and that size was sent.",
                     "--attn sdpa (serves every length up to the model's positions)." if mask else
                     f"rebuild with a range that does not need size {size} excluded.")


def _trt_profile(ctx: _Ctx, m: re.Match) -> Diagnosis:
    name, idx = re.search(r"[Ff]or input:? '?(\w+)", ctx.text), re.search(r"at index (\d+)", ctx.text)
    return Diagnosis("trt_profile", "the input shape is outside every TensorRT optimization profile the engine "
                     "was built with.", "send sizes inside the built range, or rebuild the engine for the range "
                     "you need: dynashape compile MODEL --backend tensorrt --seq MIN:MAX --batch MIN:MAX.",
                     name.group(1) if name else None, int(idx.group(1)) if idx else None)


def _gather_bounds(ctx: _Ctx, m: re.Match) -> Diagnosis:
    if m.group(1) is None:  # only "Gather ... out of data bounds": node and limit unknown
        return _position(ctx, ctx.n_positions, "ONNX Runtime's position lookup (Gather) went out of bounds")
    node, hi = m.group(1), int(m.group(4))
    if "wte" in node:
        return Diagnosis("token_id_range", f"a token id {m.group(2)} is outside the vocabulary (0..{hi}).",
                         f"send token ids below {hi + 1}.", "input_ids", None)
    return _position(ctx, hi + 1, f"ONNX Runtime's position lookup ({node}) got index {m.group(2)}")


def _position(ctx: _Ctx, n: int | None, what: str) -> Diagnosis:
    vocab = (ctx.plan.model or {}).get("vocab_size") if ctx.plan is not None else None
    limit = f"{n} positions" if n else "n_positions (1024 for GPT-2)"
    return Diagnosis("position_limit", f"{what}: the sequence is longer than the model's {limit}"
                     + (f" (or a token id is >= vocab_size {vocab})." if vocab else "."),
                     f"--seq {ctx.lowest()}:{n or 1024} (past + new tokens included), since GPT-2 has no "
                     "position embedding beyond that.", "input_ids", 1)


_SHARE = "give input_ids, attention_mask and position_ids one shared dim: dynashape's --seq MIN:MAX does exactly that."


def _must_be_equal(ctx: _Ctx, m: re.Match) -> Diagnosis:
    found = sources(m.group(0), ctx.input_names)
    pair = " and ".join(f"{i} dim {a}" for i, a in found[:2]) or "two inputs"
    return Diagnosis("shared_dim", f"{pair} always hold the same size but were given separate dims "
                     f"({m.group(1)} and {m.group(2)}).", _SHARE, *ctx.where(text=m.group(0)),
                     suggested_fixes(ctx.text))


def _specialized(ctx: _Ctx, m: re.Match) -> Diagnosis:
    hits = re.findall(r"marked (.+?) as dynamic but your code specialized it to be a constant \((\d+)\)", ctx.text)
    name, size = min(hits or [("", m.group(1))], key=lambda h: int(h[1]))  # a 0/1 size explains the others
    size, sugg = int(size), suggested_fixes(ctx.text)
    inp, axis = ctx.where(name, text=name)
    if size >= 2:
        return Diagnosis("shared_dim", f"the dim was pinned to {size} because another input holding the same "
                         "size (e.g. a static attention_mask or position_ids) is static.", _SHARE, inp, axis, sugg)
    dim = ctx.dim_name(name, inp, axis)
    told = f" (torch's suggested `{sugg[0]}` would make the graph static)" if sugg else ""
    return Diagnosis("specialized_constant", f"the example has size {size}, and torch specialises sizes 0 and 1 "
                     f"to constants, so the {dim} dim cannot stay dynamic{told}.",
                     _example_fix(ctx, dim, size), inp, axis, sugg)


def _invalid_ranges(ctx: _Ctx, m: re.Match) -> Diagnosis:
    return Diagnosis("specialized_constant", f"the traced code needs a size >= {m.group(1)} but the example or "
                     f"range allows only {m.group(2)}: a size-1 example was specialised away.",
                     _example_fix(ctx, "seq", 1) + " Give the batch an example >= 2 too.",
                     torch_suggestions=suggested_fixes(ctx.text))


_SIZE_REF = re.compile(r"L(?:\[[^\[\]]+\])+\.size\(\)\[\d+\]|\b\w+\.size\(\)\[\d+\]|\bs\d+\b")
_BOUND = re.compile(r"\s*(?:\d+\s*[<>]=?\s*S|S\s*[<>]=?\s*\d+)\s*")


def _plain_bound(guard: str) -> bool:
    """``2 <= L['x'].size()[1]`` or ``s53 <= 1023``: one size against one number."""
    return bool(_BOUND.fullmatch(_SIZE_REF.sub("S", guard)))


def _guard(ctx: _Ctx, m: re.Match) -> Diagnosis:
    lines = re.findall(r"Not all values of (\w+) = (\S+) in the specified range .+? satisfy the generated "
                       r"guard (.+?)\.?$", ctx.text, re.M)
    guards = [g[2].strip() for g in lines] or [m.group(0)]
    name = lines[0][0] if lines else m.group(1)
    inp, axis = ctx.where(name, text="\n".join(g[1] for g in lines) or None)
    dim, sugg, lo = ctx.dim_name(name, inp, axis), suggested_fixes(ctx.text), ctx.lowest()
    # a plain bound (`s <= 1023`) really narrows the range: no retry; anything else (`!=`, Eq, Mod, arithmetic
    # such as CUDA's alignment guard `s*(8 + s - s % 8) > 1`) can become a run-time assert
    retry = None if any(_plain_bound(part) for g in guards for part in g.split(" and ")) else dict(RETRY_WITH_ASSERTS)
    nums = [int(x) for g in guards for x in re.findall(r"(?:!=|<=) (\d+)", g)]
    buf = next((x for x in nums if x == ctx.n_positions or any(f"!= {x}" in g for g in guards)), None)
    if buf is not None:
        told = f"; torch's suggested `{sugg[0]}` fails again on `!= {buf}`" if sugg else ""
        later = f" (a retry with run-time asserts exports {lo}:{buf} but refuses {buf} at run time)" if retry else ""
        return Diagnosis("causal_mask_buffer", f"eager attention in transformers <= 5.1 slices a {buf}x{buf} "
                         f"causal-mask buffer, which adds the guards `<= {buf}` and `!= {buf}`{told}.",
                         f"--attn sdpa (serves every length up to {buf}), or keep eager attention with "
                         f"--seq {lo}:{buf - 1}{later}.", inp, axis, sugg, retry)
    ours = next((t for t in (_translate(s, ctx) for s in sugg) if t), None)
    return Diagnosis("guard_complex", f"torch generated the guard `{guards[0]}` on the {dim} dim, which does not "
                     "hold for every size in the range you gave.", f"{ours} (torch's suggestion in dynashape "
                     "flags)" if ours else "narrow the range so the guard holds, or let dynashape retry with "
                     "run-time asserts.", inp, axis, sugg, retry)


def _outside_range(ctx: _Ctx, m: re.Match) -> Diagnosis:
    size, lo, hi = int(m.group(1)), int(m.group(2)), int(m.group(3))
    graph = ctx.plan.graph.items() if ctx.plan is not None else []
    dim = next((d for d, r in graph if (r.min, r.max) == (lo, hi)), "seq")
    fix = (f"--example-len {ctx.example_for('seq', lo, hi)} (inside {lo}:{hi}), or leave --example-len out and "
           "let the planner choose." if dim == "seq" else
           f"--{dim} with a range holding the example, or let the planner choose.")
    return Diagnosis("example_outside_range", f"the example size {size} is outside the range {lo}:{hi} given "
                     "for the same dim.", fix, *ctx.where(dim))


RULES: list[tuple[re.Pattern, Callable[[_Ctx, re.Match], Diagnosis]]] = [
    (re.compile(r"'is_causal' must be bool, not SymBool"), lambda ctx, m: Diagnosis(
        "onnx_symbool", "the ONNX exporter traced sdpa attention with a length-1 example, so `is_causal = "
        "q_len > 1` became a symbolic bool that scaled_dot_product_attention rejects.",
        _example_fix(ctx, "seq", 1), "input_ids", 1)),
    (re.compile(r"aten::diff"), _fixed(
        "onnx_aten_diff", "without an attention_mask input, transformers 5.x builds the mask with torch.diff, "
        "which the legacy ONNX exporter (dynamo=False) cannot export.", "pass attention_mask as a graph input "
        "(dynashape's onnx backend always does), or export with torch.onnx.export(..., dynamo=True).")),
    (re.compile(r"Found (?:<class '[\w.]*?)?(\w*Cache)'?>? in output, which is not a known type"), _fixed(
        "pytree_cache", "the model returns its {0} (use_cache=True is the default), which torch.export cannot "
        "flatten into graph outputs.", "export with use_cache=False (dynashape's default; decode uses "
        "dynashape's own static KV cache).")),
    (re.compile(r"(?:Could not guard on|Could not extract specialized integer from) data-dependent "
                r"expression (\S+)"), _data_dependent),
    (re.compile(r"guard failure\(s\):\s*\n?\s*- [\d/]+: (.+)"), _recompile),
    (re.compile(r"Guard failed: (.+)"), _runtime_guard),
    (re.compile(r"Runtime assertion failed for expression (Ne|Eq)\(\w+, (\d+)\)"), _runtime_assert),
    (re.compile(r"does not satisfy any optimization profile|exceed min ~ max range"), _trt_profile),
    (re.compile(r"Gather(?: node\. Name:'([^']*)'.*?idx=(-?\d+) must be within the inclusive range "
                r"\[(-?\d+),\s*(-?\d+)\]|.*out of data bounds)"), _gather_bounds),
    (re.compile(r"index out of range in self"), lambda ctx, m: _position(
        ctx, ctx.n_positions, "an index went past an embedding table")),
    (re.compile(r"cannot reshape tensor of 0 elements"), lambda ctx, m: Diagnosis(
        "min_zero", "a length of 0 reached the model: a Dim without min= starts at 0, and GPT-2 cannot run an "
        "empty sequence.", f"--seq 1:{(ctx.range_of('seq') or (1, 'MAX'))[1]}", "input_ids", 1)),
    (re.compile(r"The values of (\w+) = \S+ and (\w+) = \S+ must always be equal"), _must_be_equal),
    (re.compile(r"specialized it to be a constant \((\d+)\)"), _specialized),
    (re.compile(r"Invalid ranges \[(\d+):(\d+)\]"), _invalid_ranges),
    (re.compile(r"Not all values of (\w+)|satisfy the generated guard"), _guard),
    (re.compile(r"(-?\d+) not in range \[(-?\d+), (-?\d+)\]"), _outside_range),
]


def diagnose(exc: BaseException, *, input_names: list[str] | None = None, plan=None) -> Diagnosis | None:
    """A known torch export/compile/runtime/ONNX/TensorRT error -> Diagnosis; an unknown one -> None."""
    ctx = _Ctx(_text(exc), list(input_names) if input_names else None, plan)
    for pattern, build in RULES:
        m = pattern.search(ctx.text)
        if m:
            return build(ctx, m)
    return None


def as_export_error(exc: BaseException, *, input_names: list[str] | None = None, plan=None) -> ExportError:
    """Our ExportError with a one-line message; unknown errors keep torch's first line."""
    d = diagnose(exc, input_names=input_names, plan=plan)
    if d is not None:
        return ExportError(f"export failed ({d.kind}): {d.where()}{d.cause}", d.fix, d)
    first = next((ln.strip() for ln in _ANSI.sub("", str(exc)).splitlines() if ln.strip()), "")
    return ExportError(f"export failed: {type(exc).__name__}: {first[:200]}",
                       "run `dynashape doctor MODEL --seq MIN:MAX --try` to see the plan and its findings; "
                       "if it persists, report the model and the torch/transformers versions.")


# ---- traps that do not raise ------------------------------------------------------------------
def _program_dims(ep) -> list[tuple[str, int, Any]]:
    """(input name, axis, size) for every axis of every user input; size is an int or a SymInt."""
    user = set(ep.graph_signature.user_inputs)
    return [(node.name, axis, size) for node in ep.graph.nodes
            if node.op == "placeholder" and node.name in user and hasattr(node.meta.get("val"), "shape")
            for axis, size in enumerate(node.meta["val"].shape)]


def _model_positions(ep, plan) -> int | None:
    if plan is not None and (plan.model or {}).get("n_positions"):
        return int(plan.model["n_positions"])
    wpe = next((v for k, v in ep.state_dict.items() if k.endswith("wpe.weight")), None)
    return int(wpe.shape[0]) if wpe is not None else None


def _finite(x) -> int | None:
    try:
        return int(x)
    except Exception:  # sympy oo and torch int_oo do not convert
        return None


def _no_dynamic_dims(dims: list, ctx: _Ctx) -> list[Diagnosis]:
    plan = ctx.plan
    if not dims or (plan is not None and all(r.static for r in plan.graph.values())):
        return []  # a static plan wants exactly this
    if plan is not None:
        inp, axis = ctx.where(next((d for d, r in plan.graph.items() if not r.static), "seq"))
    else:
        small = [x for x in dims if x[2] <= 1] or dims
        inp = small[0][0]
        axis = max(a for i, a, _ in small if i == inp)  # the seq axis before the batch axis
    size = next((s for i, a, s in dims if (i, a) == (inp, axis)), 1)
    return [Diagnosis("no_dynamic_dims", f"the exported program has no dynamic dimension: {inp} dim {axis} is "
                      f"fixed at {size} (Dim.AUTO with an example of size {size} specialises silently).",
                      _example_fix(ctx, ctx.dim_name(None, inp, axis), size), inp, axis)]


def diagnose_program(ep, plan=None) -> list[Diagnosis]:
    """Traps an export does not raise for: no dynamic dim, min 0, unchecked min <= 1, max > positions.

    ``ep`` is an ExportedProgram, or an ONNXProgram (its ``exported_program`` is read).
    """
    ep = getattr(ep, "exported_program", None) or ep
    ctx, dims = _Ctx("", None, plan), _program_dims(ep)
    symbolic = [(i, a, s) for i, a, s in dims if not isinstance(s, int)]
    if not symbolic:
        return _no_dynamic_dims(dims, ctx)
    out, seen, n_pos = [], set(), _model_positions(ep, plan)
    for inp, axis, size in symbolic:
        expr = size.node.expr
        vr = ep.range_constraints.get(expr)
        if expr in seen or not expr.is_symbol or vr is None:  # derived dims (past + 1) follow their root
            continue
        seen.add(expr)
        lo, hi = int(vr.lower), _finite(vr.upper)
        dim = ctx.dim_name(None, inp, axis)
        top = hi if hi is not None else (n_pos if dim == "seq" and n_pos else "MAX")
        if lo <= 0:
            out.append(Diagnosis("min_zero", f"the range is [{lo}, {hi}]: a Dim without min= accepts 0, and an "
                                 "empty input crashes inside the model.", f"--{dim} 1:{top}", inp, axis))
        elif lo == 1:
            out.append(Diagnosis("lower_bound_unchecked", f"the range is reported as [1, {hi}] but the graph was "
                                 "traced with an example >= 2, and ep.module() does not check lower bounds, so "
                                 f"size 1 runs a graph built for >= 2.", f"--{dim} 1:{top}: dynashape exports "
                                 f"2:{top} and pads size 1 up to 2.", inp, axis))
        if dim == "seq" and n_pos and (hi is None or hi > n_pos):
            out.append(Diagnosis("position_limit", f"the range allows {hi or 'any size'} but the model has "
                                 f"{n_pos} positions: longer inputs fail at run time (index out of range).",
                                 f"--seq {max(1, lo)}:{n_pos}", inp, axis))
    return out
