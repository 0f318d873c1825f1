"""The prefill's projections alone: our tl.dot kernels against cuBLAS (torch.nn.functional.linear) at the
same shapes, one GPU, CUDA-graph replays of 20 back-to-back calls (no PDL), fp16, gpt2 widths.

Run on the GPU machine: ``PYTHONPATH=src python3 bench/gemm_probe.py --out $OUT/gemm_probe.json``.
Tells how far the prefill's matmuls (most of the time to first token) are from the library's, and
which tiles come closer; tile rows: (block_m, block_n, block_k, warps, stages).
"""
from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, "src")
sys.path.insert(0, "bench")
from decode_ab import timed_graph  # noqa: E402
from dynashape.bench.machine import machine_facts  # noqa: E402
from dynashape.models import kernels  # noqa: E402

TILES = [None, (64, 64, 64, 4, 4), (128, 64, 64, 4, 3), (128, 128, 64, 8, 3), (64, 128, 64, 4, 3),
         (128, 64, 32, 4, 4), (64, 64, 128, 4, 3), (128, 256, 64, 8, 3)]


def per_call_us(fn, calls: int = 20, replays: int = 30) -> float:
    """Median us of one of ``calls`` back-to-back calls of ``fn`` captured in one CUDA graph."""
    return timed_graph(lambda: [fn() for _ in range(calls)], replays) * 1e3 / calls


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--rows", default="512,128")
    a = ap.parse_args()
    dev, dt, C = torch.device("cuda"), torch.float16, 768
    torch.manual_seed(0)
    res = {"command": "PYTHONPATH=src python3 bench/gemm_probe.py " + " ".join(sys.argv[1:]),
           "machine": machine_facts(dev, "float16"), "rows": []}
    ln_w, ln_b = torch.ones(C, device=dev, dtype=dt), torch.zeros(C, device=dev, dtype=dt)
    for M in (int(m) for m in a.rows.split(",")):
        for name, N, K in (("qkv", 3 * C, C), ("c_fc", 4 * C, C), ("attn.c_proj", C, C), ("mlp.c_proj", C, 4 * C)):
            x = torch.randn(M, K, device=dev, dtype=dt)
            w = torch.randn(N, K, device=dev, dtype=dt) * K ** -0.5
            b = torch.randn(N, device=dev, dtype=dt)
            r = torch.randn(M, N, device=dev, dtype=dt)
            row = {"M": M, "shape": name, "N": N, "K": K, "gflop": round(2 * M * N * K / 1e9, 3),
                   "cublas_us": round(per_call_us(lambda: F.linear(x, w, b)), 2)}
            for tile in TILES:
                cfg = None if tile is None else dict(zip(("block_m", "block_n", "block_k", "num_warps", "num_stages"),
                                                         tile), use_dot=True, split=1)
                key = "ours_default_us" if tile is None else "ours_" + "x".join(map(str, tile)) + "_us"
                if K == C and N != C:
                    fn = lambda: kernels.ln_linear(x, ln_w, ln_b, 1e-5, w, b, config=cfg)  # noqa: E731
                else:
                    fn = lambda: kernels.linear_residual(x, w, b, r, config=cfg)  # noqa: E731
                try:
                    row[key] = round(per_call_us(fn), 2)
                except Exception as e:                    # a tile that does not compile is recorded
                    row[key] = f"{type(e).__name__}: {e}"[:120]
            print(row, flush=True)
            res["rows"].append(row)
            with open(a.out, "w") as f:
                json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
