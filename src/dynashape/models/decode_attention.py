"""Decode attention: one query per row over a static KV cache.

``decode_attention`` is the plain math (two batched matmuls and a float32 softmax);
``decode_attention_op`` (``dynashape::decode_attention``) is the same function as one opaque op: on a
GPU with Triton, split-KV kernels that read each row's keys and values once, only up to the row's own
length, then combine the splits' partial softmax sums; the plain math elsewhere (and on the CPU).
"""
from __future__ import annotations

import torch

def decode_attention(q, keys, values_t, mask, scale: float) -> torch.Tensor:
    """One query per row over S cache slots: two batched matrix-vector products and a float32 softmax.

    Written as matmuls, not SDPA: the fused attention kernels parallelise over (batch, head) only,
    12 thread blocks at batch 1. Compiled for batch 1 with coordinate-descent tuning, inductor turns
    each product into a reduction spread over the slots; for larger batches they stay cuBLAS calls.
    q (B, H, 1, D); keys (B, H, S, D); values_t (B, H, D, S); mask (B, 1, 1, S) bool -> (B, H, 1, D)
    """
    scores = (q @ keys.transpose(-1, -2)).float() * scale                       # (B, H, 1, S)
    p = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)         # (B, H, 1, S)
    return p.to(q.dtype) @ values_t.transpose(-1, -2)                           # (B, H, 1, D)


# ---- decode attention as one op: split-KV Triton kernels on a GPU, the matmul math elsewhere -----
try:
    import triton
    import triton.language as tl
except ImportError:                                              # CPU-only installs
    triton = None

if triton is not None:
    @triton.jit
    def _split_kv_kernel(Q, K, Vt, Lens, O, Mp, Lp, scale, H, CHUNK, NSPLIT,
                         sqb, sqh, sqd, skb, skh, sks, skd, svb, svh, svd, svs,
                         D: tl.constexpr, BLOCK: tl.constexpr, SINGLE: tl.constexpr):
        """Program (b*H + h, split): online softmax over slots [split*CHUNK, min(+CHUNK, len_b))."""
        bh = tl.program_id(0)
        split = tl.program_id(1)
        b = bh // H
        h = bh % H
        hi = tl.minimum(split * CHUNK + CHUNK, tl.load(Lens + b).to(tl.int32))
        d = tl.arange(0, D)
        q = tl.load(Q + b * sqb + h * sqh + d * sqd).to(tl.float32) * scale          # (D,)
        m_i = -float("inf")
        l_i = 0.0
        acc = tl.zeros([D], dtype=tl.float32)
        for start in range(split * CHUNK, hi, BLOCK):
            s = start + tl.arange(0, BLOCK)
            ok = s < hi
            k = tl.load(K + b * skb + h * skh + s[:, None] * sks + d[None, :] * skd, mask=ok[:, None], other=0.0)
            vt = tl.load(Vt + b * svb + h * svh + d[:, None] * svd + s[None, :] * svs, mask=ok[None, :], other=0.0)
            sc = tl.where(ok, tl.sum(k.to(tl.float32) * q[None, :], axis=1), -float("inf"))   # (BLOCK,)
            m_new = tl.maximum(m_i, tl.max(sc, axis=0))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(sc - m_new)
            acc = acc * alpha + tl.sum(vt.to(tl.float32) * p[None, :], axis=1)
            l_i = l_i * alpha + tl.sum(p, axis=0)
            m_i = m_new
        if SINGLE:
            tl.store(O + bh * D + d, (acc / l_i).to(O.dtype.element_ty))
        else:                                                    # partials; an empty split leaves m=-inf, l=0
            tl.store(Mp + bh * NSPLIT + split, m_i)
            tl.store(Lp + bh * NSPLIT + split, l_i)
            tl.store(O + (bh * NSPLIT + split) * D + d, acc)

    @triton.jit
    def _combine_kernel(Op, Mp, Lp, O, NSPLIT, D: tl.constexpr, NS: tl.constexpr):
        """Program b*H + h: rescale the splits' partial sums to the common max and normalise."""
        bh = tl.program_id(0)
        sp = tl.arange(0, NS)
        d = tl.arange(0, D)
        ok = sp < NSPLIT
        m = tl.load(Mp + bh * NSPLIT + sp, mask=ok, other=-float("inf"))
        w = tl.exp(m - tl.max(m, axis=0))                                            # (NS,)
        den = tl.sum(tl.load(Lp + bh * NSPLIT + sp, mask=ok, other=0.0) * w, axis=0)
        acc = tl.load(Op + (bh * NSPLIT + sp[:, None]) * D + d[None, :], mask=ok[:, None], other=0.0)
        tl.store(O + bh * D + d, (tl.sum(acc * w[:, None], axis=0) / den).to(O.dtype.element_ty))


def _split_plan(rows: int, S: int, block: int = 64, target: int = 264) -> tuple[int, int]:
    """(chunk, n_split): enough programs (``target``, 2 per H200 SM) without chunks below one block."""
    n = max(1, min(-(-S // block), -(-target // rows)))
    chunk = -(-(-(-S // n)) // block) * block                    # ceil(S / n) rounded up to a block
    return chunk, -(-S // chunk)


def _decode_attention_triton(q, k, v_t, lengths, S: int, scale: float) -> torch.Tensor:
    B, H, D = q.shape
    assert D & (D - 1) == 0, "head_dim must be a power of two for the decode kernel"
    chunk, n = _split_plan(B * H, S)
    out = torch.empty(B, H, D, dtype=q.dtype, device=q.device)
    strides = (*q.stride(), *k.stride(), *v_t.stride())
    if n == 1:
        _split_kv_kernel[(B * H, 1)](q, k, v_t, lengths, out, out, out, scale, H, chunk, 1, *strides,
                                      D=D, BLOCK=64, SINGLE=True)
        return out
    part = torch.empty(B * H, n, D, dtype=torch.float32, device=q.device)
    m, l = (torch.empty(B * H, n, dtype=torch.float32, device=q.device) for _ in range(2))
    _split_kv_kernel[(B * H, n)](q, k, v_t, lengths, part, m, l, scale, H, chunk, n, *strides,
                                  D=D, BLOCK=64, SINGLE=False)
    _combine_kernel[(B * H,)](part, m, l, out, n, D=D, NS=triton.next_power_of_2(n))
    return out


@torch.library.custom_op("dynashape::decode_attention", mutates_args=())
def decode_attention_op(q: torch.Tensor, k: torch.Tensor, v_t: torch.Tensor, lengths: torch.Tensor,
                        S: int, scale: float) -> torch.Tensor:
    """One query per row, q (B, H, D), over whole cache buffers k (Bmax, H, L, D), v_t (Bmax, H, D, L):
    row b attends slots 0..lengths[b]-1 (all < S). Opaque to the compiler, so inductor neither
    rewrites nor re-fuses it. -> (B, H, D)."""
    if q.is_cuda and triton is not None:
        return _decode_attention_triton(q, k, v_t, lengths, S, scale)
    B = q.shape[0]
    mask = torch.arange(S, device=q.device)[None, :] < lengths[:, None]           # (B, S)
    y = decode_attention(q[:, :, None], k[:B, :, :S], v_t[:B, :, :, :S], mask[:, None, None], scale)
    return y[:, :, 0].contiguous()


@decode_attention_op.register_fake
def _(q, k, v_t, lengths, S, scale):
    return q.new_empty(q.shape)
