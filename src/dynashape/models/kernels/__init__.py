"""Fused Triton kernels for GPT-2's decode step (M = 1..64 rows, one token each) and its prefill.

A decoder layer's decode work in five kernels instead of ~12: ``qkv_to_cache`` (ln_1 + QKV + KV-cache
write), ``decode_attention`` (split-KV), ``linear_residual`` (attn.c_proj + residual), ``ln_linear``
(ln_2 + c_fc + GELU), ``linear_residual`` (mlp.c_proj + residual); a split attention adds a combine
launch, several rows their LayerNorm kernels and mlp.c_proj's K-split reduce (6..8 launches). Plus
``embed`` before the first layer and ``ln_linear`` (ln_f + lm_head) after. Each kernel reads its
weights once, grids depend on shapes only, and nothing syncs with the host: CUDA-graph capturable.
A greedy step uses ``gather_embed``, ``head_argmax`` and ``greedy_update`` (``greedy.py``: the slot
state read and written on the device, the argmax from the vocabulary projection's block partials).
The prefill runs the same projections over every prompt position, with ``prefill_attention``
(``prefill.py``) reading the cache they wrote.

Triton is optional: without it this package imports, ``available`` says False, and the kernels raise
``KernelError``. ``TRITON_INTERPRET=1`` (set before triton is first imported) runs them on CPU tensors.
"""
from __future__ import annotations

import os

import torch

from .attention import attention_config, decode_attention
from .config import TARGET_PROGRAMS, KernelConfig, KernelError, default_config
from .greedy import gather_embed, greedy_update, head_argmax
from .linear import embed, linear_residual, ln_linear, qkv_to_cache, triton
from .prefill import prefill_attention

__all__ = ["KernelConfig", "KernelError", "TARGET_PROGRAMS", "attention_config", "available", "decode_attention",
           "default_config", "embed", "gather_embed", "greedy_update", "head_argmax", "linear_residual", "ln_linear",
           "prefill_attention", "qkv_to_cache"]


def available(device) -> bool:
    """True when Triton is importable and can run on ``device``: CUDA, or any device under the interpreter."""
    if triton is None:
        return False
    interpret = os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")
    return torch.device(device).type == "cuda" or interpret
