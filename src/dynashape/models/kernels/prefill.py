"""Causal prefill attention over a static KV cache: right-padded prompts whose keys and values the
QKV kernel has just written into their cache slots.

Why: the prefill's other work runs on the fused projection kernels with M = batch x prompt rows
(``qkv_to_cache`` writes every position's k and v into the row's slot on the way), so attention reads
the keys and values from the cache where they already are, instead of a separate (B, H, T, D) copy.
Program (query block, row x head): a flash-attention forward (online softmax in fp32, ``tl.dot`` on
tensor cores) over key blocks 0 .. the block's last query, the causal mask on the diagonal blocks
only. Queries past a row's prompt are right padding (causal attention keeps real positions exact).

Layout: q (B * T, C) = rows (b, t), heads of D inside C; k_cache, v_cache (n_slots, H, L, D) with a
contiguous last dim; slots (B,). Output (B * T, C) like q. Reference: Tri Dao's FlashAttention-2
(https://arxiv.org/abs/2307.08691); Triton's fused-attention tutorial shows the same loop.
"""
from __future__ import annotations  # annotations stay strings: ``tl.constexpr`` need not exist here

import torch

from .config import KernelConfig, _cdiv, _pow2, as_config
from .linear import _dot_prec, _jit, _pdl, check, check_cache, pdl_prologue, require_triton

try:
    import triton.language as tl
except ImportError:                                      # CPU-only installs: require_triton raises
    tl = None


def prefill_attention_config(T: int) -> KernelConfig:
    """64 x 64 tiles (16 for short prompts: tl.dot's minimum), 4 warps."""
    block = max(16, min(64, _pow2(T)))
    return KernelConfig(block_m=block, block_n=block, num_warps=4, num_stages=2)


@_jit
def _prefill_attention_kernel(Q, Kc, Vc, Slots, O, scale, T, H, sq, so, sk0, sk1, sk2, sv0, sv1, sv2,
                              D: tl.constexpr, DP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                              DOT_PREC: tl.constexpr, USE_PDL: tl.constexpr):
    pdl_prologue(USE_PDL)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    t = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)                    # (BLOCK_M,) query positions
    d = tl.arange(0, DP)
    d_ok = d < D
    q_ok = (t < T)[:, None] & d_ok[None, :]
    q = tl.load(Q + (b * T + t)[:, None] * sq + h * D + d[None, :], mask=q_ok, other=0.0)      # (BLOCK_M, DP)
    slot = tl.load(Slots + b).to(tl.int64)
    k_row = Kc + slot * sk0 + h * sk1
    v_row = Vc + slot * sv0 + h * sv1
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, DP], dtype=tl.float32)
    hi = tl.minimum((tl.program_id(0) + 1) * BLOCK_M, T)                       # keys 0 .. last query
    for start in range(0, hi, BLOCK_N):
        s = start + tl.arange(0, BLOCK_N)                                      # (BLOCK_N,) key positions
        kv_ok = (s < T)[:, None] & d_ok[None, :]
        k = tl.load(k_row + s[:, None] * sk2 + d[None, :], mask=kv_ok, other=0.0)                  # (BLOCK_N, DP)
        sc = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * scale                              # (BLOCK_M, BLOCK_N)
        sc = tl.where((s[None, :] <= t[:, None]) & (s[None, :] < T), sc, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(sc, axis=1))                           # finite: key 0 is always in
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(sc - m_new[:, None])
        v = tl.load(v_row + s[:, None] * sv2 + d[None, :], mask=kv_ok, other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        m_i = m_new
    out = acc / l_i[:, None]
    tl.store(O + (b * T + t)[:, None] * so + h * D + d[None, :], out.to(O.dtype.element_ty), mask=q_ok)


def prefill_attention(q, k_cache, v_cache, slots, T: int, n_head: int, scale: float, config=None,
                      pdl: bool = False) -> torch.Tensor:
    """softmax(q k^T * scale) v, causal, for prompts of T positions already in the cache.
    q (B * T, C); k_cache, v_cache (n_slots, n_head, L >= T, D); slots (B,) -> (B * T, C) in q's dtype."""
    check(q.dim() == 2 and q.stride(1) == 1 and q.shape[1] % n_head == 0 and T >= 1 and q.shape[0] % T == 0,
          f"q must be (B * T, C) with C divisible by n_head = {n_head}, got {tuple(q.shape)} for T = {T}")
    B, C = q.shape[0] // T, q.shape[1]
    D = C // n_head
    check_cache(k_cache, v_cache, slots, slots, B, n_head, D)
    check(k_cache.shape[2] >= T, f"the cache holds {k_cache.shape[2]} positions, fewer than T = {T}")
    require_triton(q, k_cache, v_cache, slots)
    cfg = as_config(config, prefill_attention_config(T))
    out = q.new_empty(q.shape)
    _prefill_attention_kernel[(_cdiv(T, cfg.block_m), B * n_head)](
        q, k_cache, v_cache, slots, out, float(scale), T, n_head, q.stride(0), out.stride(0),
        *k_cache.stride()[:3], *v_cache.stride()[:3], D=D, DP=max(16, _pow2(D)), BLOCK_M=cfg.block_m,
        BLOCK_N=cfg.block_n, DOT_PREC=_dot_prec(q), num_warps=cfg.num_warps, num_stages=cfg.num_stages, **_pdl(pdl))
    return out
