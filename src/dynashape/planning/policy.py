"""Runtime-policy rules: which graphs an engine holds and how it runs them.

Run after the shape rules (``rules.py``), one small function per decision, each returning a Finding
and filling ``plan.runtime`` / ``plan.graphs``: the graphs per backend, the cache, the decode
kernels, the prefill buckets, the CUDA-graph batch sizes. Everything here is plain data recorded in
the plan, so nothing at run time chooses a policy the plan does not hold.
"""
from __future__ import annotations

from dataclasses import dataclass

from .shapes import Finding, InputSpec, RuntimePolicy, ShapePlan

GENERATION_BACKENDS = ("eager", "inductor", "aoti")
ELEM_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass
class RuntimeCtx:
    plan: ShapePlan
    settings: object          # PlanSettings (backend already resolved)

    @property
    def cuda(self) -> bool:
        return str(self.settings.device).startswith("cuda")


def _triton_ok() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def rule_graphs(ctx: RuntimeCtx) -> Finding:
    p, s = ctx.plan, ctx.settings
    p.runtime = RuntimePolicy(backend=s.backend, device=str(s.device), steps_per_graph=s.steps_per_graph,
                              vocab_pad=max(1, s.vocab_pad))
    from ..backends import BACKENDS

    if s.backend not in BACKENDS:
        return Finding("graphs", "REFUSED", f"unknown backend {s.backend!r}.",
                       "use --backend auto, " + ", ".join(BACKENDS))
    if s.steps_per_graph < 1:
        return Finding("graphs", "REFUSED", f"--steps-per-graph {s.steps_per_graph} is below 1.",
                       "--steps-per-graph 8 (decode steps per CUDA graph replay)")
    if s.backend not in GENERATION_BACKENDS:
        p.runtime.kind = "forward"
        p.graphs = {"forward": list(p.inputs)}
        return Finding("graphs", "OK", f"the {s.backend} backend exports a no-cache forward graph (batch x seq -> "
                       "logits at every position); generation through it reruns the whole sequence per token.")
    batch = ["batch"]
    p.graphs = {"prefill": [InputSpec("idx", "int64", ["batch", "seq"]), InputSpec("last", "int64", batch),
                            InputSpec("slots", "int64", batch)],
                "decode": [InputSpec("tok", "int64", batch), InputSpec("pos", "int64", batch),
                           InputSpec("slots", "int64", batch)]}
    return Finding("graphs", "OK", f"the {s.backend} backend builds a generation engine: a prefill graph (batch x "
                   "prompt length, dynamic) that fills the KV cache, and a decode graph (one token per row, static "
                   "shapes) that reads and extends it.")


def rule_cache(ctx: RuntimeCtx) -> Finding:
    p = ctx.plan
    if p.runtime.kind != "generation":
        return Finding("kv-cache", "OK", "no KV cache: the forward graph takes the whole sequence every call.")
    m = p.model
    if p.serve["seq"].max < 2:
        return Finding("kv-cache", "REFUSED", f"--seq max {p.serve['seq'].max} leaves no position for a new token "
                       "after the prompt.", f"--seq 1:{min(m['n_positions'], 1024)}")
    p.runtime.cache_slots = p.serve["batch"].max + 1
    # one spare position: a prompt filling the whole buffer would make the cache write a no-op slice,
    # which torch.export specialises on (guard `seq != max`)
    p.runtime.cache_len = p.serve["seq"].max + 1
    size = 2 * m["n_layer"] * p.runtime.cache_slots * m["n_embd"] * p.runtime.cache_len * ELEM_BYTES.get(p.dtype, 4)
    return Finding("kv-cache", "OK", f"static KV cache of {p.runtime.cache_slots} slots (--batch max "
                   f"{p.serve['batch'].max} plus one scratch slot for padding rows) x {p.runtime.cache_len} positions "
                   f"(--seq max plus a spare one, so no prompt fills the buffer: a whole-buffer slice is a guard "
                   f"torch would specialise on): {size / 2**30:.2f} GiB in {p.dtype}; a prompt plus its new tokens "
                   f"must fit {p.serve['seq'].max} positions.")


def rule_decode_kernels(ctx: RuntimeCtx) -> Finding:
    p, s = ctx.plan, ctx.settings
    if p.runtime.kind != "generation":
        return Finding("decode-kernels", "OK", "no decode graph of ours in a forward engine.")
    D = p.model["n_embd"] // p.model["n_head"]
    fits = ctx.cuda and _triton_ok() and D & (D - 1) == 0
    p.runtime.attention = "kernel" if fits and s.backend != "aoti" else "matmul"
    want = s.kernels
    if want not in ("auto", "fused", "torch"):
        return Finding("decode-kernels", "REFUSED", f"--kernels {want!r} is not a choice.", "--kernels auto")
    if want == "fused" and not (fits and s.backend == "eager"):
        why = ("they run in the eager backend only (torch.export cannot trace them)" if fits else
               "they need a CUDA GPU with Triton and a power-of-two head size")
        return Finding("decode-kernels", "REFUSED", f"--kernels fused was asked for, but {why}.",
                       "--kernels torch" if fits else "--kernels torch, or --device cuda on a GPU machine")
    p.runtime.kernels = "fused" if want == "fused" or (want == "auto" and fits and s.backend == "eager") else "torch"
    p.runtime.pdl = p.runtime.kernels == "fused" and bool(s.pdl)
    p.runtime.prefill = "fused" if p.runtime.kernels == "fused" and s.fused_prefill else "torch"
    attn = ("split-KV Triton attention that reads each row only to its own length" if p.runtime.attention == "kernel"
            else "masked matmul attention over the cache row")
    layers = ("dynashape's fused Triton kernels (6 to 8 launches per layer, cache write fused into the QKV projection"
              + (", steps of 1-2 rows chained by programmatic dependent launch on Hopper GPUs" if p.runtime.pdl else "")
              + ")"
              if p.runtime.kernels == "fused" else "PyTorch ops" + (" compiled by " + s.backend
                                                                    if s.backend != "eager" else ""))
    from ..models.gpt2 import FUSED_PREFILL_ROWS

    prefill = ("the same fused kernels over every prompt position, with a causal attention kernel reading the "
               f"cache, up to {FUSED_PREFILL_ROWS} rows (batch x padded prompt), PyTorch ops above"
               if p.runtime.prefill == "fused" else "PyTorch ops")
    return Finding("decode-kernels", "OK", f"decode layers: {layers}; {attn}; prefill: {prefill}.")


def rule_prefill_buckets(ctx: RuntimeCtx) -> Finding:
    p, s = ctx.plan, ctx.settings
    if p.runtime.kind != "generation":
        return Finding("prefill-buckets", "OK", "no prefill graph in a forward engine.")
    default = 64 if ctx.cuda else 1
    bucket = default if s.prefill_bucket is None else s.prefill_bucket
    if bucket < 1:
        return Finding("prefill-buckets", "REFUSED", f"--prefill-bucket {bucket} is below 1.", f"--prefill-bucket {default}")
    p.runtime.prefill_bucket = bucket
    if bucket == 1:
        return Finding("prefill-buckets", "OK", "prompts run at their own length (no CUDA graphs to reuse on the CPU).")
    return Finding("prefill-buckets", "OK", f"prompts are right-padded to a multiple of {bucket} (exact for a causal "
                   "LM), so one captured prefill graph serves each bucket.")


def _powers_of_two(lo: int, hi: int) -> list[int]:
    out, b = [], 1
    while b <= hi:
        if b >= lo:
            out.append(b)
        b *= 2
    return out


def rule_cuda_graph_batches(ctx: RuntimeCtx) -> Finding:
    p, s = ctx.plan, ctx.settings
    if p.runtime.kind != "generation" or not ctx.cuda:
        p.runtime.cuda_graph_batches = []
        if s.graph_batches:
            return Finding("cuda-graphs", "REFUSED", "--graph-batches needs a CUDA generation engine.",
                           "drop --graph-batches, or use --device cuda with --backend eager, inductor or aoti")
        return Finding("cuda-graphs", "OK", "no CUDA graphs: " + ("the CPU runs each step as it comes."
                                                                  if p.runtime.kind == "generation" else "forward engine."))
    top = p.serve["batch"].max
    if s.graph_batches:
        bad = [b for b in s.graph_batches if not 1 <= b <= top]
        if bad:
            return Finding("cuda-graphs", "REFUSED", f"--graph-batches {bad[0]} is outside 1..{top} (--batch max).",
                           f"--graph-batches {','.join(map(str, _powers_of_two(1, top)))}")
        sizes = sorted(set(s.graph_batches) | {top})
    else:
        sizes = sorted(set(_powers_of_two(1, top)) | {top})
    p.runtime.cuda_graph_batches = sizes
    return Finding("cuda-graphs", "OK", f"decode steps are CUDA graphs for batch sizes {', '.join(map(str, sizes))} "
                   f"({p.runtime.steps_per_graph} steps per replay), captured at load; a batch runs in the smallest "
                   "captured size that holds it, padding rows writing to the scratch slot.")


POLICY_RULES = (rule_graphs, rule_cache, rule_decode_kernels, rule_prefill_buckets, rule_cuda_graph_batches)
