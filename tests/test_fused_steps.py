"""The fused prefill (kernels/prefill.py, ``fused_prefill``) and the fused greedy step (kernels/greedy.py,
``fused_decode_greedy``) against float64 references and the torch ops, run by Triton's interpreter
(``interpreter.py``). The caches are poisoned with NaN outside the prompts' positions, so a read past
a prompt or a write to the wrong slot shows up."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="the fused kernels need triton (pip install triton)")
from interpreter import run_interpreted, tiny_pair  # noqa: E402

TOL = {torch.float32: dict(rtol=1e-5, atol=2e-5), torch.float16: dict(rtol=1e-2, atol=1e-2)}
NAN = float("nan")


def _close(actual, expected, dtype, what):
    torch.testing.assert_close(actual.double(), expected.double(), **TOL[dtype], equal_nan=True,
                               msg=lambda m: f"{what}: {m}")


def causal_reference(q, K, V, slots, T, H, scale):
    """q (B*T, C); K, V (n_slots, H, L, D) -> (B*T, C) in float64, causal over positions 0..T-1."""
    B, C = q.shape[0] // T, q.shape[1]
    out = torch.empty(B, T, C, dtype=torch.float64)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for b in range(B):
        qb = q.view(B, T, H, -1)[b].double().transpose(0, 1)              # (H, T, D)
        k, v = K[slots[b], :, :T].double(), V[slots[b], :, :T].double()  # (H, T, D)
        s = (qb @ k.transpose(1, 2) * scale).masked_fill(~mask, float("-inf"))
        out[b] = (torch.softmax(s, -1) @ v).transpose(0, 1).reshape(T, C)
    return out.view(B * T, C)


# ---- checks (run in the interpreter child) ----------------------------------------------------------
def check_prefill_attention(dtype, B, T, C, H):
    from dynashape.models.kernels.prefill import prefill_attention
    dt = getattr(torch, dtype)
    torch.manual_seed(B * 100 + T)
    D, L, n_slots = C // H, T + 5, B + 3
    slots = torch.randperm(n_slots)[:B]
    K, V = (torch.full((n_slots, H, L, D), NAN, dtype=dt) for _ in range(2))
    for b in range(B):                                                    # only 0..T-1 of each slot is real
        K[slots[b], :, :T] = torch.randn(H, T, D).to(dt)
        V[slots[b], :, :T] = torch.randn(H, T, D).to(dt)
    q = torch.randn(B * T, C).to(dt)
    ref = causal_reference(q, K, V, slots, T, H, D ** -0.5)
    for cfg in (None, dict(block_m=16, block_n=32)):
        out = prefill_attention(q, K, V, slots, T, H, D ** -0.5, config=cfg)
        assert torch.isfinite(out.double()).all(), f"NaN poison leaked with config {cfg}"
        _close(out, ref, dt, f"prefill attention {cfg}")


def check_fused_prefill(dtype):
    """random:tiny (perturbed) prefilled by the fused kernels and by the torch ops into scattered slots:
    the same logits at each row's last real token, the same cache, then the same decode steps."""
    dt = getattr(torch, dtype)
    ref, fused = tiny_pair(1, dtype, kernels="fused", prefill="fused")
    g = torch.Generator().manual_seed(1)
    (k1, v1), (k2, v2) = ref.new_cache(6, 40), fused.new_cache(6, 40)
    idx = torch.randint(0, 1000, (3, 21), generator=g)                    # 21: not a multiple of the tiles
    last, slots = torch.tensor([20, 0, 9]), torch.tensor([5, 0, 2])
    with torch.no_grad():
        a, b = ref.prefill(idx, last, slots, k1, v1), fused.prefill(idx, last, slots, k2, v2)
        assert b.shape == (3, 1000)
        _close(b, a, dt, "prefill logits")
        for layer in range(len(k1)):
            _close(k2[layer][slots, :, :21], k1[layer][slots, :, :21], dt, f"keys of layer {layer}")
            _close(v2[layer][slots, :, :21], v1[layer][slots, :, :21], dt, f"values of layer {layer}")
        tok, pos = a.argmax(-1), last + 1
        for _ in range(3):
            a, b = ref.decode(tok, pos, slots, k1, v1), fused.decode(tok, pos, slots, k2, v2)
            _close(b, a, dt, f"decode logits at positions {pos.tolist()}")
            tok, pos = a.argmax(-1), pos + 1


def check_greedy_update(M, dtype):
    """head_argmax + greedy_update against torch.argmax over the logits ln_linear stores: its tie rule (the
    first index) within a column block and across blocks, padding columns (>= V) never chosen, the
    last real column, all-equal logits; and the state writes."""
    from dynashape.models.kernels import greedy_update, head_argmax, ln_linear
    dt = getattr(torch, dtype)
    g = torch.Generator().manual_seed(M)
    V, K = 700, 64                                                        # 44 column blocks of 16, 11 of 64
    x = (torch.randn(1, K, generator=g) + 0.1 * torch.randn(M, K, generator=g)).to(dt)   # rows alike
    ln_w, ln_b = torch.ones(K, dtype=dt), torch.zeros(K, dtype=dt)
    u = torch.nn.functional.layer_norm(x[:1].float(), (K,))[0]                          # > 0 against every row
    rows, pos = torch.tensor([4, 0, 2][:M]), torch.tensor([7, 0, 30][:M])                # distinct slots
    for ties, want in (((300, 130, 131), 130), ((V - 1,), V - 1), ((), 0)):  # 130, 131: one block; 300 another
        w = torch.randn(V + 40, K, generator=g) * 0.01 if ties else torch.zeros(V + 40, K)
        w[V:] = u * 10.0                                                  # padding columns: never read
        for c in ties:
            w[c] = u                                                      # identical rows: tied logits
        w = w.to(dt)
        ref = ln_linear(x, ln_w, ln_b, 1e-5, w)[:, :V].argmax(-1)       # torch's rule on the stored logits
        tok_state, pos_state, out = (torch.zeros(n, dtype=torch.long) for n in (5, 5, M))
        greedy_update(*head_argmax(x, ln_w, ln_b, 1e-5, w, V), rows, pos, tok_state, pos_state, out)
        assert out.tolist() == ref.tolist() == [want] * M, (ties, out.tolist(), ref.tolist())
        assert tok_state[rows].tolist() == [want] * M and pos_state[rows].tolist() == (pos + 1).tolist()


def torch_greedy_step(model):
    """The runtime's generic greedy step (runtime/graphs.py) on the torch ops: the reference."""
    def step(rows, tok_state, pos_state, last_pos, k, v, out):
        pos = pos_state[rows].clamp(max=last_pos)
        nxt = model.decode(tok_state[rows], pos, rows, k, v).argmax(-1)
        out.copy_(nxt)
        tok_state[rows] = nxt
        pos_state[rows] = pos + 1
    return step


def check_fused_greedy_step(dtype, B):
    """Greedy steps of B rows on the fused kernels (2 rows: gemv.py; 4: tl.dot tiles) against the torch
    decode + argmax: tokens, slot state, cache; a padding row on the scratch slot, and (4 rows) a row
    held at last_pos."""
    dt = getattr(torch, dtype)
    models = tiny_pair(2, dtype, kernels="fused")
    g = torch.Generator().manual_seed(2)
    caches = [m.new_cache(6, 24) for m in models]
    idx = torch.randint(0, 1000, (3, 9), generator=g)
    last, slots = torch.tensor([8, 3, 5]), torch.tensor([4, 1, 2])
    rows = torch.tensor([4, 1, 2, 5])[-B:]                               # slot 5: scratch (padding row)
    states = []
    with torch.no_grad():
        for m, (k, v) in zip(models, caches):
            first = m.prefill(idx, last, slots, k, v).argmax(-1)
            tok, pos = torch.zeros(6, dtype=torch.long), torch.zeros(6, dtype=torch.long)
            tok[slots], pos[slots] = first, last + 1
            pos[1] = 20                                                   # held at last_pos = 20 from here
            outs = []
            for _ in range(4):
                out = torch.zeros(B, dtype=torch.long)
                (m.decode_greedy if m.kernels == "fused" else torch_greedy_step(m))(rows, tok, pos, 20, k, v, out)
                outs.append(out[:-1].tolist())
            states.append((outs, tok[:5].tolist(), pos[:5].tolist()))
    assert states[1] == states[0], f"fused {states[1]} != torch {states[0]}"
    for layer in range(len(caches[0][0])):
        _close(caches[1][0][layer][slots, :, :20], caches[0][0][layer][slots, :, :20], dt, f"keys {layer}")


@pytest.fixture(scope="module")
def interpreted(request):
    return run_interpreted(request.session, __file__)


# ---- tests: each reports its check from the child ---------------------------------------------------
@pytest.mark.parametrize("dtype,B,T,C,H", [("float32", 2, 21, 64, 4), ("float16", 1, 40, 128, 4),
                                           ("float32", 3, 5, 96, 4)])   # D 16, 32 and 24 (padded)
def test_prefill_attention(interpreted, request, dtype, B, T, C, H):
    interpreted.assert_passed(request.node)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_fused_prefill(interpreted, request, dtype):
    interpreted.assert_passed(request.node)


@pytest.mark.parametrize("M,dtype", [(1, "float16"), (2, "float32"), (3, "float32")])   # gemv.py; tl.dot tiles
def test_greedy_update(interpreted, request, M, dtype):
    interpreted.assert_passed(request.node)


@pytest.mark.parametrize("dtype,B", [("float32", 4), ("float16", 4), ("float16", 2)])
def test_fused_greedy_step(interpreted, request, dtype, B):
    interpreted.assert_passed(request.node)


def test_prefill_attention_refuses_bad_layouts():
    from dynashape.models.kernels import KernelError
    from dynashape.models.kernels.prefill import prefill_attention
    cache, slots = torch.zeros(4, 4, 16, 16), torch.zeros(2, dtype=torch.int64)
    with pytest.raises(KernelError, match="B \\* T"):
        prefill_attention(torch.zeros(7, 64), cache, cache, slots, 2, 4, 0.25)
    with pytest.raises(KernelError, match="fewer than T"):
        prefill_attention(torch.zeros(40, 64), cache, cache, slots, 20, 4, 0.25)


def test_long_prefills_run_as_torch_ops():
    """Above FUSED_PREFILL_ROWS rows (batch x padded prompt) a fused-prefill model runs the PyTorch ops
    (here in this process, on the CPU, where a Triton launch could not run): the same logits."""
    from dynashape.models import load_model
    from dynashape.models.gpt2 import FUSED_PREFILL_ROWS, GPT2
    lm = load_model("random:tiny")
    ref, fused = (GPT2.from_hf(lm.model).configure(prefill=p) for p in ("torch", "fused"))
    B, T = 3, FUSED_PREFILL_ROWS // 3 + 1                                       # B * T rows > the limit
    idx, last, slots = torch.randint(0, 1000, (B, T)), torch.tensor([T - 1, T - 5, 0]), torch.tensor([2, 0, 1])
    (k1, v1), (k2, v2) = ref.new_cache(B, T + 1), fused.new_cache(B, T + 1)
    with torch.no_grad():
        torch.testing.assert_close(fused.prefill(idx, last, slots, k2, v2), ref.prefill(idx, last, slots, k1, v1))
    for a, b in zip(k1 + v1, k2 + v2):                                          # the same cache rows written
        torch.testing.assert_close(a, b)
