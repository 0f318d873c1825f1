"""The fused decode kernels (models/kernels) against float64 references, run by Triton's interpreter.

Each ``test_*`` that takes the ``interpreted`` fixture reports its ``check_*``, run in TRITON_INTERPRET=1
child Pythons (``interpreter.py`` says why and how). Config rules and argument checks launch no kernel
and run here. The caches are poisoned with NaN wherever nothing was written, so a write to the wrong
place or a read past a row's length shows up as a mismatch or a NaN.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton", reason="the fused decode kernels need triton (pip install triton)")
from interpreter import run_interpreted, tiny_pair  # noqa: E402

DTYPES = ["float32", "float16"]
# every M in {1, 3, 8, 17} (17: the tl.dot path) with both dtypes, every (dtype, C) with two M; C 64 and
# 128 with n_head 4: D = 16 and 32; bfloat16 once (no tl.dot: see _configs). The full cross product
# doubles the interpreter's CPU time and exercises no other code path.
CASES = [("float32", 1, 64), ("float32", 2, 128), ("float32", 8, 64), ("float32", 17, 128),
         ("float16", 1, 128), ("float16", 3, 64), ("float16", 8, 128), ("float16", 17, 64), ("bfloat16", 3, 64)]
TOL = {torch.float32: dict(rtol=1e-5, atol=2e-5), torch.float16: dict(rtol=1e-2, atol=1e-2),
       torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}
EPS = 1e-5
NAN = float("nan")


# ---- float64 references -----------------------------------------------------------------------------
def ln_linear_reference(x, ln_w, ln_b, eps, w, b=None, act=None):
    h = F.layer_norm(x.double(), x.shape[-1:], ln_w.double(), ln_b.double(), eps) @ w.double().T
    h = h if b is None else h + b.double()
    return F.gelu(h, approximate="tanh") if act == "gelu_tanh" else h


def attention_reference(q, k_cache, v_cache, slots, pos, n_head, scale):
    out = []
    for m in range(q.shape[0]):                                   # row m: cache row slots[m], 0..pos[m]
        n = int(pos[m]) + 1
        k = k_cache[int(slots[m]), :, :n].double()                 # (H, n, D)
        v = v_cache[int(slots[m]), :, :n].double()
        qm = q[m].double().view(n_head, 1, -1)                     # (H, 1, D)
        p = torch.softmax((qm @ k.transpose(1, 2)) * scale, dim=-1)
        out.append((p @ v).reshape(-1))
    return torch.stack(out)                                        # (M, C)


def linear_residual_reference(h, w, b, residual):
    return residual.double() + h.double() @ w.double().T + (0 if b is None else b.double())


# ---- inputs -----------------------------------------------------------------------------------------
def _rand(*shape, dtype, scale=1.0, shift=0.0):
    return (torch.randn(*shape, dtype=torch.float64) * scale + shift).to(dtype)


def _close(actual, expected, dtype, what):
    torch.testing.assert_close(actual.double(), expected.double(), **TOL[dtype], equal_nan=True,
                               msg=lambda m: f"{what}: {m}")


def _plain(dt, config=None):
    """The interpreter's tl.dot multiplies bfloat16 bit patterns as integers, and the defaults use tl.dot
    from 2 rows: bfloat16 runs the register path instead (tl.dot in bfloat16 is compiled for sm_90)."""
    if dt != torch.bfloat16:
        return config
    return dict(config or {}, use_dot=False, block_m=4, block_n=16, block_k=64)


def _configs(dt, *configs):
    return [_plain(dt, c) for c in configs if dt != torch.bfloat16 or not (c or {}).get("use_dot")]


def _rows(M: int, L: int, n_slots: int):
    """Distinct cache rows that are not 0..M-1, and positions covering 0 and L - 1."""
    slots = torch.cat([torch.tensor([n_slots - 1]), torch.randperm(n_slots - 2)[:M - 1] + 1])  # never row 0
    pos = torch.randint(0, L, (M,))
    pos[0] = L - 1
    if M > 1:
        pos[1] = 0
    return slots.to(torch.int64), pos.to(torch.int64)


def _poisoned_cache(n_slots, H, L, D, dtype, slots, pos):
    """(2, n_slots, H, L, D) NaN buffers (two layers); layer 1 holds values at positions < pos[m]."""
    K, V = (torch.full((2, n_slots, H, L, D), NAN, dtype=dtype) for _ in range(2))
    for m in range(len(slots)):
        n = int(pos[m]) + 1
        K[1, slots[m], :, :n] = _rand(H, n, D, dtype=dtype)
        V[1, slots[m], :, :n] = _rand(H, n, D, dtype=dtype)
    return K, V


# ---- checks (run in the interpreter child) ----------------------------------------------------------
def check_ln_linear(dtype, M, C):
    from dynashape.models import kernels
    dt = getattr(torch, dtype)
    torch.manual_seed(M * 1000 + C)
    x = _rand(M, C, dtype=dt, scale=3.0, shift=5.0)               # a large mean: LayerNorm stats matter
    ln_w, ln_b = _rand(C, dtype=dt), _rand(C, dtype=dt, scale=0.1)
    w, b = _rand(4 * C, C, dtype=dt, scale=C ** -0.5), _rand(4 * C, dtype=dt)
    ref = ln_linear_reference(x, ln_w, ln_b, EPS, w, b, "gelu_tanh")
    # wide tiles keep the interpreter's program count small; the second runs the path M's default skips
    other = (dict(block_m=16, block_n=64, block_k=32, use_dot=True) if M <= 16
             else dict(block_m=32, block_n=32, block_k=32, use_dot=False))
    for cfg in _configs(dt, dict(block_n=64), other):
        _close(kernels.ln_linear(x, ln_w, ln_b, EPS, w, b, act="gelu_tanh", config=cfg), ref, dt, f"c_fc {cfg}")
    w2 = _rand(C + 24, C, dtype=dt, scale=C ** -0.5)              # lm_head: no bias, N not a block multiple
    out = torch.full((M, C + 24), NAN, dtype=dt)
    y = kernels.ln_linear(x, ln_w, ln_b, EPS, w2, out=out, config=_plain(dt))   # the default config
    assert y is out
    _close(y, ln_linear_reference(x, ln_w, ln_b, EPS, w2), dt, "lm_head")


def check_qkv_to_cache(dtype, M, C, n_head=4, config=None):
    from dynashape.models import kernels
    dt = getattr(torch, dtype)
    torch.manual_seed(M * 1000 + C + 1)
    L, n_slots = 24, M + 5
    slots, pos = _rows(M, L, n_slots)
    x, ln_w, ln_b = _rand(M, C, dtype=dt, shift=1.0), _rand(C, dtype=dt), _rand(C, dtype=dt, scale=0.1)
    w, b = _rand(3 * C, C, dtype=dt, scale=C ** -0.5), _rand(3 * C, dtype=dt)
    K, V = (torch.full((2, n_slots, n_head, L, C // n_head), NAN, dtype=dt) for _ in range(2))
    q = kernels.qkv_to_cache(x, ln_w, ln_b, EPS, w, b, K[1], V[1], slots, pos, n_head, config=_plain(dt, config))
    ref = ln_linear_reference(x, ln_w, ln_b, EPS, w, b)            # (M, 3C)
    _close(q, ref[:, :C], dt, "q")
    want_k, want_v = (torch.full_like(K, NAN) for _ in range(2))
    for m in range(M):                                             # exactly (slots[m], :, pos[m], :) written
        want_k[1, slots[m], :, pos[m]] = ref[m, C:2 * C].view(n_head, -1).to(dt)
        want_v[1, slots[m], :, pos[m]] = ref[m, 2 * C:].view(n_head, -1).to(dt)
    _close(K, want_k, dt, "k_cache")
    _close(V, want_v, dt, "v_cache")


def check_decode_attention(dtype, M, C, n_head=4):
    from dynashape.models import kernels
    dt = getattr(torch, dtype)
    torch.manual_seed(M * 1000 + C + 2)
    L, n_slots = 40, M + 5
    slots, pos = _rows(M, L, n_slots)
    K, V = _poisoned_cache(n_slots, n_head, L, C // n_head, dt, slots, pos)
    q, scale = _rand(M, C, dtype=dt), (C // n_head) ** -0.5
    ref = attention_reference(q, K[1], V[1], slots, pos, n_head, scale)
    # default (one pass here); 3 splits of 16-position blocks: short rows leave splits empty; one split of
    # 8-position blocks: up to 5 steps, each loading the next block (past a row's length: masked, the NaN
    # poison stays unread)
    for cfg in (None, dict(split=3, block_k=16), dict(split=1, block_k=8)) if M * n_head <= 32 else (None,):
        out = kernels.decode_attention(q, K[1], V[1], slots, pos, n_head, scale, config=cfg)
        assert torch.isfinite(out.double()).all(), f"NaN poison leaked with config {cfg}"
        _close(out, ref, dt, f"attention {cfg}")


def check_linear_residual(dtype, M, C):
    from dynashape.models import kernels
    dt = getattr(torch, dtype)
    torch.manual_seed(M * 1000 + C + 3)
    other = (dict(block_m=16, block_n=32, block_k=16, split=3, use_dot=True) if M <= 16
             else dict(block_m=32, block_n=32, block_k=32, split=3, use_dot=False))
    for K, configs in ((4 * C, _configs(dt, None, other)), (C, _configs(dt, dict(block_n=64, split=1)))):
        h, w, b = _rand(M, K, dtype=dt), _rand(C, K, dtype=dt, scale=K ** -0.5), _rand(C, dtype=dt)
        residual = _rand(M, C, dtype=dt)
        ref = linear_residual_reference(h, w, b, residual)
        for cfg in configs:                                        # default: split-K, two stages
            _close(kernels.linear_residual(h, w, b, residual, config=cfg), ref, dt, f"K={K} {cfg}")
        kernels.linear_residual(h, w, None, residual, out=residual, config=configs[-1])   # in place, no bias
        _close(residual, ref - b.double(), dt, f"K={K} in place")


def check_embed(dtype, M, C):
    from dynashape.models import kernels
    dt = getattr(torch, dtype)
    torch.manual_seed(M * 1000 + C + 4)
    wte, wpe = _rand(50, C, dtype=dt), _rand(30, C, dtype=dt)
    tok, pos = torch.randint(0, 50, (M,)), torch.randint(0, 30, (M,))
    _close(kernels.embed(tok, pos, wte, wpe), wte.double()[tok] + wpe.double()[pos], dt, "embed")


def check_odd_head_dim(dtype):
    """D = 24 (not a power of two): padded in registers, masked on every load and store; 64-column
    tiles that straddle the q | k | v thirds and the heads."""
    check_qkv_to_cache(dtype, 3, 96, n_head=4)
    check_qkv_to_cache(dtype, 3, 96, n_head=4, config=dict(block_n=64))
    check_decode_attention(dtype, 3, 96, n_head=4)


def check_decode_layer(dtype, M=3, C=64, H=4, L=16):
    """One GPT-2 block decode step from the five launches against the float64 math of the block."""
    from dynashape.models import kernels
    dt = getattr(torch, dtype)
    torch.manual_seed(5)
    p = {n: _rand(*s, dtype=dt, scale=sc) for n, s, sc in [
        ("ln1_w", (C,), 1), ("ln1_b", (C,), .1), ("attn_w", (3 * C, C), C ** -.5), ("attn_b", (3 * C,), .1),
        ("proj_w", (C, C), C ** -.5), ("proj_b", (C,), .1), ("ln2_w", (C,), 1), ("ln2_b", (C,), .1),
        ("fc_w", (4 * C, C), C ** -.5), ("fc_b", (4 * C,), .1), ("mproj_w", (C, 4 * C), (4 * C) ** -.5),
        ("mproj_b", (C,), .1)]}
    slots, pos = _rows(M, L, M + 3)
    K, V = _poisoned_cache(M + 3, H, L, C // H, dt, slots, pos - 1)   # history 0..pos-1; pos is written now
    x = _rand(M, C, dtype=dt)
    ref_k, ref_v = K[1].double().clone(), V[1].double().clone()
    qkv = ln_linear_reference(x, p["ln1_w"], p["ln1_b"], EPS, p["attn_w"], p["attn_b"])
    for m in range(M):
        ref_k[slots[m], :, pos[m]] = qkv[m, C:2 * C].view(H, -1)
        ref_v[slots[m], :, pos[m]] = qkv[m, 2 * C:].view(H, -1)
    a = attention_reference(qkv[:, :C], ref_k, ref_v, slots, pos, H, (C // H) ** -0.5)
    x1 = linear_residual_reference(a, p["proj_w"], p["proj_b"], x)
    f = ln_linear_reference(x1, p["ln2_w"], p["ln2_b"], EPS, p["fc_w"], p["fc_b"], "gelu_tanh")
    ref = linear_residual_reference(f, p["mproj_w"], p["mproj_b"], x1)

    q = kernels.qkv_to_cache(x, p["ln1_w"], p["ln1_b"], EPS, p["attn_w"], p["attn_b"], K[1], V[1], slots, pos, H)
    a = kernels.decode_attention(q, K[1], V[1], slots, pos, H, (C // H) ** -0.5)
    x = kernels.linear_residual(a, p["proj_w"], p["proj_b"], x)
    f = kernels.ln_linear(x, p["ln2_w"], p["ln2_b"], EPS, p["fc_w"], p["fc_b"], act="gelu_tanh")
    kernels.linear_residual(f, p["mproj_w"], p["mproj_b"], x, out=x)
    _close(x, ref, dt, "block output")


def check_fused_engine(dtype):
    """The lean model's decode on the fused kernels (models/kernels/decode.py) against its torch decode:
    a perturbed random:tiny prefilled into scattered slots, then every decode step's logits."""
    dt = getattr(torch, dtype)
    ref, fused = tiny_pair(0, dtype, kernels="fused")
    g = torch.Generator().manual_seed(0)
    (k1, v1), (k2, v2) = ref.new_cache(6, 33), fused.new_cache(6, 33)
    idx = torch.randint(0, 1000, (3, 7), generator=g)
    last, slots = torch.tensor([6, 0, 4]), torch.tensor([5, 0, 2])
    with torch.no_grad():
        a, b = ref.prefill(idx, last, slots, k1, v1), fused.prefill(idx, last, slots, k2, v2)
        tok, pos = a.argmax(-1), last + 1
        for _ in range(6):
            a, b = ref.decode(tok, pos, slots, k1, v1), fused.decode(tok, pos, slots, k2, v2)
            assert b.shape == (3, 1000)                                # the padding columns are cut
            _close(b, a, dt, f"logits at positions {pos.tolist()}")
            tok, pos = a.argmax(-1), pos + 1
    for layer in range(2):                                            # the same cache, written in place
        _close(k2[layer], k1[layer], dt, "keys")


def check_gpt2_sized(dtype, M=2, C=768, H=12, L=64):
    """gpt2's widths (K up to 3072, 12 heads of 64); wide tiles keep the interpreter's programs few."""
    from dynashape.models import kernels
    dt = getattr(torch, dtype)
    torch.manual_seed(6)
    x, ln_w, ln_b = _rand(M, C, dtype=dt), _rand(C, dtype=dt), _rand(C, dtype=dt, scale=0.1)
    w, b = _rand(3 * C, C, dtype=dt, scale=C ** -0.5), _rand(3 * C, dtype=dt)
    slots, pos = _rows(M, L, M + 2)
    K, V = _poisoned_cache(M + 2, H, L, C // H, dt, slots, pos)
    q = kernels.qkv_to_cache(x, ln_w, ln_b, EPS, w, b, K[1], V[1], slots, pos, H, config=dict(block_n=64))
    _close(q, ln_linear_reference(x, ln_w, ln_b, EPS, w, b)[:, :C], dt, "q")
    a = kernels.decode_attention(q, K[1], V[1], slots, pos, H, 0.125)
    _close(a, attention_reference(q, K[1], V[1], slots, pos, H, 0.125), dt, "attention")
    h, w2, b2 = _rand(M, 4 * C, dtype=dt), _rand(C, 4 * C, dtype=dt, scale=(4 * C) ** -.5), _rand(C, dtype=dt)
    y = kernels.linear_residual(h, w2, b2, x, config=dict(block_n=64, split=2))
    _close(y, linear_residual_reference(h, w2, b2, x), dt, "c_proj")


@pytest.fixture(scope="module")
def interpreted(request):
    """Every selected check of this module, run in TRITON_INTERPRET=1 children before the first test reports."""
    return run_interpreted(request.session, __file__)


# ---- tests: each reports its check from the child ---------------------------------------------------
grid = pytest.mark.parametrize("dtype,M,C", CASES)


@grid
def test_ln_linear(interpreted, request, dtype, M, C):
    interpreted.assert_passed(request.node)


@grid
def test_qkv_to_cache(interpreted, request, dtype, M, C):
    interpreted.assert_passed(request.node)


@grid
def test_decode_attention(interpreted, request, dtype, M, C):
    interpreted.assert_passed(request.node)


@grid
def test_linear_residual(interpreted, request, dtype, M, C):
    interpreted.assert_passed(request.node)


@pytest.mark.parametrize("dtype,M,C", [("float32", 3, 64), ("float16", 17, 128)])
def test_embed(interpreted, request, dtype, M, C):
    interpreted.assert_passed(request.node)


@pytest.mark.parametrize("dtype", DTYPES)
def test_odd_head_dim(interpreted, request, dtype):
    interpreted.assert_passed(request.node)


@pytest.mark.parametrize("dtype", DTYPES)
def test_decode_layer(interpreted, request, dtype):
    interpreted.assert_passed(request.node)


@pytest.mark.parametrize("dtype", ["float32"])
def test_fused_engine(interpreted, request, dtype):
    interpreted.assert_passed(request.node)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float16"])
def test_gpt2_sized(interpreted, request, dtype):
    interpreted.assert_passed(request.node)


# ---- in-process: rules and argument checks (no kernel launch) --------------------------------------
GPT2_SHAPES = [(768, 12), (1600, 25)]          # gpt2, gpt2-xl


@pytest.mark.parametrize("M", [1, 2, 8, 16, 17, 64])
@pytest.mark.parametrize("C,H", GPT2_SHAPES)
def test_default_configs_follow_the_h100_sweep(M, C, H):
    """The rules the sweeps and A/Bs chose: up to 2 rows in registers with narrow column tiles (gemv.py),
    up to 16 rows in 16-row tl.dot tiles, more in 64-row tiles for c_fc and the vocabulary, mlp.c_proj's
    long K split in 4 (not in gemv.py: 4 columns and 8 warps there), attention splits only while rows x
    heads are few."""
    from dynashape.models.kernels import default_config
    for N, K in ((3 * C, C), (4 * C, C), (50304, C)):
        cfg = default_config("ln_linear", M, N, K)
        assert cfg.use_dot == (M > 2) and cfg.block_m == (1 if M <= 2 else 16 if M <= 16 or N == 3 * C else 64)
        assert -(-N // cfg.block_n) * -(-M // cfg.block_m) >= 36                   # enough programs to stream
    for N, K, split in ((C, C, 1), (C, 4 * C, 1 if M <= 2 else 4)):
        cfg = default_config("linear_residual", M, N, K)
        assert cfg.split == split and cfg.block_k <= -(-K // cfg.split)
        assert cfg.block_n == (32 if M > 2 else 4 if K == 4 * C or C < 1024 else 2)
        assert cfg.num_warps == (8 if M <= 2 and K == 4 * C else cfg.num_warps)
    for L in (64, 1024):
        cfg = default_config("attention", M, H, L)
        assert cfg.block_k == min(32 if M == 1 else 64 if M <= 8 or M * H >= 512 else 128, L) and cfg.split <= 32
        assert cfg.split == (1 if M * H >= 512 else max(1, min(-(-264 // (M * H)), -(-L // cfg.block_k), 32)))


def test_config_overrides_and_refusals():
    from dynashape.models.kernels import KernelConfig, KernelError, default_config
    from dynashape.models.kernels.linear import as_config
    base = default_config("ln_linear", 1, 2304, 768)
    assert as_config(dict(block_n=64), base) == KernelConfig(**{**base.__dict__, "block_n": 64})
    with pytest.raises(KernelError, match="use_dot"):
        as_config(dict(use_dot=True, block_m=1), base)
    with pytest.raises(KernelError, match="unknown kernel kind"):
        default_config("conv", 1, 1, 1)


def test_bad_layouts_are_refused_before_launch():
    from dynashape.models import kernels
    x, g = torch.zeros(2, 64), torch.zeros(64)
    with pytest.raises(kernels.KernelError, match="w has K = 32"):
        kernels.ln_linear(x, g, g, EPS, torch.zeros(8, 32))
    with pytest.raises(kernels.KernelError, match="contiguous"):
        kernels.ln_linear(x, g, g, EPS, torch.zeros(64, 8).T)
    with pytest.raises(kernels.KernelError, match="act"):
        kernels.ln_linear(x, g, g, EPS, torch.zeros(8, 64), act="relu")
    cache, rows = torch.zeros(4, 4, 16, 8), torch.zeros(2, dtype=torch.int64)   # D 8, but C 64 / 4 = 16
    with pytest.raises(kernels.KernelError, match="k_cache must be"):
        kernels.decode_attention(x, cache, cache, rows, rows, 4, 0.25)
    with pytest.raises(kernels.KernelError, match="k_cache must be"):
        kernels.qkv_to_cache(x, g, g, EPS, torch.zeros(192, 64), None, cache, cache, rows, rows, 4)
    with pytest.raises(kernels.KernelError, match="residual"):
        kernels.linear_residual(x, torch.zeros(8, 64), None, torch.zeros(2, 9))


def test_without_triton_the_kernels_say_so(monkeypatch):
    from dynashape.models import kernels
    from dynashape.models.kernels import linear
    monkeypatch.setattr(linear, "triton", None)
    monkeypatch.setattr(kernels, "triton", None)
    assert not kernels.available("cuda")
    ids = torch.zeros(1, dtype=torch.int64)
    with pytest.raises(kernels.KernelError, match="need Triton"):
        kernels.embed(ids, ids, torch.zeros(4, 8), torch.zeros(4, 8))


def test_available(monkeypatch):
    from dynashape.models import kernels
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert kernels.available("cuda") and not kernels.available("cpu")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert kernels.available("cpu")
