"""Decode attention: one query per row over that row's slot of a static KV cache.

``decode_attention`` is the plain math (two batched matmuls over the whole cache row, masked to
the row's length, float32 softmax). ``decode_attention_op`` (``dynashape::decode_attention``) is the
same function as one opaque op: on a GPU with Triton, the split-KV kernels of
``kernels/attention.py``, which read each row's keys and values once and only up to its own length;
the plain math elsewhere. Opaque, so inductor neither rewrites nor re-fuses it.
"""
from __future__ import annotations

import torch


def decode_attention(q, keys, values, pos, scale: float) -> torch.Tensor:
    """Row b attends positions 0..pos[b] of its cache row.

    Written as matmuls, not SDPA: the fused attention kernels parallelise over (batch, head) only.
    q (B, H, 1, D); keys, values (B, H, L, D); pos (B,) -> (B, H, 1, D)
    """
    L = keys.shape[2]
    mask = torch.arange(L, device=q.device)[None, :] <= pos[:, None]            # (B, L)
    scores = (q @ keys.transpose(-1, -2)).float() * scale                       # (B, H, 1, L)
    p = torch.softmax(scores.masked_fill(~mask[:, None, None, :], float("-inf")), dim=-1)
    return p.to(q.dtype) @ values                                               # (B, H, 1, D)


@torch.library.custom_op("dynashape::decode_attention", mutates_args=())
def decode_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor,
                        lengths: torch.Tensor, scale: float) -> torch.Tensor:
    """q (B, H, D) over one layer's cache k, v (n_slots, H, L, D): row b attends positions
    0..lengths[b]-1 of slot slots[b]. -> (B, H, D)."""
    from . import kernels

    if kernels.available(q.device):
        B, H, D = q.shape
        out = kernels.decode_attention(q.reshape(B, H * D), k, v, slots, lengths - 1, H, scale)
        return out.view(B, H, D)
    return decode_attention(q[:, :, None], k[slots], v[slots], lengths - 1, scale)[:, :, 0].contiguous()


@decode_attention_op.register_fake
def _(q, k, v, slots, lengths, scale):
    return q.new_empty(q.shape)
