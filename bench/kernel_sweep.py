"""Time each fused decode kernel at GPT-2 shapes, its default config against a few alternatives.

Run on the GPU machine: ``PYTHONPATH=src python3 bench/kernel_sweep.py --out $OUT/kernel_sweep.json``.
For every (kernel, rows M, model width) it reports the median microseconds of a CUDA-graph replay
(triton.testing.do_bench_cudagraph, after warm-up: kernel time without Python's launch overhead), the bytes the kernel must move (weights once, activations, cache rows in
use) and the achieved GB/s against the device-to-device copy bandwidth measured in the same run.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time

import torch

sys.path.insert(0, "src")
from dynashape.bench.machine import copy_gbps, machine_facts  # noqa: E402
from dynashape.models import kernels  # noqa: E402


def bench(fn) -> float:
    """Median GPU microseconds of one call, replayed from a CUDA graph (no launch overhead from Python)."""
    import triton.testing
    fn()                                                      # compile outside the capture
    return triton.testing.do_bench_cudagraph(fn, rep=40, return_mode="median") * 1e3


def shapes(C: int, H: int, M: int, L: int, dt):
    g = torch.Generator(device="cuda").manual_seed(M * 7 + C)
    r = lambda *s, sc=1.0: (torch.randn(*s, device="cuda", generator=g) * sc).to(dt)  # noqa: E731
    x = r(M, C)
    ln_w, ln_b = r(C), r(C, sc=0.1)
    d = dict(x=x, ln_w=ln_w, ln_b=ln_b, qkv_w=r(3 * C, C, sc=C ** -0.5), qkv_b=r(3 * C),
             fc_w=r(4 * C, C, sc=C ** -0.5), fc_b=r(4 * C), proj_w=r(C, C, sc=C ** -0.5), proj_b=r(C),
             mproj_w=r(C, 4 * C, sc=(4 * C) ** -0.5), mproj_b=r(C), head=r(50304, C, sc=C ** -0.5),
             h=r(M, 4 * C), o=r(M, C))
    d["k"], d["v"] = r(M + 1, H, L, C // H), r(M + 1, H, L, C // H)
    d["slots"] = torch.arange(M, device="cuda")
    d["pos"] = torch.full((M,), L // 2, device="cuda")
    return d


def cases(d, C, H, M, L, elem):
    """(name, bytes moved, fn(config)) per kernel."""
    act = lambda n: n * M * elem  # noqa: E731
    yield ("qkv_to_cache", 3 * C * C * elem + act(C) + act(3 * C),
           lambda cfg: kernels.qkv_to_cache(d["x"], d["ln_w"], d["ln_b"], 1e-5, d["qkv_w"], d["qkv_b"], d["k"], d["v"],
                                            d["slots"], d["pos"], H, config=cfg))
    yield ("ln_linear_fc", 4 * C * C * elem + act(C) + act(4 * C),
           lambda cfg: kernels.ln_linear(d["x"], d["ln_w"], d["ln_b"], 1e-5, d["fc_w"], d["fc_b"], act="gelu_tanh",
                                         config=cfg))
    yield ("ln_linear_head", 50304 * C * elem + act(C) + act(50304),
           lambda cfg: kernels.ln_linear(d["x"], d["ln_w"], d["ln_b"], 1e-5, d["head"], config=cfg))
    yield ("linear_residual_proj", C * C * elem + 3 * act(C),
           lambda cfg: kernels.linear_residual(d["o"], d["proj_w"], d["proj_b"], d["x"], config=cfg))
    yield ("linear_residual_mproj", 4 * C * C * elem + act(4 * C) + 2 * act(C),
           lambda cfg: kernels.linear_residual(d["h"], d["mproj_w"], d["mproj_b"], d["x"], config=cfg))
    kv = 2 * M * C * (L // 2 + 1) * elem
    yield ("decode_attention", kv + 2 * act(C),
           lambda cfg: kernels.decode_attention(d["o"], d["k"], d["v"], d["slots"], d["pos"], H, 0.125, config=cfg))


def candidates(name: str, M: int):
    """None (the default) and a few alternatives per kernel class. One row: the one-row kernel holds its
    whole (block_n, K / split) weight slice, so only block_n, warps and (linear_residual) split matter."""
    yield None
    if name == "decode_attention":
        for split, warps, bk, stages in itertools.product((1, 2, 8, 32) if M < 64 else (1, 2), (4, 8), (32, 64, 128),
                                                          (2, 3)):
            yield dict(split=split, num_warps=warps, block_k=bk, num_stages=stages)
        return
    if M == 1:
        splits = (1, 2, 4) if name.startswith("linear_residual") else (1,)
        for bn, warps, split in itertools.product((2, 4, 8, 16, 32), (4, 8), splits):
            yield dict(block_n=bn, num_warps=warps, split=split, use_dot=False)
    elif M >= 128:                 # prefill rows
        splits = (1, 2, 4) if name.startswith("linear_residual") else (1,)
        for (bm, bn, bk, warps), split in itertools.product(
                ((64, 64, 64, 4), (64, 128, 32, 8), (64, 128, 64, 8), (128, 64, 32, 8), (128, 128, 32, 8),
                 (128, 128, 64, 8)), splits):
            yield dict(block_m=bm, block_n=bn, block_k=bk, num_warps=warps, num_stages=3, use_dot=True, split=split)
    else:
        splits = (1, 4) if name.startswith("linear_residual") else (1,)
        for bm, bn, bk, split in itertools.product((16, 64), (16, 32, 64), (32, 64, 128), splits):
            yield dict(block_m=bm, block_n=bn, block_k=bk, num_warps=4 if bm * bn < 2048 else 8,
                       use_dot=True, split=split)


# (C, n_head, rows) in the order they are swept (the budget may end the sweep: defaults only after it)
ORDER = [(768, 12, 64), (768, 12, 512), (1600, 25, 1), (768, 12, 1), (768, 12, 8), (1600, 25, 64), (1600, 25, 8)]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--rows", default="1,8,64,512")
    ap.add_argument("--budget-s", type=float, default=240)
    a = ap.parse_args()
    dt = torch.float16
    copy = copy_gbps("cuda")
    result = {"command": "PYTHONPATH=src python3 bench/kernel_sweep.py " + " ".join(sys.argv[1:]),
              "machine": machine_facts("cuda", "float16"), "copy_gbps": round(copy, 1), "rows": []}
    t_end = time.perf_counter() + a.budget_s
    rows = {int(m) for m in a.rows.split(",")}
    for C, H, M in [o for o in ORDER if o[2] in rows]:
        d, L = shapes(C, H, M, 1025, dt), 1025
        for name, nbytes, fn in cases(d, C, H, M, L, 2):
            if M >= 128 and name == "decode_attention":       # prefill rows: no decode attention
                continue
            best, default = None, None
            for cfg in candidates(name, M):
                if time.perf_counter() > t_end and cfg is not None:
                    break
                try:
                    us = bench(lambda: fn(cfg))
                except Exception as e:  # a config the kernel refuses (or that does not compile)
                    if cfg is None:
                        print(f"default failed {name} M={M} C={C}: {e}", flush=True)
                    continue
                if cfg is None:
                    default = us
                if best is None or us < best[0]:
                    best = (us, cfg)
            if default is None:
                continue
            row = {"kernel": name, "C": C, "M": M, "bytes": nbytes, "default_us": round(default, 2),
                   "default_gbps": round(nbytes / default / 1e3, 1), "best_us": round(best[0], 2),
                   "best_config": best[1], "best_share_of_copy": round(nbytes / best[0] / 1e3 / copy, 3)}
            result["rows"].append(row)
            print(f"{name:22s} C={C:5d} M={M:3d} default {default:8.2f} us ({row['default_gbps']:7.1f} GB/s)  "
                  f"best {best[0]:8.2f} us {best[1]}", flush=True)
            with open(a.out, "w") as f:
                json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
