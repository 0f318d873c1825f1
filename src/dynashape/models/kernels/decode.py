"""The lean GPT-2's decode step on the fused kernels: per layer qkv_to_cache (ln_1 + QKV + cache
write), decode_attention, linear_residual (c_proj + residual), ln_linear (ln_2 + c_fc + GELU),
linear_residual (c_proj + residual); embed before, ln_linear (ln_f + lm_head) after. The same math as
``GPT2.decode`` with ``kernels="torch"``, in 5 to 8 launches per layer instead of ~12. With ``pdl``
(Hopper) the launches form one programmatic-dependent-launch chain: each kernel starts while the
previous one finishes and fetches its weights before it waits (``gemv.py``).
"""
from __future__ import annotations

import torch

from . import decode_attention, embed, linear_residual, ln_linear, qkv_to_cache

TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")


def fused_decode(model, tok, pos, slots, k, v) -> torch.Tensor:
    """tok, pos, slots (B,); k, v lists of per-layer caches (n_slots, H, L, D) -> logits (B, V)."""
    # PDL pays at one row (the weight-first GEMVs overlap the previous kernel's tail: 0.34 -> 0.26 ms per
    # token on an H100); with 64 rows the early-launched programs only crowd the tl.dot kernels (1.10 -> 1.47)
    cfg, pdl = model.config, model.pdl and tok.shape[0] == 1
    eps, H = cfg.layer_norm_epsilon, cfg.n_head
    x = embed(tok, pos, model.wte.weight, model.wpe.weight, pdl=pdl)             # (B, C)
    for i, block in enumerate(model.h):
        a, mlp = block.attn, block.mlp
        q = qkv_to_cache(x, block.ln_1.weight, block.ln_1.bias, eps, a.c_attn.weight, a.c_attn.bias,
                         k[i], v[i], slots, pos, H, pdl=pdl)                     # (B, C); k, v written
        o = decode_attention(q, k[i], v[i], slots, pos, H, a.scale, pdl=pdl)     # (B, C)
        linear_residual(o, a.c_proj.weight, a.c_proj.bias, x, out=x, pdl=pdl)    # x += o @ Wo.T + bo
        h = ln_linear(x, block.ln_2.weight, block.ln_2.bias, eps, mlp.c_fc.weight, mlp.c_fc.bias,
                      act="gelu_tanh", pdl=pdl)                                  # (B, 4C)
        linear_residual(h, mlp.c_proj.weight, mlp.c_proj.bias, x, out=x, pdl=pdl)
    head = model.head_weight if model.head_weight is not None else model.lm_head.weight
    logits = ln_linear(x, model.ln_f.weight, model.ln_f.bias, eps, head, pdl=pdl)  # (B, V padded)
    return logits[:, :cfg.vocab_size]
