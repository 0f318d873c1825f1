"""A/B of the fused decode step's launch rules, in one process on one GPU: CUDA-graph greedy steps.

Run on the GPU machine: ``PYTHONPATH=src python3 bench/decode_ab.py --out $OUT/decode_ab.json``.
Each variant changes the rules of ``kernels/config.py`` (matmul tiles, K splits, warps) or of
``kernels/attention.py`` (KV splits, block) for one run, captures ``steps`` greedy decode steps of
the lean GPT-2 (random weights, fp16) at one batch and cache length, and reports the median step
time over replays next to the bytes floor (weights once + the K/V in use, at the copy bandwidth
measured in the same run). Prefill variants time one prompt's prefill the same way. A kernel-class
profile of the batch-64 step (no PDL there, so kernel times add up) tells where its time goes.
DYNASHAPE_SRC=TREE runs another source tree (a baseline, e.g. a ``git archive`` of an older commit,
in another process on the same machine); the tree must have ``runtime.graphs.capture``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from contextlib import contextmanager

import torch

sys.path.insert(0, os.environ.get("DYNASHAPE_SRC", "src"))   # another tree (a baseline) for process A/Bs
from dynashape.bench.machine import copy_gbps, machine_facts  # noqa: E402
from dynashape.models import gpt2 as gpt2_mod  # noqa: E402
from dynashape.models.kernels import attention as attn_mod, config as cfg_mod, decode as dec_mod  # noqa: E402
from dynashape.models.kernels import prefill as pre_mod  # noqa: E402
from dynashape.models.kernels.config import _pow2  # noqa: E402
from dynashape.models.load import PRESETS  # noqa: E402
from dynashape.runtime.graphs import capture  # noqa: E402

MATMUL, ATTENTION = cfg_mod._matmul_config, attn_mod.attention_config


def one_row(fn):
    return lambda kind, M, N, K, c: fn(kind, N, K, c) if M == 1 else c


VARIANTS = {   # name -> (matmul rule edit(kind, M, N, K, cfg) or None, attention edit(M, H, L, cfg) or None)
    "base": (None, None),
    "torch": (None, None),                                  # prefill: PyTorch ops (cuBLAS) instead
    "mproj_nosplit_bn2": (one_row(lambda k, N, K, c: dataclasses.replace(c, split=1, block_n=2)
                                  if k == "linear_residual" and K >= 4 * N else c), None),
    "mproj_nosplit_bn4": (one_row(lambda k, N, K, c: dataclasses.replace(c, split=1, block_n=4, num_warps=8)
                                  if k == "linear_residual" and K >= 4 * N else c), None),
    "gemv_w2": (one_row(lambda k, N, K, c: dataclasses.replace(c, num_warps=2)), None),
    "gemv_w1": (one_row(lambda k, N, K, c: dataclasses.replace(c, num_warps=1)), None),
    "gemv_bn8": (one_row(lambda k, N, K, c: dataclasses.replace(c, block_n=8) if N < 16384 else c), None),
    "attn_s16": (None, lambda M, H, L, c: dataclasses.replace(c, split=min(c.split, 16)) if M == 1 else c),
    "attn_s8": (None, lambda M, H, L, c: dataclasses.replace(c, split=min(c.split, 8)) if M == 1 else c),
    "attn_w2": (None, lambda M, H, L, c: dataclasses.replace(c, num_warps=2) if M == 1 else c),
    "attn64_b128": (None, lambda M, H, L, c: dataclasses.replace(c, block_k=128) if M > 8 else c),
    "attn64_w8": (None, lambda M, H, L, c: dataclasses.replace(c, num_warps=8) if M > 8 else c),
    "attn64_st3": (None, lambda M, H, L, c: dataclasses.replace(c, num_stages=3) if M > 8 else c),
    "attn64_b32": (None, lambda M, H, L, c: dataclasses.replace(c, block_k=32) if M > 8 else c),
    "attn64_s2": (None, lambda M, H, L, c: dataclasses.replace(c, split=2) if M > 8 else c),
    "attn64_w2": (None, lambda M, H, L, c: dataclasses.replace(c, num_warps=2) if M > 8 else c),
    "attn64_b128_w8": (None, lambda M, H, L, c: dataclasses.replace(c, block_k=128, num_warps=8) if M > 8 else c),
    "attn_noprefetch": (None, None),                        # attention.PREFETCH off (see variant())
    "gemv1": (None, None),                                  # config.GEMV_ROWS = 1 (see variant())
    "r64_qkv_16x64": (lambda k, M, N, K, c: dataclasses.replace(c, block_n=64) if 16 < M < 128 and N == 3 * K else c,
                      None),
    "r64_qkv_32x32": (lambda k, M, N, K, c: dataclasses.replace(c, block_m=32) if 16 < M < 128 and N == 3 * K else c,
                      None),
    "r64_bk128": (lambda k, M, N, K, c: dataclasses.replace(c, block_k=128) if 16 < M < 128 and N < 16384 else c, None),
    "r64_bk256": (lambda k, M, N, K, c: dataclasses.replace(c, block_k=256, num_stages=2)
                  if 16 < M < 128 and N < 16384 else c, None),
    "r64_bk32": (lambda k, M, N, K, c: dataclasses.replace(c, block_k=32, num_stages=4)
                 if 16 < M < 128 and N < 16384 else c, None),
    "r64_cproj_split2": (lambda k, M, N, K, c: dataclasses.replace(c, split=2)
                         if 16 < M < 128 and k == "linear_residual" and K == N else c, None),
    "r64_mproj_split8": (lambda k, M, N, K, c: dataclasses.replace(c, split=8)
                         if 16 < M < 128 and k == "linear_residual" and K > N else c, None),
    "r64_mproj_split2": (lambda k, M, N, K, c: dataclasses.replace(c, split=2)
                         if 16 < M < 128 and k == "linear_residual" and K > N else c, None),
    "r64_st4_bk128": (lambda k, M, N, K, c: dataclasses.replace(c, num_stages=4, block_k=128)
                      if 16 < M < 128 and N < 16384 else c, None),
    "r64_st5": (lambda k, M, N, K, c: dataclasses.replace(c, num_stages=5) if 16 < M < 128 and N < 16384 else c, None),
    "all_st4": (lambda k, M, N, K, c: dataclasses.replace(c, num_stages=4) if M > 1 else c, None),
    "pre_st4": (lambda k, M, N, K, c: dataclasses.replace(c, num_stages=4) if M >= 128 else c, None),
    "r64_stages4": (lambda k, M, N, K, c: dataclasses.replace(c, num_stages=4) if 16 < M < 128 and N < 16384 else c,
                    None),
    "vocab_bn8": (one_row(lambda k, N, K, c: dataclasses.replace(c, block_n=8, num_warps=4) if N >= 16384 else c),
                  None),
    "vocab_bn32": (one_row(lambda k, N, K, c: dataclasses.replace(c, block_n=32, num_warps=8) if N >= 16384 else c),
                   None),
    "vocab_w4": (one_row(lambda k, N, K, c: dataclasses.replace(c, num_warps=4) if N >= 16384 else c), None),
    "vocab_w16": (one_row(lambda k, N, K, c: dataclasses.replace(c, num_warps=16) if N >= 16384 else c), None),
    "gemv_bn2": (one_row(lambda k, N, K, c: dataclasses.replace(c, block_n=2, num_warps=8 if 2 * K > 8192 else 4)
                         if N < 16384 else c), None),
    "gemv_bn8w8": (one_row(lambda k, N, K, c: dataclasses.replace(c, block_n=8, num_warps=8) if N < 16384 else c),
                   None),
    "attn64_b256_w8": (None, lambda M, H, L, c: dataclasses.replace(c, block_k=256, num_warps=8) if M > 8 else c),
    "attn64_b128_w2": (None, lambda M, H, L, c: dataclasses.replace(c, num_warps=2) if M > 8 else c),
    "attn64_b128_w1": (None, lambda M, H, L, c: dataclasses.replace(c, num_warps=1) if M > 8 else c),
    "attn64_w2_s2": (None, lambda M, H, L, c: dataclasses.replace(c, num_warps=2, split=2) if M > 8 else c),
    "attn_w2_rows": (None, lambda M, H, L, c: dataclasses.replace(c, num_warps=2) if M > 1 else c),
    "attn64_b128_noprefetch": (None, lambda M, H, L, c: dataclasses.replace(c, block_k=128) if M > 8 else c),
    "attn64_b64": (None, lambda M, H, L, c: dataclasses.replace(c, block_k=64) if M > 8 else c),
    "nolate": (None, None),                                 # decode.LATE_PDL_DECODE and _PREFILL off (see variant())
}


def one_program_per_head(block: int, warps: int, split: int = 1):
    """One row: `split` programs per head (1: no combine kernel) over blocks of `block` positions."""
    return None, lambda M, H, L, c: (dataclasses.replace(c, split=split, block_k=min(block, L), num_warps=warps)
                                     if M == 1 else c)


for _b, _w, _s in ((256, 8, 1), (512, 16, 1), (512, 8, 1), (256, 8, 2), (128, 4, 1)):
    VARIANTS[f"attn1_b{_b}w{_w}s{_s}_noprefetch"] = one_program_per_head(_b, _w, _s)
VARIANTS["attn1_b128w4s1"] = one_program_per_head(128, 4)
for _b, _w in ((64, 2), (128, 2), (64, 4), (128, 4)):   # rows above 8: registers for one wave of programs
    VARIANTS[f"attn64_b{_b}w{_w}_noprefetch"] = (None, lambda M, H, L, c, b=_b, w=_w: dataclasses.replace(
        c, block_k=b, num_warps=w) if M > 8 else c)
PREFILL_ATTENTION = {   # prefill attention tiles (block_m query rows, block_n keys, warps, stages); see variant()
    "pa_b32w2": (32, 32, 2, 2), "pa_b64w4s3": (64, 64, 4, 3), "pa_m128n64w8": (128, 64, 8, 2),
    "pa_m64n32w4": (64, 32, 4, 2), "pa_m128n32w8": (128, 32, 8, 3), "pa_b32w4s3": (32, 32, 4, 3)}
for _name in PREFILL_ATTENTION:
    VARIANTS[_name] = (None, None)
VARIANTS["early"] = (None, None)           # early PDL (launch_dependents first) on every row count (see variant())
VARIANTS["attn64_b64w2"] = (None, lambda M, H, L, c:   # the rule since 443e41f (base = this now)
                             dataclasses.replace(c, block_k=64, num_warps=2) if M > 8 else c)


def rows_rule(bm, bn, bk, warps, stages, split=None):
    """Prefill tiles (M >= 128 rows): the given tile, and the K split (None: the rule's)."""
    def edit(kind, M, N, K, c):
        if M < 128:
            return c
        return dataclasses.replace(c, block_m=bm, block_n=bn, block_k=bk, num_warps=warps, num_stages=stages,
                                   split=c.split if split is None else split)
    return edit, None


for _name, _args in {"p64x64_s1": (64, 64, 64, 4, 3, 1), "p128x128": (128, 128, 64, 8, 3, 1),
                     "p128x64": (128, 64, 64, 4, 3, 1), "p64x128": (64, 128, 64, 4, 3, 1),
                     "p128x128_st4": (128, 128, 64, 8, 4, 1), "p128x256": (128, 256, 64, 8, 3, 1),
                     "p128x64_w8": (128, 64, 64, 8, 3, 1)}.items():
    VARIANTS[_name] = rows_rule(*_args)


@contextmanager
def variant(name: str):
    mm, at = VARIANTS[name]
    if mm is not None:
        cfg_mod._matmul_config = lambda kind, M, N, K: mm(kind, M, N, K, MATMUL(kind, M, N, K))
    if at is not None:
        attn_mod.attention_config = lambda M, H, L: at(M, H, L, ATTENTION(M, H, L))
    prefetch, rows = getattr(attn_mod, "PREFETCH", None), getattr(cfg_mod, "GEMV_ROWS", None)
    if "noprefetch" in name:
        attn_mod.PREFETCH = False
    if name == "gemv1":                                     # gemv.py for one row only (tl.dot from 2 rows)
        cfg_mod.GEMV_ROWS = 1
    late = getattr(dec_mod, "LATE_PDL_DECODE", None), getattr(dec_mod, "LATE_PDL_PREFILL", None)
    if name == "nolate":
        dec_mod.LATE_PDL_DECODE = dec_mod.LATE_PDL_PREFILL = False
    pdl_rule, pa_rule = dec_mod._pdl, pre_mod.prefill_attention_config
    if name in PREFILL_ATTENTION:
        bm, bn, w, st = PREFILL_ATTENTION[name]
        pre_mod.prefill_attention_config = lambda T: dataclasses.replace(
            pa_rule(T), block_m=max(16, min(bm, _pow2(T))), block_n=max(16, min(bn, _pow2(T))), num_warps=w,
            num_stages=st)
    if name == "early":
        dec_mod._pdl = lambda model, M, prefill=False: pdl_rule(model, M, prefill) and (True if not prefill else "late")
    try:
        yield
    finally:
        cfg_mod._matmul_config, attn_mod.attention_config = MATMUL, ATTENTION
        if prefetch is not None:
            attn_mod.PREFETCH = prefetch
        if rows is not None:
            cfg_mod.GEMV_ROWS = rows
        if late[0] is not None:
            dec_mod.LATE_PDL_DECODE, dec_mod.LATE_PDL_PREFILL = late
        dec_mod._pdl, pre_mod.prefill_attention_config = pdl_rule, pa_rule


def build(preset: str, n_slots: int, L: int):
    shape = PRESETS[preset]
    cfg = gpt2_mod.GPT2Config(n_layer=shape["n_layer"], n_head=shape["n_head"], n_embd=shape["n_embd"],
                              vocab_size=shape.get("vocab_size", 50257))
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = gpt2_mod.GPT2(cfg).half().eval()
    model.configure(attention="kernel", kernels="fused", vocab_pad=64, pdl=True, prefill="fused")
    k, v = model.new_cache(n_slots, L)
    for t in (*k, *v):
        t.normal_(0, 1)
    return model, k, v


def median_ms(run, replays: int) -> float:
    """Median ms of ``run()`` between two CUDA events, after three unmeasured calls."""
    for _ in range(3):
        run()
    times = []
    for _ in range(replays):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        run()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def timed_graph(body, replays: int) -> float:
    """Median ms of one replay of ``body`` captured in a CUDA graph (warmed up first)."""
    return median_ms(capture(body).replay, replays)


def decode_case(model, k, v, B: int, ctx: int, steps: int, replays: int) -> float:
    """ms per greedy step for B rows whose caches hold ctx positions."""
    n_slots = k[0].shape[0]
    rows = torch.arange(B, device="cuda")
    tok = torch.randint(0, 50000, (n_slots,), device="cuda")
    pos0 = torch.full((n_slots,), ctx, device="cuda")
    pos = pos0.clone()
    out = torch.zeros(steps, B, dtype=torch.long, device="cuda")
    last = k[0].shape[2] - 1

    def body():
        pos.copy_(pos0)
        for i in range(steps):
            model.decode_greedy(rows, tok, pos, last, k, v, out[i])
    return timed_graph(body, replays) / steps


def prefill_case(model, k, v, T: int, fused: bool, replays: int) -> float:
    idx = torch.randint(0, 50000, (1, T), device="cuda")
    last = torch.tensor([T - 1], device="cuda")
    slots = torch.tensor([0], device="cuda")
    model.prefill_kernels = "fused" if fused else "torch"
    old, gpt2_mod.FUSED_PREFILL_ROWS = gpt2_mod.FUSED_PREFILL_ROWS, 1 << 30
    try:
        return timed_graph(lambda: model.prefill(idx, last, slots, k, v).argmax(-1), replays)
    finally:
        gpt2_mod.FUSED_PREFILL_ROWS = old
        model.prefill_kernels = "fused"


def profile_step(model, k, v, B: int, ctx: int) -> dict:
    """us per decode step by kernel name (torch profiler over eager steps; no PDL at this batch)."""
    from torch.profiler import ProfilerActivity, profile
    rows = torch.arange(B, device="cuda")
    tok = torch.randint(0, 50000, (k[0].shape[0],), device="cuda")
    pos = torch.full((k[0].shape[0],), ctx, device="cuda")
    out = torch.zeros(B, dtype=torch.long, device="cuda")
    run = lambda: model.decode_greedy(rows, tok, pos, k[0].shape[2] - 1, k, v, out)  # noqa: E731
    run()
    torch.cuda.synchronize()
    n = 5
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            pos.fill_(ctx)
            run()
        torch.cuda.synchronize()
    return {e.key: round(e.device_time_total / n, 2) for e in prof.key_averages()
            if e.device_time_total > 0}


def floor_ms(model, k, B: int, ctx: int, gbps: float) -> float:
    w = sum({p.data_ptr(): p.numel() * p.element_size() for p in model.parameters()}.values())
    cfg = model.config
    kv = 2 * cfg.n_layer * cfg.n_embd * 2 * B * (ctx + 1)
    return (w + kv) / (gbps * 1e9) * 1e3


def rounds(res, key: str, names: list[str], fn, n_rounds: int, t_end: float, **info) -> None:
    """Every variant once per round (interleaved, so drift hits all alike); the median over rounds."""
    got: dict[str, list[float]] = {name: [] for name in names}
    errors: dict[str, str] = {}
    for _ in range(n_rounds):
        for name in names:
            if time.time() > t_end or name in errors:
                continue
            try:
                with variant(name.split("@")[0]):
                    got[name].append(fn(name))
            except Exception as e:                            # a variant that fails is recorded, not fatal
                errors[name] = f"{type(e).__name__}: {e}"[:300]
    for name in names:
        rec = dict(info, variant=name, ms=round(statistics.median(got[name]), 5) if got[name] else None,
                   runs=[round(x, 5) for x in got[name]], error=errors.get(name))
        if rec["ms"] and "floor_ms" in info:
            rec["share"] = round(info["floor_ms"] / rec["ms"], 4)
        print(rec, flush=True)
        res[key].append(rec)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget-s", type=float, default=420)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--replays", type=int, default=25)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="",
                    help="comma list: decode1, decode1s (ctx 128), decode64, decode8, decode4, decode2, xl, prefill "
                    "(default: all)")
    ap.add_argument("--tiles", action="store_true", help="also try larger prefill tiles")
    ap.add_argument("--variants", default="", help="comma list: these decode variants (after base) in every part")
    a = ap.parse_args()
    given = ["base"] + [n for n in a.variants.split(",") if n and n != "base"]
    unknown = [n for n in given if n.split("@")[0] not in VARIANTS]
    if unknown:
        sys.exit(f"decode_ab: unknown variants {unknown}; see VARIANTS in bench/decode_ab.py.")
    t_end = time.time() + a.budget_s
    gbps = copy_gbps(torch.device("cuda"))
    tree = f"DYNASHAPE_SRC={os.environ['DYNASHAPE_SRC']} " if os.environ.get("DYNASHAPE_SRC") else ""
    res = {"command": f"{tree}PYTHONPATH=src python3 bench/decode_ab.py " + " ".join(sys.argv[1:]),
           "machine": machine_facts(torch.device("cuda"), "float16"), "copy_gbps": gbps, "decode": [], "prefill": [],
           "note": "CUDA-graph replays of `steps` greedy steps (lean GPT-2, random fp16 weights, fused kernels, "
                   "PDL at batch 1); ms per step: median over interleaved rounds of the median of replays; "
                   "floor = weights once + K/V in use at copy_gbps. Prefill: one prompt, fused or torch, ms."}

    def save():
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)

    one = ["base"]
    late = ["base", "nolate"]
    decode_plan = [("gpt2", 1, 512, one),
                   ("gpt2", 1, 128, one),
                   ("gpt2", 64, 512, late),
                   ("gpt2", 8, 512, late),
                   ("gpt2", 4, 512, late),
                   ("gpt2", 2, 512, one),
                   ("gpt2-xl", 1, 512, one)]
    if a.variants:
        decode_plan = [(p, B, c, given) for p, B, c, names in decode_plan]
    prefill_names = ["base", "nolate", "torch"] + [n for n in VARIANTS if n.startswith("p1") and a.tiles]
    if a.variants:
        prefill_names = given
    only = set(filter(None, a.only.split(",")))
    for (preset, B, ctx, names), part in zip(decode_plan, ("decode1", "decode1s", "decode64", "decode8", "decode4",
                                                           "decode2", "xl")):
        if only and part not in only and not (part == "decode1" and "prefill" in only):
            continue
        model, k, v = build(preset, 65 if B > 1 else 2, 1024)
        fl = floor_ms(model, k, B, ctx, gbps)
        if not only or part in only:
            rounds(res, "decode", names, lambda name: decode_case(model, k, v, B, ctx, a.steps, a.replays),
                   a.rounds, t_end, model=preset, batch=B, ctx=ctx, floor_ms=round(fl, 5))
            save()
        if part == "decode1" and (not only or "prefill" in only):
            for T in (512, 128, 64, 16):
                names_t = [n for n in prefill_names if T >= 128 or not (n.startswith("p1") or n == "pre_st4")]
                rounds(res, "prefill", names_t,
                       lambda name: prefill_case(model, k, v, T, name != "torch", a.replays),
                       a.rounds, t_end, model=preset, T=T)
                save()
        del model, k, v
        torch.cuda.empty_cache()
    save()


if __name__ == "__main__":
    main()
