"""The two ends of a greedy decode step as kernels: read each row's token and position from the slot
state, and after the vocabulary projection pick the argmax and write the state back.

Why: around the ~62 kernels of a fused batch-1 step, the runtime's own PyTorch ops (gather the rows'
tokens and positions, clamp, argmax over 50k logits, copy the token out, scatter token and position
back) were 8 more launches and ~35 us of a 260 us step on an H100 (torch's argmax alone ~15 us: one
block reduces the row). Here they are two launches:

- ``gather_embed``: slot = rows[m]; tok = tok_state[slot]; pos = min(pos_state[slot], last_pos) ->
  x = wte[tok] + wpe[pos], and pos into ``pos_out`` for the layers.
- ``greedy_update``: per row the first index of the largest logit (torch.argmax's tie rule), written to
  ``out[m]`` and ``tok_state[slot]``, and ``pos_state[slot] = pos + 1``. The vocabulary is read in
  unrolled chunks (all loads in flight), one program per row.
"""
from __future__ import annotations  # annotations stay strings: ``tl.constexpr`` need not exist here

import torch

from .config import _cdiv, _pow2, default_config
from .linear import _embed_kernel, _jit, _pdl, check, gdc_launch_dependents, gdc_wait, require_triton, tl

CHUNK = 4096                        # logits per unrolled step of greedy_update


@_jit
def _greedy_update_kernel(Logits, Rows, Pos, TokS, PosS, Out, V, sl,
                          V_CONST: tl.constexpr, CHUNK: tl.constexpr, USE_PDL: tl.constexpr):
    """Program m: the first index of row m's largest logit, then the state writes."""
    if USE_PDL:
        gdc_launch_dependents()
        gdc_wait()
    m = tl.program_id(0)
    r = tl.arange(0, CHUNK)
    best = tl.max(tl.full([CHUNK], float("-inf"), tl.float32), axis=0)
    best_i = tl.min(tl.zeros([CHUNK], dtype=tl.int32), axis=0)
    for c0 in tl.static_range(0, V_CONST, CHUNK):
        i = c0 + r
        x = tl.load(Logits + m * sl + i, mask=i < V, other=float("-inf")).to(tl.float32)
        cmax = tl.max(x, axis=0)
        cidx = tl.min(tl.where(x == cmax, i, V_CONST), axis=0)                 # first index of the chunk's max
        take = cmax > best                                                      # strict: earlier chunks win ties
        best_i = tl.where(take, cidx, best_i)
        best = tl.where(take, cmax, best)
    slot = tl.load(Rows + m).to(tl.int64)
    tok = best_i.to(tl.int64)
    tl.store(Out + m, tok)
    tl.store(TokS + slot, tok)
    tl.store(PosS + slot, tl.load(Pos + m) + 1)


def gather_embed(rows, tok_state, pos_state, last_pos: int, wte, wpe, pos_out, pdl=False) -> torch.Tensor:
    """x (M, C) = wte[tok_state[rows]] + wpe[min(pos_state[rows], last_pos)]; the positions -> pos_out (M,)
    (linear.py's embedding kernel with GATHER)."""
    M, C = rows.shape[0], wte.shape[1]
    check(pos_out.shape == (M,) and tok_state.dim() == 1 and pos_state.shape == tok_state.shape,
          "rows and pos_out must be (M,), tok_state and pos_state (n_slots,)")
    require_triton(rows, tok_state, pos_state, wte, wpe, pos_out)
    y = wte.new_empty(M, C)
    cfg = default_config("embed", M, C, 0)
    _embed_kernel[(M, _cdiv(C, cfg.block_n))](tok_state, pos_state, rows, pos_out, wte, wpe, y, int(last_pos), C,
                                              wte.stride(0), wpe.stride(0), y.stride(0), BLOCK_C=cfg.block_n,
                                              GATHER=True, num_warps=cfg.num_warps, **_pdl(pdl))
    return y


def greedy_update(logits, V: int, rows, pos, tok_state, pos_state, out, pdl=False) -> None:
    """out[m] = tok_state[rows[m]] = argmax(logits[m, :V]) (first index on ties); pos_state[rows[m]] = pos[m] + 1."""
    M = rows.shape[0]
    check(logits.dim() == 2 and logits.shape[0] == M and logits.shape[1] >= V and logits.stride(1) == 1,
          f"logits must be ({M}, >= {V}) with a contiguous last dim")
    require_triton(logits, rows, pos, tok_state, pos_state, out)
    chunk = min(CHUNK, _pow2(V))
    _greedy_update_kernel[(M,)](logits, rows, pos, tok_state, pos_state, out, V, logits.stride(0),
                                V_CONST=_cdiv(V, chunk) * chunk, CHUNK=chunk, num_warps=8, **_pdl(pdl))
