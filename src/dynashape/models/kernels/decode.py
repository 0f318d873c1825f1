"""The lean GPT-2's prefill and decode steps on the fused kernels. Decode: per layer qkv_to_cache
(ln_1 + QKV + cache write), decode_attention, linear_residual (c_proj + residual), ln_linear (ln_2 + c_fc + GELU),
linear_residual (c_proj + residual); embed before, ln_linear (ln_f + lm_head) after. The same math as
``GPT2.decode`` with ``kernels="torch"``, in 5 to 8 launches per layer instead of ~12. With ``pdl``
(Hopper) the launches form one programmatic-dependent-launch chain: each kernel starts while the
previous one finishes and fetches its weights before it waits (``gemv.py``). Prefill: the same
kernels over all B x T prompt positions as rows (tensor-core tiles), with the causal attention of
``prefill.py`` reading the keys and values the QKV kernel has just written into the cache; only each
row's last real position reaches ln_f and the vocabulary projection.
"""
from __future__ import annotations

import torch

from . import config as kconfig, decode_attention, embed, linear_residual, ln_linear, qkv_to_cache
from .greedy import gather_embed, greedy_update, head_argmax
from .prefill import prefill_attention


def fused_decode(model, tok, pos, slots, k, v) -> torch.Tensor:
    """tok, pos, slots (B,); k, v lists of per-layer caches (n_slots, H, L, D) -> logits (B, V)."""
    pdl = _pdl(model, tok.shape[0])
    x = embed(tok, pos, model.wte.weight, model.wpe.weight, pdl=pdl)             # (B, C)
    return _head(model, _layers(model, x, pos, slots, k, v, pdl), pdl)


def fused_decode_greedy(model, rows, tok_state, pos_state, last_pos: int, k, v, out) -> None:
    """One greedy step in place (greedy.py): the rows' tokens and positions from the slot state, the
    argmax token to out (B,) and to the state, positions + 1. Two launches instead of ~10 ops around
    the layers, and the vocabulary projection keeps only its blocks' argmax partials."""
    pdl = _pdl(model, rows.shape[0])
    pos = torch.empty_like(rows)
    x = gather_embed(rows, tok_state, pos_state, last_pos, model.wte.weight, model.wpe.weight, pos, pdl=pdl)
    x = _layers(model, x, pos, rows, k, v, pdl)
    amax, aidx = head_argmax(x, model.ln_f.weight, model.ln_f.bias, model.config.layer_norm_epsilon,
                             _head_weight(model), model.config.vocab_size, pdl=pdl)
    greedy_update(amax, aidx, rows, pos, tok_state, pos_state, out, pdl=pdl)


# Above gemv.py's rows (tl.dot tiles, and the prefill): PDL with each kernel's dependents launched only
# as its programs exit ("late"), which hides the launch gap without early programs crowding the tiles.
# Same-run A/B on an H100 (bench/results/h100_decode_ab13_late_pdl.json), ms per step without -> with:
# batch 64 0.885 -> 0.863, 8 rows 0.500 -> 0.474, 4 rows 0.466 -> 0.441; prefill of 512 / 128 / 64 / 16
# positions 0.957 / 0.576 / 0.445 / 0.435 -> 0.931 / 0.556 / 0.423 / 0.412.
LATE_PDL_DECODE = True
LATE_PDL_PREFILL = True


def _pdl(model, M: int, prefill: bool = False):
    """PDL pays on gemv.py's rows (the weight-first GEMVs overlap the previous kernel's tail: 0.34 -> 0.26
    ms per token at batch 1 on an H100); with 64 rows the early-launched programs only crowd the tl.dot
    kernels (1.10 -> 1.47): there only "late" (see LATE_PDL_*)."""
    if not model.pdl:
        return False
    if prefill:
        return "late" if LATE_PDL_PREFILL else False
    return True if M <= kconfig.GEMV_ROWS else "late" if LATE_PDL_DECODE else False


def _layers(model, x, pos, slots, k, v, pdl, attend=None) -> torch.Tensor:
    """The decoder layers over rows x (M, C) at positions pos (M,) of cache rows slots (M,), in place.
    ``attend(q, layer)``: the attention (default: decode_attention, one query per row)."""
    cfg = model.config
    eps, H = cfg.layer_norm_epsilon, cfg.n_head
    for i, block in enumerate(model.h):
        a, mlp = block.attn, block.mlp
        q = qkv_to_cache(x, block.ln_1.weight, block.ln_1.bias, eps, a.c_attn.weight, a.c_attn.bias,
                         k[i], v[i], slots, pos, H, pdl=pdl)                     # (M, C); k, v written
        o = (attend(q, i) if attend is not None
             else decode_attention(q, k[i], v[i], slots, pos, H, a.scale, pdl=pdl))   # (M, C)
        linear_residual(o, a.c_proj.weight, a.c_proj.bias, x, out=x, pdl=pdl)    # x += o @ Wo.T + bo
        h = ln_linear(x, block.ln_2.weight, block.ln_2.bias, eps, mlp.c_fc.weight, mlp.c_fc.bias,
                      act="gelu_tanh", pdl=pdl)                                  # (M, 4C)
        linear_residual(h, mlp.c_proj.weight, mlp.c_proj.bias, x, out=x, pdl=pdl)
    return x


def _head_weight(model) -> torch.Tensor:
    return model.head_weight if model.head_weight is not None else model.lm_head.weight


def _head(model, x, pdl) -> torch.Tensor:
    logits = ln_linear(x, model.ln_f.weight, model.ln_f.bias, model.config.layer_norm_epsilon, _head_weight(model),
                       pdl=pdl)
    return logits[:, :model.config.vocab_size]                                   # (B, V) of (B, V padded)


def fused_prefill(model, idx, last, slots, k, v) -> torch.Tensor:
    """Right-padded prompts idx (B, T), last real index (B,), cache slots (B,) -> logits (B, V); writes
    positions 0..T-1 of each slot (as ``GPT2.prefill``)."""
    B, T = idx.shape
    H, dev = model.config.n_head, idx.device
    pos = torch.arange(T, device=dev).repeat(B)                                  # (B*T,) row (b, t) -> t
    rows = slots.repeat_interleave(T)                                            # (B*T,) -> its slot
    pdl = _pdl(model, B * T, prefill=True)
    x = embed(idx.reshape(-1), pos, model.wte.weight, model.wpe.weight, pdl=pdl)  # (B*T, C)
    x = _layers(model, x, pos, rows, k, v, pdl,          # the QKV kernel writes k, v of all B*T rows first
                attend=lambda q, i: prefill_attention(q, k[i], v[i], slots, T, H, model.h[i].attn.scale, pdl=pdl))
    x = x.view(B, T, -1)[torch.arange(B, device=dev), last]                     # (B, C): the last real tokens
    return _head(model, x, pdl)
