"""Launch parameters of the fused decode kernels and the rules that choose them from shapes alone.

The rules come from a sweep on an H100 (``bench/kernel_sweep.py``,
``bench/results/h100_kernel_sweep_gpt2_fp16.json``: CUDA-graph replays, gpt2 widths, fp16); a GPU
sweep may try others through each kernel's ``config`` argument.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ...errors import DynashapeError

SMS = 132                      # H100 SXM streaming multiprocessors
# Up to this many rows gemv.py (weights in registers, each row after the other, PDL), tl.dot tiles above.
# Same-run A/B on an H100 (bench/results/h100_decode_ab8_gpt2_fp16.json), gemv.py vs tl.dot per step:
# 2 rows 0.285 vs 0.446 ms, 4 rows 0.462 vs 0.471, 8 rows 0.961 vs 0.514 (the rows' reductions queue up).
GEMV_ROWS = 2
TARGET_PROGRAMS = 2 * SMS      # enough programs in flight to keep every SM's loads busy


class KernelError(DynashapeError):
    """A fused decode kernel cannot run: Triton missing, or inputs outside the kernels' layout."""


@dataclass(frozen=True)
class KernelConfig:
    """Launch parameters. Matmuls: rows, columns, reduction step per program; ``split`` = K splits.
    decode_attention: ``block_k`` = cache positions per step, ``split`` = KV splits per (row, head)."""

    block_m: int = 1
    block_n: int = 16
    block_k: int = 128
    split: int = 1
    num_warps: int = 4
    num_stages: int = 2
    use_dot: bool = False      # tl.dot on tensor cores: block_m, block_n, block_k >= 16


# Pipeline depth of the tl.dot kernels. The sweeps (one kernel replayed, its weights warm in L2) chose 3;
# in the decode step, whose weights come from HBM, 4 won everywhere in a same-run A/B on an H100
# (bench/results/h100_decode_ab7_gpt2_fp16.json): batch 64 0.929 -> 0.901 ms per step, batch 8 0.566 ->
# 0.515, the prefill of 16 / 64 / 128 / 512 rows 0.487 / 0.476 / 0.630 / 0.979 -> 0.435 / 0.447 / 0.576 / 0.963.
STAGES = 4


def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _matmul_config(kind: str, M: int, N: int, K: int) -> KernelConfig:
    """From the H100 sweeps (bench/results/h100_kernel_sweep_gpt2_fp16.json, then
    h100_kernel_sweep2_gpt2_fp16.json after the several-row layer norm moved into its own kernel;
    CUDA-graph replays, fp16).

    Up to GEMV_ROWS rows: gemv.py, multiply-and-sum in registers, narrow column tiles (4 columns: ~600
    programs for QKV, each streaming a few KB of weight; 2 for gpt2-xl's C x C projection: 3.22 -> 2.75 us); the
    vocabulary projection (N = 50304) prefers 16 columns. mlp.c_proj (K = 4C) takes 4 columns, 8 warps
    and no K split: in the PDL chain its weights stream before the wait, and the split's reduce kernel
    cost more than it saved (bench/results/h100_decode_ab_gpt2_fp16.json, same-run A/B: gpt2 0.239 ->
    0.230 ms per step; gpt2-xl 1.859 -> 1.849).
    Several rows: tl.dot with 16-row tiles (the tensor cores' minimum, rows beyond M masked): the
    broadcast product over 8 rows was 1.7-2x slower than one dot tile. From 17 rows, 64-row tiles where
    they won at 64 rows: c_fc 7.42 -> 6.03 us, mlp.c_proj 6.84 -> 5.47, the vocabulary 45.9 -> 34.8.
    Prefill rows (M >= 128): 64 x 64 x 64 tiles, 4 warps (QKV 35.1 -> 31.0 us at 512 rows).
    Every tl.dot tile keeps ``STAGES`` loads in flight."""
    wide = N >= 1024                                   # gpt2-xl's width and above
    long_k = kind == "linear_residual" and K >= 4 * N and K >= 1024               # mlp.c_proj
    if M <= GEMV_ROWS:        # gemv.py holds a (block_n, K) weight slice and multiplies it with each row
        bn = 16 if N >= 16384 else 4 if long_k or not wide or kind != "linear_residual" else 2
        return KernelConfig(1, bn, min(256, _pow2(K)), 1, 8 if bn * K > 8192 else 4, 2, False)
    split, S = (4 if long_k else 1), STAGES
    if M >= 128:
        return KernelConfig(64, 64, 64, split, 4, S, True)
    if M <= 16:
        return KernelConfig(16, 64 if kind == "ln_linear" else 32, 64, split, 4, S, True)
    if N >= 16384:                                     # the vocabulary projection
        return KernelConfig(64, 64, 128, 1, 8, S, True)
    if kind == "ln_linear":                            # QKV (N = 3K) keeps 16-row tiles; c_fc (N = 4K) 64
        return KernelConfig(64, 32, 128, 1, 8, S, True) if N >= 4 * K else KernelConfig(16, 32, 64, 1, 4, S, True)
    if split > 1:                                      # mlp.c_proj
        return KernelConfig(64, 32, 64, split, 8, S, True)
    return KernelConfig(16, 32, 128, 1, 4, S, True)    # attn.c_proj


def default_config(kind: str, M: int, N: int, K: int) -> KernelConfig:
    """H100 defaults by rule (``_matmul_config``; a GPU sweep may try others). kind: "ln_linear" (also
    qkv_to_cache: N = 3C), "linear_residual", "embed" (N = C), "attention" (N = n_head, K = cache length L)."""
    if kind in ("ln_linear", "linear_residual"):
        return _matmul_config(kind, M, N, K)
    if kind == "embed":
        return KernelConfig(block_n=min(1024, _pow2(N)))
    if kind == "attention":
        from .attention import attention_config
        return attention_config(M, N, K)
    raise KernelError(f"unknown kernel kind {kind!r}.", "use ln_linear, linear_residual, embed or attention.")


def as_config(config, default: KernelConfig) -> KernelConfig:
    """None -> the default; a dict overrides some fields of the default; a KernelConfig is used as is."""
    if config is None:
        return default
    if isinstance(config, dict):
        config = dataclasses.replace(default, **config)
    if config.use_dot and min(config.block_m, config.block_n, config.block_k) < 16:
        raise KernelError(f"use_dot needs block_m, block_n, block_k >= 16, got {config}.",
                          "raise the blocks or set use_dot=False.")
    return config
