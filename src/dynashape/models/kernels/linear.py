"""Fused decode projections for GPT-2: LayerNorm + linear (+ GELU, + KV-cache write), linear + residual.

Why: a decode step (M = 1..64 rows, one token each) is memory-bound; every weight is read once and
the activations are tiny. So each kernel streams its weight (N, K) once, along K (contiguous, 16-byte
loads), with all the rows of the batch in the same program, and folds the small ops around the matmul
into it: the bias, GELU, the residual add or the KV-cache store after. The LayerNorm before: for one
row inside the matrix-vector kernel (``gemv.py``); for several rows a small kernel writes the
normalised rows first, so that the tensor-core loop reads both operands straight from memory (with
the LayerNorm applied to each tile in registers, Triton did not pipeline the loads: 10 us for QKV at
64 rows, 42 us at 512 on an H100). One or two launches replace 3 to 5.

- ``ln_linear``:       act(layer_norm(x) @ w.T + b)          ln_1+QKV, ln_2+c_fc+gelu, ln_f+lm_head
- ``qkv_to_cache``:    the same with N = 3C; k, v go straight into the cache, only q is returned
- ``linear_residual``: residual + h @ w.T + b                 attn.c_proj, mlp.c_proj (split-K)
- ``embed``:           wte[tok] + wpe[pos]

One row multiplies and sums in registers (a matrix-vector product); several rows use ``tl.dot``.
Grids depend on shapes only and nothing syncs with the host, so all of it is CUDA-graph capturable.
Everything accumulates in fp32. Reference: gpt-fast (https://github.com/pytorch-labs/gpt-fast); split-K
as in Triton's matmul tutorials, but reduced by a second kernel in a fixed order (deterministic).
"""
from __future__ import annotations  # annotations stay strings: ``tl.constexpr`` need not exist here

import torch

from . import config as _config
from .config import KernelError, _cdiv, _pow2, as_config, default_config

try:
    import triton
    import triton.language as tl
except ImportError:                                      # CPU-only installs: launchers raise KernelError
    triton = tl = None
try:                                                     # grid dependency control (PDL): see gemv.py
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:
    gdc_launch_dependents = gdc_wait = None

ACTS = {None: 0, "gelu_tanh": 1}


def _jit(fn):
    """``triton.jit`` when Triton is installed; the plain function otherwise (never launched then)."""
    return triton.jit(fn) if triton is not None else fn


@_jit
def pdl_prologue(USE_PDL: tl.constexpr):
    """Every kernel's first step under programmatic dependent launch (gemv.py): 1 ("early") lets the
    next kernel launch now, then waits for the previous kernel's results; 2 ("late") only waits, and
    the next kernel launches as this one's programs exit; 0: nothing (launched in stream order)."""
    if USE_PDL == 1:
        gdc_launch_dependents()
    if USE_PDL > 0:
        gdc_wait()                                       # the previous kernel's writes are visible after this


def require_triton(*tensors: torch.Tensor) -> None:
    """Clear errors instead of Triton's: no Triton, or tensors on different devices."""
    if triton is None:
        raise KernelError("the fused decode kernels need Triton, which is not installed.",
                          "pip install triton (CUDA machines), or use the plain torch decode path.")
    if len({t.device for t in tensors}) > 1:
        raise KernelError(f"inputs are on several devices: {sorted({str(t.device) for t in tensors})}.",
                          "move them to one device.")


def check(ok: bool, what: str) -> None:
    if not ok:
        raise KernelError(f"{what}.", "pass tensors in the layout the docstring gives (see kernels/linear.py).")


def check_cache(k_cache, v_cache, slots, pos, M: int, n_head: int, D: int) -> None:
    """One layer's cache (n_slots, n_head, L, D), contiguous last dim; slots and pos (M,)."""
    for name, t in (("k_cache", k_cache), ("v_cache", v_cache)):
        check(t.dim() == 4 and t.shape[1] == n_head and t.shape[3] == D and t.stride(3) == 1,
              f"{name} must be (n_slots, {n_head}, L, {D}) with a contiguous last dim, got {tuple(t.shape)}")
    check(k_cache.shape == v_cache.shape, "k_cache and v_cache must have the same shape")
    check(slots.shape == (M,) and pos.shape == (M,), f"slots and pos must be ({M},)")


def _check_matmul(x: torch.Tensor, w: torch.Tensor, b, *others: torch.Tensor) -> tuple[int, int, int]:
    check(x.dim() == 2 and x.stride(1) == 1, f"x must be (M, K) with a contiguous last dim, got {tuple(x.shape)}")
    check(w.dim() == 2 and w.is_contiguous(), f"w must be a contiguous (N, K) nn.Linear weight, got {tuple(w.shape)}")
    M, K = x.shape
    N = w.shape[0]
    check(w.shape[1] == K, f"w has K = {w.shape[1]}, x has K = {K}")
    check(b is None or (b.shape == (N,) and b.is_contiguous()), f"bias must be ({N},)")
    require_triton(x, w, *([] if b is None else [b]), *others)
    return M, N, K


# ---- kernels: one K loop shared by both matmuls, epilogues for rows, the cache and the residual -----
@_jit
def _matmul_tile(X, W, rm, rn, M, N, sxm, k_lo, K: tl.constexpr, K_CHUNK: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 USE_DOT: tl.constexpr, DOT_PREC: tl.constexpr):
    """(BLOCK_M, BLOCK_N) fp32 tile of x @ w.T over k in [k_lo, k_lo + K_CHUNK). With tl.dot both operands
    go from memory to the tensor cores as they are (nothing computed on them in registers), which lets
    Triton pipeline the loads across steps."""
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    rk = tl.arange(0, BLOCK_K)
    w_rows = W + rn.to(tl.int64)[:, None] * K                                  # (BLOCK_N, 1)
    x_rows = X + rm.to(tl.int64)[:, None] * sxm                                # (BLOCK_M, 1)
    for k0 in range(0, K_CHUNK, BLOCK_K):             # constant trip count: k_lo may be a program id
        kk = k_lo + k0 + rk
        k_ok = kk < K
        a = tl.load(x_rows + kk[None, :], mask=(rm[:, None] < M) & k_ok[None, :], other=0.0)  # (BLOCK_M, BLOCK_K)
        w = tl.load(w_rows + kk[None, :], mask=(rn[:, None] < N) & k_ok[None, :], other=0.0)  # (BLOCK_N, BLOCK_K)
        if USE_DOT:
            acc = tl.dot(a, tl.trans(w), acc, input_precision=DOT_PREC)
        else:
            acc += tl.sum(a.to(tl.float32)[:, None, :] * w[None, :, :].to(tl.float32), axis=2)
    return acc


@_jit
def _layer_norm_kernel(X, G, Bt, Y, M, eps, sxm, sym, K: tl.constexpr, KP: tl.constexpr, BLOCK_M: tl.constexpr,
                       USE_PDL: tl.constexpr):
    """Program (row block): whole rows in registers, two passes in fp32 (exact for large means), one
    rounding to Y's dtype: the values the projection would have fed its tensor cores."""
    pdl_prologue(USE_PDL)
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rk = tl.arange(0, KP)
    ok = (rm[:, None] < M) & (rk[None, :] < K)
    x = tl.load(X + rm.to(tl.int64)[:, None] * sxm + rk[None, :], mask=ok, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=1) / K
    xc = tl.where(ok, x - mean[:, None], 0.0)
    rstd = tl.rsqrt(tl.sum(xc * xc, axis=1) / K + eps)
    g = tl.load(G + rk, mask=rk < K, other=0.0).to(tl.float32)
    beta = tl.load(Bt + rk, mask=rk < K, other=0.0).to(tl.float32)
    y = xc * rstd[:, None] * g[None, :] + beta[None, :]
    tl.store(Y + rm.to(tl.int64)[:, None] * sym + rk[None, :], y.to(Y.dtype.element_ty), mask=ok)


@_jit
def _store_qkv(acc, Q, Kc, Vc, Slots, Pos, rm, rn, M, L, sqm, sk0, sk1, sk2, sv0, sv1, sv2,
               C: tl.constexpr, D: tl.constexpr):
    """Columns [0, C) -> q rows; [C, 2C) -> k_cache[slot, h, pos, d]; [2C, 3C) -> v_cache likewise.
    A position >= L is not stored (memory safety without a host-side check)."""
    m_ok = rm < M
    slot = tl.load(Slots + rm, mask=m_ok, other=0).to(tl.int64)               # (BLOCK_M,)
    pos = tl.load(Pos + rm, mask=m_ok, other=0).to(tl.int64)
    is_q = rn < C
    is_k = (rn >= C) & (rn < 2 * C)
    is_v = (rn >= 2 * C) & (rn < 3 * C)
    tl.store(Q + rm[:, None] * sqm + rn[None, :], acc.to(Q.dtype.element_ty), mask=m_ok[:, None] & is_q[None, :])
    m_ok = m_ok & (pos < L)
    j = tl.where(is_k, rn - C, tl.where(is_v, rn - 2 * C, 0))                 # column inside its third
    h = j // D
    d = j % D
    k_at = slot[:, None] * sk0 + h[None, :] * sk1 + pos[:, None] * sk2 + d[None, :]
    tl.store(Kc + k_at, acc.to(Kc.dtype.element_ty), mask=m_ok[:, None] & is_k[None, :])
    v_at = slot[:, None] * sv0 + h[None, :] * sv1 + pos[:, None] * sv2 + d[None, :]
    tl.store(Vc + v_at, acc.to(Vc.dtype.element_ty), mask=m_ok[:, None] & is_v[None, :])


@_jit
def _argmax_epilogue(acc, Y, Amax, Aidx, rm, rn, M, V, pid_n, P):
    """Per row of the tile: its largest logit among columns < V, as rounded to Y's dtype (the values a
    stored logit row would hold), and the first column holding it -> Amax[m, pid_n], Aidx[m, pid_n]
    (greedy.py reduces the P tiles of a row; the logits themselves are not stored)."""
    a = tl.where((rn < V)[None, :], acc.to(Y.dtype.element_ty).to(tl.float32), float("-inf"))
    mx = tl.max(a, axis=1)                                                     # (BLOCK_M,)
    ix = tl.min(tl.where(a == mx[:, None], rn[None, :], 2147483647), axis=1)   # first index of the max
    tl.store(Amax + rm * P + pid_n, mx, mask=rm < M)
    tl.store(Aidx + rm * P + pid_n, ix, mask=rm < M)


@_jit
def _proj_kernel(X, W, Bias, Y, Kc, Vc, Slots, Pos, Amax, Aidx, M, N, L, V, sxm, sym, sk0, sk1, sk2, sv0, sv1, sv2,
                 K: tl.constexpr, C: tl.constexpr, D: tl.constexpr, HAS_BIAS: tl.constexpr,
                 ACT: tl.constexpr, TO_CACHE: tl.constexpr, ARGMAX: tl.constexpr, BLOCK_M: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, USE_DOT: tl.constexpr,
                 DOT_PREC: tl.constexpr, USE_PDL: tl.constexpr):
    """Program (column block, row block): act(x @ w.T + b) -> Y, or q/k/v (TO_CACHE), or per-row argmax
    partials (ARGMAX); x is layer-normed."""
    pdl_prologue(USE_PDL)
    rm = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)                    # (BLOCK_M,)
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)                    # (BLOCK_N,)
    acc = _matmul_tile(X, W, rm, rn, M, N, sxm, 0, K, K, BLOCK_M, BLOCK_N, BLOCK_K, USE_DOT, DOT_PREC)
    if HAS_BIAS:
        acc += tl.load(Bias + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    if ACT == 1:              # GPT-2 gelu_new: 0.5 a (1 + tanh(u)) = a * sigmoid(2u), stable at both ends
        u = 0.7978845608028654 * (acc + 0.044715 * acc * acc * acc)
        acc = acc * tl.sigmoid(2.0 * u)
    if TO_CACHE:
        _store_qkv(acc, Y, Kc, Vc, Slots, Pos, rm, rn, M, L, sym, sk0, sk1, sk2, sv0, sv1, sv2, C, D)
    elif ARGMAX:
        _argmax_epilogue(acc, Y, Amax, Aidx, rm, rn, M, V, tl.program_id(0), tl.num_programs(0))
    else:
        ok = (rm[:, None] < M) & (rn[None, :] < N)
        tl.store(Y + rm[:, None] * sym + rn[None, :], acc.to(Y.dtype.element_ty), mask=ok)


@_jit
def _residual_epilogue(acc, Bias, R, Y, rm, rn, M, N, srm, sym, HAS_BIAS: tl.constexpr):
    """Y = R + acc (+ bias), rounded once; Y may be R itself (each element read, then written)."""
    ok = (rm[:, None] < M) & (rn[None, :] < N)
    if HAS_BIAS:
        acc += tl.load(Bias + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    r = tl.load(R + rm[:, None] * srm + rn[None, :], mask=ok, other=0.0).to(tl.float32)
    tl.store(Y + rm[:, None] * sym + rn[None, :], (acc + r).to(Y.dtype.element_ty), mask=ok)


@_jit
def _linear_kernel(Hx, W, Bias, R, Y, P, M, N, shm, srm, sym,
                   K: tl.constexpr, K_CHUNK: tl.constexpr, HAS_BIAS: tl.constexpr, SPLIT: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                   USE_DOT: tl.constexpr, DOT_PREC: tl.constexpr, USE_PDL: tl.constexpr):
    """Program (column block, K split, row block): h @ w.T over one K chunk; fp32 partial to P
    (SPLIT) or the finished residual + ... + b to Y."""
    pdl_prologue(USE_PDL)
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)                    # (BLOCK_N,)
    rm = tl.program_id(2) * BLOCK_M + tl.arange(0, BLOCK_M)                    # (BLOCK_M,)
    acc = _matmul_tile(Hx, W, rm, rn, M, N, shm, tl.program_id(1) * K_CHUNK, K, K_CHUNK,
                       BLOCK_M, BLOCK_N, BLOCK_K, USE_DOT, DOT_PREC)           # (BLOCK_M, BLOCK_N)
    if SPLIT:
        at = (tl.program_id(1) * M + rm[:, None]) * N + rn[None, :]            # P (split, M, N)
        tl.store(P + at, acc, mask=(rm[:, None] < M) & (rn[None, :] < N))
    else:
        _residual_epilogue(acc, Bias, R, Y, rm, rn, M, N, srm, sym, HAS_BIAS)


@_jit
def _splitk_reduce_kernel(P, Bias, R, Y, M, N, srm, sym, SPLIT_K: tl.constexpr, HAS_BIAS: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, USE_PDL: tl.constexpr):
    """Sum the K splits in a fixed order (deterministic, no atomics), then bias and residual."""
    pdl_prologue(USE_PDL)
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    ok = (rm[:, None] < M) & (rn[None, :] < N)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for s in range(SPLIT_K):
        acc += tl.load(P + (s * M + rm[:, None]) * N + rn[None, :], mask=ok, other=0.0)
    _residual_epilogue(acc, Bias, R, Y, rm, rn, M, N, srm, sym, HAS_BIAS)


@_jit
def _embed_kernel(Tok, Pos, Rows, PosOut, Wte, Wpe, Y, last_pos, C, s_te, s_pe, sym, BLOCK_C: tl.constexpr,
                  GATHER: tl.constexpr, USE_PDL: tl.constexpr):
    """Program (row, column block): wte[tok] + wpe[pos] in fp32, one rounding. GATHER (greedy.py): row m's
    token and position are Tok[Rows[m]] and min(Pos[Rows[m]], last_pos), the position also to PosOut[m]."""
    pdl_prologue(USE_PDL)
    m = tl.program_id(0)
    rc = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    ok = rc < C
    if GATHER:
        slot = tl.load(Rows + m).to(tl.int64)
        tok = tl.load(Tok + slot).to(tl.int64)
        pos = tl.minimum(tl.load(Pos + slot).to(tl.int64), last_pos)
        if tl.program_id(1) == 0:
            tl.store(PosOut + m, pos)
    else:
        tok = tl.load(Tok + m).to(tl.int64)
        pos = tl.load(Pos + m).to(tl.int64)
    e = tl.load(Wte + tok * s_te + rc, mask=ok, other=0.0).to(tl.float32)
    e += tl.load(Wpe + pos * s_pe + rc, mask=ok, other=0.0).to(tl.float32)
    tl.store(Y + m * sym + rc, e.to(Y.dtype.element_ty), mask=ok)


# ---- launchers ------------------------------------------------------------------------------------
def gemv_rows(M: int, cfg) -> bool:
    """gemv.py's kernel runs M rows: one-row programs (block_m 1, no tl.dot), at most GEMV_ROWS rows."""
    return not cfg.use_dot and cfg.block_m == 1 and M <= _config.GEMV_ROWS


def _dot_prec(w: torch.Tensor) -> str:
    return "ieee" if w.dtype == torch.float32 else "tf32"      # fp32 stays exact; fp16/bf16 ignore it


def _pdl(pdl) -> dict:
    """Launch options and the kernels' flag for programmatic dependent launch (gemv.py): pdl False,
    True (the next kernel launches at once: ``pdl_prologue`` 1) or "late" (as this one's programs exit: 2)."""
    if not pdl:
        return {"USE_PDL": 0}
    return {"USE_PDL": 2 if pdl == "late" else 1, "launch_pdl": True}


def _cache_args(cache, y) -> tuple:
    """The TO_CACHE epilogue's arguments: (k, v, slots, pos, C, D, L, six strides); placeholders without a cache."""
    if cache is None:
        return y, y, y, y, 0, 1, 0, (0,) * 6
    kc, vc = cache[0], cache[1]
    return (*cache, kc.shape[2], (*kc.stride()[:3], *vc.stride()[:3]))


def _launch_ln_linear(x, ln_w, ln_b, eps, w, b, y, cfg, act=0, cache=None, argmax=None, pdl=False) -> None:
    """cache: None, or (k_cache, v_cache, slots, pos, C, D) for the TO_CACHE epilogue; argmax: None, or
    (amax, aidx, V) for the ARGMAX epilogue ((M, column blocks) each; y only gives the logits' dtype)."""
    M, K = x.shape
    if gemv_rows(M, cfg):                                 # a few rows: weights fetched before the wait
        from .gemv import STORE, TO_CACHE, launch_gemv
        launch_gemv(x, w, y, cfg, TO_CACHE if cache is not None else STORE, ln=(ln_w, ln_b), eps=eps, b=b,
                    act=act, cache=cache, argmax=argmax, pdl=pdl)
        return
    xn = torch.empty_like(x)                              # several rows: layer norm first, once per row
    KP = _pow2(K)
    rows = max(1, 4096 // KP)
    _layer_norm_kernel[(_cdiv(M, rows),)](x, ln_w, ln_b, xn, M, float(eps), x.stride(0), xn.stride(0),
                                          K=K, KP=KP, BLOCK_M=rows, num_warps=4, **_pdl(pdl))
    N = w.shape[0]
    kc, vc, slots, pos, C, D, L, strides = _cache_args(cache, y)
    amax, aidx, V = argmax if argmax is not None else (y, y, 0)
    grid = (_cdiv(N, cfg.block_n), _cdiv(M, cfg.block_m))
    _proj_kernel[grid](
        xn, w, b if b is not None else w, y, kc, vc, slots, pos, amax, aidx, M, N, L, V, xn.stride(0), y.stride(0),
        *strides, K=K, C=C, D=D, HAS_BIAS=b is not None, ACT=act, TO_CACHE=cache is not None,
        ARGMAX=argmax is not None,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, USE_DOT=cfg.use_dot,
        DOT_PREC=_dot_prec(w), num_warps=cfg.num_warps, num_stages=cfg.num_stages, **_pdl(pdl))


def ln_linear(x, ln_w, ln_b, eps: float, w, b=None, act=None, out=None, config=None, pdl=False) -> torch.Tensor:
    """act(layer_norm(x) @ w.T + b). x (M, K); ln_w, ln_b (K,); w (N, K) contiguous; b (N,) or None;
    act None or "gelu_tanh"; out (M, N) or None -> (M, N) in x's dtype. pdl: launched with programmatic
    dependent launch (Hopper; gemv.py): every kernel of a PDL chain must be launched with it."""
    M, N, K = _check_matmul(x, w, b, ln_w, ln_b, *([] if out is None else [out]))
    check(ln_w.shape == (K,) and ln_b.shape == (K,), f"ln_w and ln_b must be ({K},)")
    check(act in ACTS, f"act must be one of {list(ACTS)}, got {act!r}")
    y = out if out is not None else x.new_empty(M, N)
    check(y.shape == (M, N) and y.stride(1) == 1, f"out must be ({M}, {N}) with a contiguous last dim")
    cfg = as_config(config, default_config("ln_linear", M, N, K))
    _launch_ln_linear(x, ln_w, ln_b, eps, w, b, y, cfg, act=ACTS[act], pdl=pdl)
    return y


def qkv_to_cache(x, ln_w, ln_b, eps: float, w, b, k_cache, v_cache, slots, pos, n_head: int,
                 config=None, pdl=False) -> torch.Tensor:
    """q of layer_norm(x) @ w.T + b (w (3C, C), q | k | v thirds, heads of D = C // n_head inside
    each); k and v rows are stored at k_cache[slots[m], h, pos[m], :] (v likewise), nothing else is
    written (a pos[m] >= L is dropped, not checked on the host). k_cache, v_cache (n_slots, H, L, D)
    with any leading strides and a contiguous last dim; slots, pos (M,) integer -> q (M, C)."""
    M, N, K = _check_matmul(x, w, b, ln_w, ln_b, k_cache, v_cache, slots, pos)
    C = K
    check(N == 3 * C and C % n_head == 0, f"w must be (3C, C) with C divisible by n_head, got {tuple(w.shape)}")
    check(ln_w.shape == (C,) and ln_b.shape == (C,), f"ln_w and ln_b must be ({C},)")
    D = C // n_head
    check_cache(k_cache, v_cache, slots, pos, M, n_head, D)
    q = x.new_empty(M, C)
    cfg = as_config(config, default_config("ln_linear", M, N, K))
    _launch_ln_linear(x, ln_w, ln_b, eps, w, b, q, cfg, cache=(k_cache, v_cache, slots, pos, C, D), pdl=pdl)
    return q


def linear_residual(h, w, b, residual, out=None, config=None, pdl=False) -> torch.Tensor:
    """residual + h @ w.T + b. h (M, K); w (N, K); b (N,) or None; residual (M, N); out (M, N), may be
    residual itself (in place). With split > 1: fp32 partials per K chunk, summed in a fixed order by a
    second kernel (deterministic; no atomics) -> (M, N) in residual's dtype."""
    M, N, K = _check_matmul(h, w, b, residual, *([] if out is None else [out]))
    check(residual.shape == (M, N) and residual.stride(1) == 1, f"residual must be ({M}, {N})")
    y = out if out is not None else torch.empty_like(residual)
    check(y.shape == (M, N) and y.stride(1) == 1, f"out must be ({M}, {N}) with a contiguous last dim")
    cfg = as_config(config, default_config("linear_residual", M, N, K))
    bias = b if b is not None else w
    if gemv_rows(M, cfg):                                 # a few rows: weights fetched before the wait
        from .gemv import PARTIAL, RESIDUAL, launch_gemv
        split = cfg.split
        part = torch.empty(split, M, N, dtype=torch.float32, device=h.device) if split > 1 else y
        launch_gemv(h, w, part, cfg, PARTIAL if split > 1 else RESIDUAL, b=b, residual=residual, split=split,
                    pdl=pdl)
    else:
        chunk = _cdiv(_cdiv(K, cfg.split), cfg.block_k) * cfg.block_k          # K per split, whole steps
        split = _cdiv(K, chunk)
        part = torch.empty(split, M, N, dtype=torch.float32, device=h.device) if split > 1 else y
        grid = (_cdiv(N, cfg.block_n), split, _cdiv(M, cfg.block_m))
        _linear_kernel[grid](h, w, bias, residual, y, part, M, N, h.stride(0), residual.stride(0), y.stride(0),
                             K=K, K_CHUNK=chunk, HAS_BIAS=b is not None, SPLIT=split > 1,
                             BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
                             USE_DOT=cfg.use_dot, DOT_PREC=_dot_prec(w),
                             num_warps=cfg.num_warps, num_stages=cfg.num_stages, **_pdl(pdl))
    if split > 1:
        rbm, rbn = min(_pow2(M), 4), 256
        _splitk_reduce_kernel[(_cdiv(N, rbn), _cdiv(M, rbm))](
            part, bias, residual, y, M, N, residual.stride(0), y.stride(0),
            SPLIT_K=split, HAS_BIAS=b is not None, BLOCK_M=rbm, BLOCK_N=rbn, num_warps=4, **_pdl(pdl))
    return y


def embed(tok, pos, wte, wpe, out=None, config=None, pdl=False) -> torch.Tensor:
    """wte[tok] + wpe[pos]. tok, pos (M,) integer; wte (V, C), wpe (P, C), last dim contiguous
    -> (M, C) in wte's dtype. Ids are not range-checked here (that would need a host sync)."""
    M = tok.shape[0]
    C = wte.shape[1]
    check(tok.dim() == 1 and pos.shape == (M,), "tok and pos must both be (M,)")
    check(wte.stride(1) == 1 and wpe.dim() == 2 and wpe.shape[1] == C and wpe.stride(1) == 1,
          f"wte (V, C) and wpe (P, C) must share C = {C} with contiguous rows")
    require_triton(tok, pos, wte, wpe)
    y = out if out is not None else wte.new_empty(M, C)
    cfg = as_config(config, default_config("embed", M, C, 0))
    _embed_kernel[(M, _cdiv(C, cfg.block_n))](tok, pos, tok, tok, wte, wpe, y, 0, C, wte.stride(0), wpe.stride(0),
                                              y.stride(0), BLOCK_C=cfg.block_n, GATHER=False,
                                              num_warps=cfg.num_warps, **_pdl(pdl))
    return y
