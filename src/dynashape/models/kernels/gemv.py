"""Decode projections for up to ``GEMV_ROWS`` rows (decode at batch 1 and 2), with the weights fetched
before the previous kernel ends.

At batch 1 a decode step is ~75 small kernels of 1-5 MB each; launched one after another, each pays
its launch and its first loads' latency (~3-5 us on an H100) on top of ~1-2 us of streaming. So here
every program loads its whole weight slice (BLOCK_N rows x the K chunk: a few KB) into registers
*first*, then waits for the previous kernel's results, and multiplies it with each row (the weights
are read once, whatever the rows). With programmatic dependent launch (PDL,
Hopper) the next kernel is launched while this one still runs (``gdc_launch_dependents``), its
programs stream their weights during this kernel's tail, and ``gdc_wait`` blocks only before the
first read of an activation. Every write of ours comes after that wait, so no kernel overwrites what
an earlier one may still read. Without PDL the same kernels run in order, unchanged.

One kernel, four epilogues (``MODE``): store act(y + b) (or, with ``ARGMAX``, each column block's
largest logit and its index for greedy.py); q to Y and k, v into the KV cache; the residual add (in
place allowed); an fp32 partial of a K split (summed by linear.py's reduce kernel).
https://docs.nvidia.com/cuda/cuda-c-programming-guide/#programmatic-dependent-launch-and-synchronization
"""
from __future__ import annotations

import torch

from .config import _cdiv, _pow2
from .linear import (_argmax_epilogue, _cache_args, _jit, _pdl, _residual_epilogue, _store_qkv, gdc_wait,
                     pdl_prologue, tl)

STORE, TO_CACHE, RESIDUAL, PARTIAL = 0, 1, 2, 3


def pdl_supported(device: torch.device) -> bool:
    """PDL needs a Hopper (sm_90) or newer GPU and a Triton that exposes grid dependency control."""
    return (gdc_wait is not None and torch.device(device).type == "cuda"
            and torch.cuda.get_device_capability(device)[0] >= 9)


@_jit
def _gemv_kernel(X, LnW, LnB, W, Bias, Y, R, Kc, Vc, Slots, Pos, Amax, Aidx, N, L, V, eps, sxm, sym, srm,
                 sk0, sk1, sk2, sv0, sv1, sv2,
                 K: tl.constexpr, KP: tl.constexpr, KCH: tl.constexpr, C: tl.constexpr, D: tl.constexpr,
                 HAS_LN: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr, MODE: tl.constexpr,
                 ARGMAX: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr, USE_PDL: tl.constexpr):
    """Program (column block, K split): the weight slice first, then wait, then for each of the ROWS
    rows x (layer-normed) . w and its epilogue: the weights are read once for all rows."""
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)                    # (BLOCK_N,)
    n_ok = rn < N
    rk = tl.program_id(1) * KCH + tl.arange(0, KP)                             # (KP,)
    k_ok = (tl.arange(0, KP) < KCH) & (rk < K)
    w = tl.load(W + rn.to(tl.int64)[:, None] * K + rk[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0)
    if HAS_LN:
        g = tl.load(LnW + rk, mask=k_ok, other=0.0).to(tl.float32)
        beta = tl.load(LnB + rk, mask=k_ok, other=0.0).to(tl.float32)
    pdl_prologue(USE_PDL)  # the previous kernel's writes are visible now
    rm = tl.arange(0, 1)
    for r in tl.static_range(ROWS):
        x = tl.load(X + r * sxm + rk, mask=k_ok, other=0.0).to(tl.float32)    # (KP,)
        if HAS_LN:                                           # the whole row is here: KCH == K
            mean = tl.sum(x, axis=0) / K
            xc = tl.where(k_ok, x - mean, 0.0)
            x = xc * tl.rsqrt(tl.sum(xc * xc, axis=0) / K + eps) * g + beta
        acc = tl.sum(w.to(tl.float32) * x[None, :], axis=1)[None, :]           # (1, BLOCK_N)
        if MODE == 3:                                        # PARTIAL: P (split, ROWS, N) in fp32
            tl.store(Y + (tl.program_id(1) * ROWS + r) * N + rn[None, :], acc, mask=n_ok[None, :])
        elif MODE == 2:                                      # RESIDUAL: Y = R + acc + b
            _residual_epilogue(acc, Bias, R + r * srm, Y + r * sym, rm, rn, 1, N, 0, 0, HAS_BIAS)
        else:
            if HAS_BIAS:
                acc += tl.load(Bias + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
            if ACT == 1:      # GPT-2 gelu_new: 0.5 a (1 + tanh(u)) = a * sigmoid(2u)
                u = 0.7978845608028654 * (acc + 0.044715 * acc * acc * acc)
                acc = acc * tl.sigmoid(2.0 * u)
            if MODE == 1:
                _store_qkv(acc, Y + r * sym, Kc, Vc, Slots + r, Pos + r, rm, rn, 1, L, 0, sk0, sk1, sk2, sv0, sv1,
                           sv2, C, D)
            elif ARGMAX:                                     # greedy.py: partials instead of the logits
                _argmax_epilogue(acc, Y, Amax + r * tl.num_programs(0), Aidx + r * tl.num_programs(0), rm, rn, 1,
                                 V, tl.program_id(0), tl.num_programs(0))
            else:
                tl.store(Y + r * sym + rn[None, :], acc.to(Y.dtype.element_ty), mask=n_ok[None, :])


def launch_gemv(x, w, y, cfg, mode: int, *, ln=None, eps=0.0, b=None, act=0, residual=None, cache=None,
                argmax=None, split: int = 1, pdl: bool = False) -> None:
    """Rows x (M <= GEMV_ROWS, K) against w (N, K) -> y. ln: (ln_w, ln_b) or None; cache: (k, v, slots,
    pos, C, D); argmax (STORE only): (amax, aidx, V), the column blocks' argmax partials instead of y."""
    (M, K), N = x.shape, w.shape[0]
    chunk = _cdiv(K, split)
    kc, vc, slots, pos, C, D, L, strides = _cache_args(cache, y)
    amax, aidx, V = argmax if argmax is not None else (y, y, 0)
    ln_w, ln_b = ln if ln is not None else (w, w)
    _gemv_kernel[(_cdiv(N, cfg.block_n), split)](
        x, ln_w, ln_b, w, b if b is not None else w, y, residual if residual is not None else y,
        kc, vc, slots, pos, amax, aidx, N, L, V, float(eps), x.stride(0), y.stride(0) if y.dim() == 2 else 0,
        residual.stride(0) if residual is not None else 0, *strides,
        K=K, KP=_pow2(chunk), KCH=chunk, C=C, D=D, HAS_LN=ln is not None, HAS_BIAS=b is not None, ACT=act,
        MODE=mode, ARGMAX=argmax is not None, ROWS=M, BLOCK_N=cfg.block_n, num_warps=cfg.num_warps, **_pdl(pdl))
