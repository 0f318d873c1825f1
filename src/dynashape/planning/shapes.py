"""Ranges and shape plans: plain data, JSON-serialisable.

A ``Range`` is what a user writes for one dimension: ``MIN:MAX`` or ``MIN:MAX:OPT`` (``"1:1024"``,
``"2:1024:128"``), or a single size ``N`` for a static dimension.

A ``ShapePlan`` is the single source of truth for what an engine accepts and how it runs: the
ranges the user asked for (``serve``), the ranges the compiled graphs really have (``graph``), the
sizes that are padded up to the graph's minimum, the example sizes used for export, every graph the
engine holds with its inputs (``graphs``: ``prefill`` and ``decode`` for generation engines,
``forward`` without a cache for the export-only backends), the runtime policy (``runtime``: cache,
prefill buckets, CUDA-graph batch sizes, decode kernels), and the findings that led there.
``doctor`` prints it and every engine stores it as ``plan.json``.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import ShapeError

PLAN_FORMAT = 2
DIM_NAMES = ("batch", "seq")


@dataclass(frozen=True)
class Range:
    min: int
    max: int
    opt: int | None = None

    def __post_init__(self):
        if self.min > self.max:
            raise ShapeError(f"range {self.min}:{self.max} has min > max.",
                             f"write MIN:MAX with MIN <= MAX, e.g. {self.max}:{self.min}.")
        if self.opt is not None and not (self.min <= self.opt <= self.max):
            raise ShapeError(f"OPT {self.opt} is outside the range {self.min}:{self.max}.",
                             f"choose OPT between {self.min} and {self.max}, or leave it out.")

    @property
    def static(self) -> bool:
        return self.min == self.max

    def __contains__(self, size: int) -> bool:
        return self.min <= size <= self.max

    def text(self) -> str:
        if self.static:
            return str(self.min)
        return f"{self.min}:{self.max}" + (f":{self.opt}" if self.opt is not None else "")

    def to_json(self) -> dict:
        return {"min": self.min, "max": self.max, "opt": self.opt}

    @classmethod
    def from_json(cls, d: dict) -> "Range":
        return cls(int(d["min"]), int(d["max"]), None if d.get("opt") is None else int(d["opt"]))


def parse_range(text: str, what: str = "range") -> Range:
    """Parse ``N``, ``MIN:MAX`` or ``MIN:MAX:OPT`` (whole numbers >= 1) for the flag ``what``."""
    raw = str(text).strip()
    parts = raw.split(":")
    example = "--seq 1:1024 or --seq 1:1024:128" if what == "seq" else f"--{what} 1:8"
    if not raw or len(parts) > 3 or any(p.strip() == "" for p in parts):
        raise ShapeError(f"--{what} {raw!r} is not a range.", f"write MIN:MAX or MIN:MAX:OPT, e.g. {example}.")
    nums = []
    for p in parts:
        try:
            nums.append(int(p.strip()))
        except ValueError:
            raise ShapeError(f"--{what} {raw!r}: {p.strip()!r} is not a whole number.",
                             f"write MIN:MAX or MIN:MAX:OPT with whole numbers, e.g. {example}.") from None
    if any(n < 1 for n in nums):
        raise ShapeError(f"--{what} {raw!r}: sizes must be at least 1.",
                         f"use a minimum of 1 or more, e.g. {example}.")
    if len(nums) == 1:
        return Range(nums[0], nums[0])
    return Range(nums[0], nums[1], nums[2] if len(nums) == 3 else None)


@dataclass
class Finding:
    """One planning rule's verdict: OK, ADJUSTED or REFUSED, with one sentence of why."""

    rule: str
    status: str  # "OK" | "ADJUSTED" | "REFUSED"
    message: str
    fix: str = ""


@dataclass
class InputSpec:
    """One graph input: its name, dtype, and which planned dimension each axis is."""

    name: str
    dtype: str
    dims: list[str]  # e.g. ["batch", "seq"]: axes sharing a name share one symbolic dimension


@dataclass
class RuntimePolicy:
    """How a generation engine runs (chosen by the planner, overridable, stored with the engine).

    The KV cache has ``cache_slots`` rows (the largest batch plus one scratch row that padding rows
    write to) of ``cache_len`` positions. Prompts are right-padded to a multiple of
    ``prefill_bucket``; decode steps run as CUDA graphs captured for ``cuda_graph_batches`` (a batch
    runs in the smallest captured size that holds it), ``steps_per_graph`` steps per replay.
    """

    kind: str = "generation"                        # "generation" (prefill + decode) | "forward" (no cache)
    backend: str = "eager"
    device: str = "cpu"
    cache_slots: int = 2
    cache_len: int = 1024
    prefill_bucket: int = 64
    cuda_graph_batches: list[int] = field(default_factory=list)  # empty: no CUDA graphs (CPU)
    steps_per_graph: int = 8
    vocab_pad: int = 64
    attention: str = "matmul"                        # decode attention: "kernel" (split-KV op) | "matmul"
    kernels: str = "torch"                           # decode layers: "fused" (Triton) | "torch"
    pdl: bool = False                                # fused kernels chained by programmatic dependent launch
    prefill: str = "torch"                           # prefill layers: "fused" (Triton) | "torch"

    @property
    def scratch_slot(self) -> int:
        return self.cache_slots - 1


@dataclass
class ShapePlan:
    model: dict[str, Any]                 # name, n_positions, vocab_size, n_layer, n_head, n_embd
    serve: dict[str, Range]               # what the engine accepts (the user's request)
    graph: dict[str, Range]               # what the exported graph is built for
    examples: dict[str, int]              # example sizes used for export
    pad_to: dict[str, dict[int, int]]     # dim -> {served size: graph size it is padded to}
    inputs: list[InputSpec]
    outputs: list[str] = field(default_factory=lambda: ["logits"])
    use_cache: bool = False
    attn_implementation: str = "sdpa"
    dtype: str = "float32"
    findings: list[Finding] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    graphs: dict[str, list[InputSpec]] = field(default_factory=dict)   # graph name -> its inputs
    runtime: RuntimePolicy = field(default_factory=RuntimePolicy)
    format: int = PLAN_FORMAT

    # ---- queries -------------------------------------------------------------------------
    @property
    def refused(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "REFUSED"]

    @property
    def ok(self) -> bool:
        return not self.refused

    def graph_size(self, dim: str, size: int) -> int:
        """The size the graph runs for a served size (padding where the graph cannot take it)."""
        return self.pad_to.get(dim, {}).get(size, size)

    def padded_sizes(self, dim: str) -> list[int]:
        return sorted(self.pad_to.get(dim, {}))

    # ---- JSON ----------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "format": self.format,
            "model": self.model,
            "serve": {k: r.to_json() for k, r in self.serve.items()},
            "graph": {k: r.to_json() for k, r in self.graph.items()},
            "examples": dict(self.examples),
            "pad_to": {k: {str(a): b for a, b in v.items()} for k, v in self.pad_to.items()},
            "inputs": [dataclasses.asdict(i) for i in self.inputs],
            "outputs": list(self.outputs),
            "use_cache": self.use_cache,
            "attn_implementation": self.attn_implementation,
            "dtype": self.dtype,
            "findings": [dataclasses.asdict(f) for f in self.findings],
            "versions": dict(self.versions),
            "graphs": {g: [dataclasses.asdict(i) for i in specs] for g, specs in self.graphs.items()},
            "runtime": dataclasses.asdict(self.runtime),
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2)

    @classmethod
    def from_json(cls, d: dict) -> "ShapePlan":
        if d.get("format") != PLAN_FORMAT:
            raise ShapeError(f"plan format {d.get('format')!r} is not the supported format {PLAN_FORMAT} (a plan "
                             "from an older dynashape).", "rebuild the engine with this dynashape version "
                             "(dynashape compile ... --force).")
        return cls(
            model=dict(d["model"]),
            serve={k: Range.from_json(v) for k, v in d["serve"].items()},
            graph={k: Range.from_json(v) for k, v in d["graph"].items()},
            examples={k: int(v) for k, v in d["examples"].items()},
            pad_to={k: {int(a): int(b) for a, b in v.items()} for k, v in d["pad_to"].items()},
            inputs=[InputSpec(**i) for i in d["inputs"]],
            outputs=list(d.get("outputs", ["logits"])),
            use_cache=bool(d.get("use_cache", False)),
            attn_implementation=d.get("attn_implementation", "sdpa"),
            dtype=d.get("dtype", "float32"),
            findings=[Finding(**f) for f in d.get("findings", [])],
            versions=dict(d.get("versions", {})),
            graphs={g: [InputSpec(**i) for i in specs] for g, specs in d.get("graphs", {}).items()},
            runtime=RuntimePolicy(**d.get("runtime", {})),
        )
