"""Decode attention over one layer's static KV cache, split-KV ("flash-decoding").

Why: at decode each row has one query, so a kernel parallel over (row, head) alone has 12 programs at
batch 1 and leaves most of the GPU idle while it streams the cache. Here every (row, head) gets a fixed
number of splits, chosen from SHAPES only (rows x heads x splits ~ 2 programs per SM), so the grid never
depends on the lengths and the launch is CUDA-graph capturable. Each split computes its chunk IN THE
KERNEL from its row's own length pos[m] + 1, so a 40-token row reads 40 positions, not the cache's L,
and nothing at or beyond the length is ever loaded. Splits keep an online softmax (running max, sum,
weighted values, fp32) and a combine kernel rescales them to a common max; with one split the first
kernel normalises and writes the output itself.

Layout: q (M, C) = (M, H, D); k_cache, v_cache (n_slots, H, L, D) with any strides for the leading dims
(a view ``K[layer]`` of an (n_layer, n_slots, H, L, D) buffer works) and a contiguous last dim; row m
reads cache row slots[m], positions 0..pos[m]. D may be any size (padded to a power of two in
registers). Reference: https://crfm.stanford.edu/2023/10/12/flashdecoding.html
"""
from __future__ import annotations  # annotations stay strings: ``tl.constexpr`` need not exist here

import torch

from .config import TARGET_PROGRAMS, KernelConfig, _cdiv, _pow2, as_config
from .linear import _jit, _pdl, check, check_cache, pdl_prologue, require_triton

try:
    import triton.language as tl
except ImportError:                                      # CPU-only installs: require_triton raises
    tl = None


# Each split loads its next block's keys and values while it uses this block (one more tile of registers).
# Same-run A/B on an H100 (bench/results/h100_decode_ab4_gpt2_fp16.json): gpt2-xl batch 1 1.828 -> 1.767 ms,
# gpt2 batch 64 0.937 -> 0.925, gpt2 batch 1 0.221 -> 0.222 (noise). Off: keys, scores, then values.
PREFETCH = True


def attention_config(M: int, H: int, L: int) -> KernelConfig:
    """From the H100 sweep (CUDA-graph replays, gpt2 fp16, rows at half of a 1024-position cache):
    one row: 32 splits of 32-position blocks (5.1 us); 8 rows: 8 splits of 64 (9.3 us); 64 rows: no
    split, 4 warps. In between: enough splits for ~2 programs per SM over M * H (row, head) pairs.
    Above 8 rows 128-position blocks: with the next block prefetched (PREFETCH) the batch-64 step went
    0.954 -> 0.925 ms, 46 -> 43 us per layer by ncu (64-position blocks: 0.987; same-run A/Bs,
    bench/results/h100_decode_ab3_*.json, h100_decode_ab4_gpt2_fp16.json). On the tl.dot rows (M > 2) 2 warps a
    program (more programs resident): batch 64 0.903 -> 0.887 ms, 8 rows 0.516 -> 0.502, 4 rows 0.473 -> 0.466
    (h100_decode_ab10/ab11_gpt2_fp16.json; 1 warp: 2.8 ms). Where rows x heads fill the GPU without a split
    (M * H >= 512), 64-position blocks again: a program then needs 158 registers a thread instead of 246,
    so all of batch 64's 768 programs are resident in one wave (6 an SM, not 4): 0.862 -> 0.841 ms per step
    (bench/results/h100_decode_ab15_attn64.json; without the prefetch 0.97-1.00); by ncu 43.0 -> 40.2 us a
    layer (h100_ncu_decode_gpt2_b64_44b8644.json)."""
    block = max(16, min(32 if M == 1 else 64 if M <= 8 or M * H >= 512 else 128, _pow2(L)))
    split = max(1, min(_cdiv(TARGET_PROGRAMS, M * H), _cdiv(L, block), 32))
    if M * H >= 512:
        split = 1
    return KernelConfig(block_m=1, block_n=1, block_k=block, split=split, num_warps=2 if M > 2 else 4, num_stages=2)


@_jit
def _split_kv_kernel(Q, Kc, Vc, Slots, Pos, O, Mp, Lp, scale, H, L, sqm, som,
                     sk0, sk1, sk2, sv0, sv1, sv2, D: tl.constexpr, DP: tl.constexpr,
                     NSPLIT: tl.constexpr, BLOCK: tl.constexpr, SINGLE: tl.constexpr, PREFETCH: tl.constexpr,
                     USE_PDL: tl.constexpr):
    """Program (m * H + h, split): online softmax over positions [lo, hi) of row m's length."""
    pdl_prologue(USE_PDL)  # q and the new cache position come from the previous kernel
    mh = tl.program_id(0)
    split = tl.program_id(1)
    m = mh // H
    h = mh % H
    slot = tl.load(Slots + m).to(tl.int64)
    length = tl.minimum(tl.load(Pos + m).to(tl.int32) + 1, L)                  # attend 0..pos
    chunk = tl.cdiv(tl.cdiv(length, NSPLIT), BLOCK) * BLOCK                    # whole blocks per split
    lo = split * chunk
    hi = tl.minimum(lo + chunk, length)                                        # lo >= hi: empty split
    d = tl.arange(0, DP)
    d_ok = d < D
    q = tl.load(Q + m * sqm + h * D + d, mask=d_ok, other=0.0).to(tl.float32) * scale   # (DP,)
    k_row = Kc + slot * sk0 + h * sk1
    v_row = Vc + slot * sv0 + h * sv1
    m_i = tl.max(tl.full([BLOCK], float("-inf"), tl.float32), axis=0)         # running max (scalar)
    l_i = tl.sum(tl.zeros([BLOCK], dtype=tl.float32), axis=0)                  # running sum (scalar)
    acc = tl.zeros([DP], dtype=tl.float32)
    if PREFETCH:                                             # the first block's keys and values, together
        s = lo + tl.arange(0, BLOCK)
        tile_ok = (s < hi)[:, None] & d_ok[None, :]
        k = tl.load(k_row + s[:, None] * sk2 + d[None, :], mask=tile_ok, other=0.0)    # (BLOCK, DP)
        v = tl.load(v_row + s[:, None] * sv2 + d[None, :], mask=tile_ok, other=0.0)    # (BLOCK, DP)
    for start in range(lo, hi, BLOCK):
        s = start + tl.arange(0, BLOCK)
        ok = s < hi
        if PREFETCH:                                         # the next block in flight while this one is used
            s2 = s + BLOCK
            next_ok = (s2 < hi)[:, None] & d_ok[None, :]
            k2 = tl.load(k_row + s2[:, None] * sk2 + d[None, :], mask=next_ok, other=0.0)
            v2 = tl.load(v_row + s2[:, None] * sv2 + d[None, :], mask=next_ok, other=0.0)
        else:                                                # keys, the scores, then values (fewer registers)
            tile_ok = ok[:, None] & d_ok[None, :]
            k = tl.load(k_row + s[:, None] * sk2 + d[None, :], mask=tile_ok, other=0.0)
        sc = tl.where(ok, tl.sum(k.to(tl.float32) * q[None, :], axis=1), float("-inf"))  # (BLOCK,)
        m_new = tl.maximum(m_i, tl.max(sc, axis=0))
        alpha = tl.exp(m_i - m_new)                                            # 0 on the first step
        p = tl.exp(sc - m_new)                                                 # 0 where masked
        if not PREFETCH:
            v = tl.load(v_row + s[:, None] * sv2 + d[None, :], mask=tile_ok, other=0.0)
        acc = acc * alpha + tl.sum(v.to(tl.float32) * p[:, None], axis=0)
        l_i = l_i * alpha + tl.sum(p, axis=0)
        m_i = m_new
        if PREFETCH:
            k, v = k2, v2
    if SINGLE:
        tl.store(O + m * som + h * D + d, (acc / l_i).to(O.dtype.element_ty), mask=d_ok)
    else:                                                    # an empty split leaves m = -inf, l = 0, acc = 0
        tl.store(Mp + mh * NSPLIT + split, m_i)
        tl.store(Lp + mh * NSPLIT + split, l_i)
        tl.store(O + (mh * NSPLIT + split) * DP + d, acc)


@_jit
def _combine_kernel(Op, Mp, Lp, O, H, som, D: tl.constexpr, DP: tl.constexpr,
                    NSPLIT: tl.constexpr, NS: tl.constexpr, USE_PDL: tl.constexpr):
    """Program m * H + h: rescale the splits' partial sums to their common max and normalise."""
    pdl_prologue(USE_PDL)
    mh = tl.program_id(0)
    m = mh // H
    h = mh % H
    sp = tl.arange(0, NS)
    ok = sp < NSPLIT
    d = tl.arange(0, DP)
    mx = tl.load(Mp + mh * NSPLIT + sp, mask=ok, other=float("-inf"))            # (NS,)
    w = tl.exp(mx - tl.max(mx, axis=0))                                          # 0 for empty splits
    den = tl.sum(tl.load(Lp + mh * NSPLIT + sp, mask=ok, other=0.0) * w, axis=0)
    acc = tl.load(Op + (mh * NSPLIT + sp[:, None]) * DP + d[None, :], mask=ok[:, None], other=0.0)  # (NS, DP)
    out = tl.sum(acc * w[:, None], axis=0) / den                                 # (DP,)
    tl.store(O + m * som + h * D + d, out.to(O.dtype.element_ty), mask=d < D)


def _check_attention(q, k_cache, v_cache, slots, pos, n_head: int) -> tuple[int, int, int]:
    check(q.dim() == 2 and q.stride(1) == 1 and q.shape[1] % n_head == 0,
          f"q must be (M, C) with C divisible by n_head = {n_head}, got {tuple(q.shape)}")
    M, C = q.shape
    D = C // n_head
    check_cache(k_cache, v_cache, slots, pos, M, n_head, D)
    require_triton(q, k_cache, v_cache, slots, pos)
    return M, D, k_cache.shape[2]


def decode_attention(q, k_cache, v_cache, slots, pos, n_head: int, scale: float, config=None,
                     pdl: bool = False) -> torch.Tensor:
    """softmax(q k^T * scale) v for one query per row over k_cache[slots[m], h, 0..pos[m]] (fp32 softmax).
    q (M, C); k_cache, v_cache (n_slots, n_head, L, D); slots, pos (M,) integer, trusted (a check would
    sync with the host): slots[m] < n_slots, and a length pos[m] + 1 above L is clamped to L
    -> (M, C) in q's dtype."""
    M, D, L = _check_attention(q, k_cache, v_cache, slots, pos, n_head)
    cfg = as_config(config, attention_config(M, n_head, L))
    H, DP, n = n_head, _pow2(D), cfg.split
    out = q.new_empty(q.shape)
    strides = (q.stride(0), out.stride(0), *k_cache.stride()[:3], *v_cache.stride()[:3])
    launch = dict(D=D, DP=DP, NSPLIT=n, BLOCK=cfg.block_k, PREFETCH=PREFETCH, num_warps=cfg.num_warps,
                  num_stages=cfg.num_stages, **_pdl(pdl))
    if n == 1:
        _split_kv_kernel[(M * H, 1)](q, k_cache, v_cache, slots, pos, out, out, out, float(scale), H, L,
                                     *strides, SINGLE=True, **launch)
        return out
    part = torch.empty(M * H, n, DP, dtype=torch.float32, device=q.device)    # (M*H, split, DP)
    mx, den = (torch.empty(M * H, n, dtype=torch.float32, device=q.device) for _ in range(2))
    _split_kv_kernel[(M * H, n)](q, k_cache, v_cache, slots, pos, part, mx, den, float(scale), H, L,
                                 *strides, SINGLE=False, **launch)
    _combine_kernel[(M * H,)](part, mx, den, out, H, out.stride(0), D=D, DP=DP, NSPLIT=n, NS=_pow2(n),
                              num_warps=cfg.num_warps, **_pdl(pdl))
    return out
