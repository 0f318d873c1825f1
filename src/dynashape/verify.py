"""Verify an engine across its whole range against the eager Hugging Face model with the same weights.

Default sizes per dimension: every boundary (min, min+1, opt, max-1, max), every size the plan pads,
powers of two and their neighbours inside the range, and a few seeded random sizes. Lengths are swept
at the smallest batch, batches at a short length, and the four (batch, seq) corners are checked too.
Each size reports the max abs error of the logits and the top-1 agreement, against a tolerance that
depends on the engine's dtype and scales with the logits' magnitude (``rel * max(1, max|ref|)``). A
top-1 mismatch counts only when the engine's token is worse than the reference's best by more than
that tolerance: two tokens tied within rounding may flip in fp16 without anything being wrong.
"""
from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field

import torch

from .errors import VerifyError
from .planning.shapes import Range

# dtype -> (error relative to max(1, max|reference logit|), minimum top-1 agreement)
TOLERANCE = {"float32": (1e-4, 0.999), "float16": (1e-2, 0.99), "bfloat16": (3e-2, 0.98)}


@dataclass
class VerifySettings:
    lengths: list[int] | None = None   # None: the default sweep
    batches: list[int] | None = None
    n_random: int = 3
    seed: int = 0


@dataclass
class SizeResult:
    batch: int
    seq: int
    graph_batch: int       # the size the graph ran (padded where the plan pads)
    graph_seq: int
    max_abs_err: float
    tol: float             # the max abs error allowed here
    top1: float            # strict top-1 agreement
    top1_within_tol: float  # agreement counting ties within tol as agreeing (the pass criterion)
    ok: bool
    seconds: float


@dataclass
class VerifyReport:
    engine: str
    backend: str
    dtype: str
    rtol: float
    min_top1: float
    results: list[SizeResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r.ok for r in self.results)

    @property
    def failures(self) -> list[SizeResult]:
        return [r for r in self.results if not r.ok]

    def to_json(self) -> dict:
        return {"engine": self.engine, "backend": self.backend, "dtype": self.dtype, "rtol": self.rtol,
                "min_top1": self.min_top1, "ok": self.ok, "results": [asdict(r) for r in self.results]}


def default_sizes(r: Range, padded: list[int], n_random: int = 3, seed: int = 0) -> list[int]:
    """Boundaries, padded sizes, powers of two with neighbours, and seeded random sizes inside r."""
    if r.static:
        return [r.min]
    sizes = {r.min, r.min + 1, r.max - 1, r.max, *padded}
    if r.opt is not None:
        sizes.add(r.opt)
    p = 1
    while p <= r.max:
        sizes.update({p - 1, p, p + 1})
        p *= 2
    rng = random.Random(seed)
    sizes.update(rng.randint(r.min, r.max) for _ in range(n_random))
    return sorted(s for s in sizes if s in r)


def check_requested(flag: str, dim: str, sizes: list[int], r: Range, engine) -> None:
    bad = [s for s in sizes if s not in r]
    if bad:
        wider = f"{min(r.min, *bad)}:{max(r.max, *bad)}"
        raise VerifyError(f"{flag} {bad[0]} is outside the engine's {dim} range {r.min}..{r.max}.",
                          f"verify sizes inside {r.min}..{r.max}, or rebuild: {engine.rebuild_hint(**{dim: wider})}")


def sweep_points(engine, settings: VerifySettings) -> list[tuple[int, int]]:
    """(batch, seq) pairs to check: the length sweep, the batch sweep, and the corners."""
    plan = engine.plan
    sb, ss = plan.serve["batch"], plan.serve["seq"]
    lengths = settings.lengths or default_sizes(ss, plan.padded_sizes("seq"), settings.n_random, settings.seed)
    batches = settings.batches or default_sizes(sb, plan.padded_sizes("batch"), settings.n_random, settings.seed + 1)
    check_requested("--lengths", "seq", lengths, ss, engine)
    check_requested("--batches", "batch", batches, sb, engine)
    short = min(max(ss.min, 8), ss.max)
    points = [(batches[0], t) for t in lengths] + [(b, short) for b in batches]
    if not (settings.lengths or settings.batches):
        points += [(b, t) for b in (sb.min, sb.max) for t in (ss.min, ss.max)]
    seen, out = set(), []
    for pt in points:
        if pt not in seen:
            seen.add(pt)
            out.append(pt)
    return out


def compare(got: torch.Tensor, want: torch.Tensor, rtol: float, min_top1: float, seconds: float,
            sizes: tuple[int, int, int, int]) -> SizeResult:
    """Logits (B, T, V) of the engine against the reference."""
    err = (got - want).abs().max().item()
    tol = rtol * max(1.0, want.abs().max().item())
    pick = got.argmax(-1, keepdim=True)                                         # (B, T, 1)
    top1 = (pick.squeeze(-1) == want.argmax(-1)).float().mean().item()
    near = (want.gather(-1, pick).squeeze(-1) >= want.max(-1).values - tol).float().mean().item()
    return SizeResult(*sizes, err, tol, top1, near, bool(err <= tol and near >= min_top1), seconds)


def verify_engine(engine, settings: VerifySettings | None = None, on_result=None, name: str = "") -> VerifyReport:
    """Compare engine logits with the fp32 eager reference at every sweep point."""
    settings = settings or VerifySettings()
    rtol, min_top1 = TOLERANCE.get(engine.settings.dtype, TOLERANCE["float32"])
    report = VerifyReport(name or "engine", engine.backend, engine.settings.dtype, rtol, min_top1)
    ref = engine.reference_model(torch.float32).to(engine.device)
    gen = torch.Generator().manual_seed(settings.seed)
    vocab = engine.plan.model["vocab_size"]
    for b, t in sweep_points(engine, settings):
        ids = torch.randint(0, vocab, (b, t), generator=gen)
        t0 = time.perf_counter()
        got = engine(ids).float()
        with torch.no_grad():
            want = ref(input_ids=ids.to(engine.device), use_cache=False).logits.float()
        res = compare(got, want, rtol, min_top1, time.perf_counter() - t0,
                      (b, t, engine.plan.graph_size("batch", b), engine.plan.graph_size("seq", t)))
        report.results.append(res)
        if on_result is not None:
            on_result(res)
    return report
