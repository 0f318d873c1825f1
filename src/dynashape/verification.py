"""Verify an engine across its whole range against the eager Hugging Face model with the same weights.

Three checks, reported separately:

- prefill: at every sweep point (batch, length) the logits after each prompt (a generation engine;
  rows of one batch get different lengths, so right-padding and slots are exercised) or at every
  position (a forward engine). Default lengths per dimension: every boundary (min, min+1, opt, max-1,
  max), every size the plan pads, powers of two and their neighbours, a few seeded random sizes;
  lengths swept at the smallest batch, batches at a short length, and the (batch, length) corners.
- decode (generation engines): prompts at the range's boundaries prefilled together, then teacher-
  forced decode steps until the longest row writes the last cache position; every step's logits
  against the reference on the whole sequence.
- greedy: ``engine.generate`` greedy tokens against the reference. fp32: identical to Hugging Face
  ``generate``; lower precision: each token must be the reference's best within the tolerance, given
  the same prefix (two tokens tied within rounding may flip in fp16 without anything being wrong).

Tolerances depend on the dtype and scale with the logits (``rel * max(1, max|ref|)``).
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
    decode_steps: int = 24             # teacher-forced steps, ending at the last cache position
    greedy_tokens: int = 20


@dataclass
class SizeResult:
    check: str             # "prefill" | "decode" | "greedy"
    batch: int
    seq: int               # prefill: length; decode: the position fed; greedy: prompt length
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

    def of(self, check: str) -> list[SizeResult]:
        return [r for r in self.results if r.check == check]

    def to_json(self) -> dict:
        out = {"engine": self.engine, "backend": self.backend, "dtype": self.dtype, "rtol": self.rtol,
               "min_top1": self.min_top1, "ok": self.ok}
        for check in ("prefill", "decode", "greedy"):
            rows = self.of(check)
            out[check] = {"ok": all(r.ok for r in rows), "points": len(rows), "results": [asdict(r) for r in rows]}
        return out


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
    return list(dict.fromkeys(points))


def compare(check: str, got: torch.Tensor, want: torch.Tensor, rtol: float, min_top1: float, seconds: float,
            sizes: tuple[int, int, int, int]) -> SizeResult:
    """Logits (..., V) of the engine against the reference."""
    got, want = got.float().cpu(), want.float().cpu()
    err = (got - want).abs().max().item()
    tol = rtol * max(1.0, want.abs().max().item())
    pick = got.argmax(-1, keepdim=True)
    top1 = (pick.squeeze(-1) == want.argmax(-1)).float().mean().item()
    near = (want.gather(-1, pick).squeeze(-1) >= want.max(-1).values - tol).float().mean().item()
    return SizeResult(check, *sizes, err, tol, top1, near, bool(err <= tol and near >= min_top1), seconds)


def _prompts(gen: torch.Generator, vocab: int, lengths: list[int]) -> list[list[int]]:
    return [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in lengths]


def _row_lengths(b: int, t: int, lo: int) -> list[int]:
    """Batch rows of a generation prefill point: the first at t, later ones shorter (mixed lengths)."""
    return [max(lo, t - (t * i) // max(b, 2)) for i in range(b)]


def _reference_last(ref, prompts, device) -> torch.Tensor:
    """Reference logits after each prompt (B, V): right-padded batch with a mask."""
    from .runtime.state import right_pad

    ids, mask, last = right_pad(prompts)
    logits = ref(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
    return logits[torch.arange(len(prompts)), last.to(device)]


def verify_engine(engine, settings: VerifySettings | None = None, on_result=None, name: str = "") -> VerifyReport:
    """Compare the engine with the fp32 eager reference: prefill sweep, decode steps, greedy tokens."""
    from .verification_decode import check_decode, check_greedy

    settings = settings or VerifySettings()
    rtol, min_top1 = TOLERANCE.get(engine.settings.dtype, TOLERANCE["float32"])
    report = VerifyReport(name or "engine", engine.backend, engine.settings.dtype, rtol, min_top1)
    ref = engine.reference_model(torch.float32).to(engine.device)
    gen = torch.Generator().manual_seed(settings.seed)
    vocab, plan = engine.plan.model["vocab_size"], engine.plan

    def add(res: SizeResult) -> None:
        report.results.append(res)
        if on_result is not None:
            on_result(res)

    for b, t in sweep_points(engine, settings):
        t0 = time.perf_counter()
        with torch.no_grad():
            if engine.generates:
                prompts = _prompts(gen, vocab, _row_lengths(b, t, plan.serve["seq"].min))
                got, want = engine.generator.prefill_logits(prompts), _reference_last(ref, prompts, engine.device)
            else:
                ids = torch.randint(0, vocab, (b, t), generator=gen)
                got, want = engine(ids), ref(input_ids=ids.to(engine.device), use_cache=False).logits
        sizes = (b, t, plan.graph_size("batch", b), plan.graph_size("seq", t))
        add(compare("prefill", got, want, rtol, min_top1, time.perf_counter() - t0, sizes))
    if engine.generates:
        for res in check_decode(engine, ref, settings, gen, rtol, min_top1):
            add(res)
        for res in check_greedy(engine, ref, settings, gen, rtol, min_top1):
            add(res)
    return report
