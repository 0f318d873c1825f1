"""One greedy decode step of the lean GPT-2 under Nsight Compute: per-kernel time, DRAM bytes, occupancy.

Run on the GPU machine (Firecracker H100: ncu reads the counters with --clock-control none):
``ncu --clock-control none --profile-from-start off --csv --metrics ... python3 bench/ncu_step.py gpt2 64``.
Kernels run one at a time under ncu (no PDL overlap, caches flushed between them): each kernel's own
duration and bandwidth, the upper bound of what the chain can reach.
"""
from __future__ import annotations

import sys

import torch

sys.path.insert(0, "bench")
sys.path.insert(0, "src")
from decode_ab import build  # noqa: E402


def main() -> None:
    preset, B, ctx = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 512
    model, k, v = build(preset, 65 if B > 1 else 2, 1024)
    rows = torch.arange(B, device="cuda")
    tok = torch.randint(0, 50000, (k[0].shape[0],), device="cuda")
    pos = torch.full((k[0].shape[0],), ctx, device="cuda")
    out = torch.zeros(B, dtype=torch.long, device="cuda")
    for _ in range(3):                                       # compile every kernel first
        pos.fill_(ctx)
        model.decode_greedy(rows, tok, pos, k[0].shape[2] - 1, k, v, out)
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStart()
    model.decode_greedy(rows, tok, pos, k[0].shape[2] - 1, k, v, out)
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStop()


if __name__ == "__main__":
    main()
