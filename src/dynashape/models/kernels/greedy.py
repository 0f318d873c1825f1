"""The two ends of a greedy decode step as kernels: read each row's token and position from the slot
state, and after the vocabulary projection pick the argmax and write the state back.

Why: around the ~62 kernels of a fused batch-1 step, the runtime's own PyTorch ops (gather the rows'
tokens and positions, clamp, argmax over 50k logits, copy the token out, scatter token and position
back) were 8 more launches and ~35 us of a 260 us step on an H100 (torch's argmax alone ~15 us: one
block reduces the row). Here they are two launches:

- ``gather_embed``: slot = rows[m]; tok = tok_state[slot]; pos = min(pos_state[slot], last_pos) ->
  x = wte[tok] + wpe[pos], and pos into ``pos_out`` for the layers.
- ``head_argmax``: ln_f + the vocabulary projection, whose epilogue keeps per row and column block only
  the largest logit (rounded as a stored logit would be) and its first index: no logits written.
- ``greedy_update``: per row the first index of the largest of those partials (torch.argmax's tie
  rule: blocks in column order, the first index inside a block), written to ``out[m]`` and
  ``tok_state[slot]``, and ``pos_state[slot] = pos + 1``. It reads ~3k partials, not 50k logits: one
  program per row reading a whole row of logits took 17 us on an H100 (ncu), the critical path of a
  0.23 ms step (bench/results/h100_ncu_decode_gpt2_b1.json).
"""
from __future__ import annotations  # annotations stay strings: ``tl.constexpr`` need not exist here

import torch

from .config import _cdiv, _pow2, default_config
from .linear import (_check_matmul, _embed_kernel, _jit, _launch_ln_linear, _pdl, check, pdl_prologue,
                     require_triton, tl)

CHUNK = 4096                        # partials per unrolled step of greedy_update


@_jit
def _greedy_update_kernel(Amax, Aidx, Rows, Pos, TokS, PosS, Out, P,
                          P_CONST: tl.constexpr, CHUNK: tl.constexpr, USE_PDL: tl.constexpr):
    """Program m: the first index of row m's largest logit from its P block partials, then the state writes."""
    pdl_prologue(USE_PDL)
    m = tl.program_id(0)
    r = tl.arange(0, CHUNK)
    best = tl.max(tl.full([CHUNK], float("-inf"), tl.float32), axis=0)
    best_i = tl.min(tl.full([CHUNK], 2147483647, tl.int32), axis=0)
    for c0 in tl.static_range(0, P_CONST, CHUNK):
        i = c0 + r
        x = tl.load(Amax + m * P + i, mask=i < P, other=float("-inf"))
        ix = tl.load(Aidx + m * P + i, mask=i < P, other=2147483647)
        cmax = tl.max(x, axis=0)
        cidx = tl.min(tl.where(x == cmax, ix, 2147483647), axis=0)            # blocks hold rising columns
        take = cmax > best                                                      # strict: earlier chunks win ties
        best_i = tl.where(take, cidx, best_i)
        best = tl.where(take, cmax, best)
    slot = tl.load(Rows + m).to(tl.int64)
    tok = best_i.to(tl.int64)
    tl.store(Out + m, tok)
    tl.store(TokS + slot, tok)
    tl.store(PosS + slot, tl.load(Pos + m) + 1)


def head_argmax(x, ln_w, ln_b, eps: float, w, V: int, pdl=False) -> tuple[torch.Tensor, torch.Tensor]:
    """layer_norm(x) @ w.T over columns < V, reduced per column block: (amax, aidx), each (M, blocks):
    every block's largest logit (rounded to x's dtype, as a stored logit) and the first column holding
    it. x (M, K); w (N >= V, K) contiguous (the padded vocabulary)."""
    M, N, K = _check_matmul(x, w, None, ln_w, ln_b)
    check(1 <= V <= N and ln_w.shape == (K,) and ln_b.shape == (K,), f"V must be in 1..{N}, ln_w and ln_b ({K},)")
    cfg = default_config("ln_linear", M, N, K)
    P = _cdiv(N, cfg.block_n)                                                  # the kernels' column blocks
    amax = torch.empty(M, P, dtype=torch.float32, device=x.device)
    aidx = torch.empty(M, P, dtype=torch.int32, device=x.device)
    _launch_ln_linear(x, ln_w, ln_b, eps, w, None, x, cfg, argmax=(amax, aidx, V), pdl=pdl)
    return amax, aidx


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


def greedy_update(amax, aidx, rows, pos, tok_state, pos_state, out, pdl=False) -> None:
    """From head_argmax's partials (M, P): out[m] = tok_state[rows[m]] = the row's argmax (first index on
    ties); pos_state[rows[m]] = pos[m] + 1."""
    M, P = amax.shape
    check(aidx.shape == (M, P) and amax.is_contiguous() and aidx.is_contiguous() and rows.shape == (M,),
          f"amax and aidx must be contiguous ({M}, P), rows ({M},)")
    require_triton(amax, aidx, rows, pos, tok_state, pos_state, out)
    chunk = min(CHUNK, _pow2(P))
    _greedy_update_kernel[(M,)](amax, aidx, rows, pos, tok_state, pos_state, out, P,
                                P_CONST=_cdiv(P, chunk) * chunk, CHUNK=chunk, num_warps=4, **_pdl(pdl))
