"""The lean GPT-2 runtime against the Hugging Face model: logits at every step, weight mapping."""
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dynashape.errors import ModelError  # noqa: E402
from dynashape.models import load_model, model_from_config, preset_config  # noqa: E402
from dynashape.models.gpt2 import GPT2, GPT2Config, hf_key_map, load_hf_state_dict  # noqa: E402


def perturbed(hf, seed=0):
    """Random weights everywhere: HF initialises biases to 0 and LayerNorm to 1, which hides mapping bugs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return hf


@pytest.fixture(scope="module")
def tiny():
    hf = perturbed(load_model("random:tiny").model)
    return hf, GPT2.from_hf(hf)


@pytest.fixture(scope="module")
def gpt2():
    hf = perturbed(load_model("random:gpt2").model, seed=1)
    return hf, GPT2.from_hf(hf)


def test_key_map_covers_every_hf_weight_and_transposes_conv1d(tiny):
    hf, ours = tiny
    mapping = hf_key_map(ours.config)
    hf_keys = {k for k in hf.state_dict() if not k.endswith((".attn.bias", ".attn.masked_bias"))}
    assert {key for key, _ in mapping.values()} == hf_keys
    assert set(mapping) == set(ours.state_dict())
    w = hf.transformer.h[1].attn.c_attn.weight                          # Conv1D: (in, out)
    assert torch.equal(ours.h[1].attn.c_attn.weight, w.t())              # Linear: (out, in)
    assert torch.equal(ours.h[0].mlp.c_proj.weight, hf.transformer.h[0].mlp.c_proj.weight.t())
    assert ours.lm_head.weight is ours.wte.weight


@pytest.mark.parametrize("fixture,T", [("tiny", 37), ("gpt2", 48)])
def test_forward_logits_match_hf(request, fixture, T):
    hf, ours = request.getfixturevalue(fixture)
    idx = torch.randint(0, ours.config.vocab_size, (2, T), generator=torch.Generator().manual_seed(T))
    with torch.no_grad():
        err = (hf(idx).logits - ours(idx)).abs().max().item()
    assert err < 1e-4


def _prefill_decode_errors(hf, ours, lengths, total, bucket):
    """Mixed-length rows: prefill then decode, each step's logits against HF on the full sequence."""
    B = len(lengths)
    seq = torch.randint(0, ours.config.vocab_size, (B, total), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref = hf(seq).logits                                             # (B, total, V)
        ours.setup_cache(B + 1, total + 8)
        T = max(lengths)
        padded = torch.zeros(B, T, dtype=torch.long)
        for b, L in enumerate(lengths):
            padded[b, :L] = seq[b, :L]
        last = torch.tensor(lengths) - 1
        errs = [(ours.prefill(padded, last) - ref[torch.arange(B), last]).abs().max().item()]
        pos = torch.tensor(lengths)
        for _ in range(total - max(lengths)):
            S = min(total + 8, -(-(int(pos.max()) + 1) // bucket) * bucket)
            logits = ours.decode(seq[torch.arange(B), pos], pos, S)
            errs.append((logits - ref[torch.arange(B), pos]).abs().max().item())
            pos = pos + 1
    return errs


def test_prefill_and_every_decode_step_match_hf_tiny(tiny):
    hf, ours = tiny
    errs = _prefill_decode_errors(hf, ours, [1, 9, 4], total=40, bucket=8)
    assert len(errs) == 32 and max(errs) < 1e-4


def test_prefill_and_decode_match_hf_gpt2(gpt2):
    hf, ours = gpt2
    errs = _prefill_decode_errors(hf, ours, [12, 5], total=24, bucket=16)
    assert len(errs) == 13 and max(errs) < 1e-4


def test_scale_by_inverse_layer_idx_and_untied_head_match_hf():
    cfg = preset_config("tiny")
    cfg.scale_attn_by_inverse_layer_idx = True
    cfg.tie_word_embeddings = False
    hf = perturbed(model_from_config(cfg, attn_implementation="eager"), seed=3)   # 4.46 sdpa ignores the option
    assert hf.lm_head.weight.data_ptr() != hf.transformer.wte.weight.data_ptr()
    ours = GPT2.from_hf(hf)
    assert ours.lm_head.weight is not ours.wte.weight
    idx = torch.randint(0, 1000, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (hf(idx).logits - ours(idx)).abs().max().item() < 1e-4


@pytest.mark.parametrize("fixture,padded", [("tiny", 1024), ("gpt2", 50304)])
def test_padded_vocab_logits_match_hf_and_hide_the_padding(request, fixture, padded):
    hf, _ = request.getfixturevalue(fixture)
    ours = GPT2.from_hf(hf)
    V, C = ours.config.vocab_size, ours.config.n_embd
    ours.pad_vocab(64)
    assert ours.head_weight.shape == (padded, C) and ours.head_weight[V:].abs().max() == 0
    assert torch.equal(ours.head_weight[:V], ours.wte.weight) and ours.wte.weight.shape == (V, C)
    idx = torch.randint(0, V, (2, 21), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        logits = ours(idx)
        assert logits.shape == (2, 21, V)                                # padding columns cut
        assert (hf(idx).logits - logits).abs().max().item() < 1e-4
    errs = _prefill_decode_errors(hf, ours, [12, 5], total=24, bucket=16)
    assert len(errs) == 13 and max(errs) < 1e-4
    ours.pad_vocab(1)
    assert ours.head_weight is None


def test_linear_projections_match_hf(tiny):
    hf, _ = tiny
    ours = GPT2.from_hf(hf)
    ours.set_projections("linear")
    assert all(m.use_linear for m in (ours.h[0].attn.c_attn, ours.h[1].attn.c_proj, ours.h[1].mlp.c_fc))
    errs = _prefill_decode_errors(hf, ours, [1, 9, 4], total=30, bucket=8)
    assert len(errs) == 22 and max(errs) < 1e-4
    ours.set_projections("mm")
    assert not ours.h[1].mlp.c_proj.use_linear
    with pytest.raises(ModelError, match="unknown projections 'gemv'") as e:
        ours.set_projections("gemv")
    assert e.value.fix


def test_unsupported_configs_are_refused_with_a_fix():
    cfg = preset_config("tiny")
    cfg.activation_function = "mish"
    with pytest.raises(ModelError, match="activation") as e:
        GPT2Config.from_hf(cfg)
    assert e.value.fix
    cfg = preset_config("tiny")
    cfg.add_cross_attention = True
    with pytest.raises(ModelError, match="cross-attention"):
        GPT2Config.from_hf(cfg)


def test_missing_weights_are_a_model_error(tiny):
    hf, ours = tiny
    state = dict(hf.state_dict())
    del state["transformer.h.1.mlp.c_fc.bias"]
    with pytest.raises(ModelError, match="lacks 1 GPT-2 weights"):
        load_hf_state_dict(ours.config, state)


def test_cache_holds_the_prompt_keys(tiny):
    hf, ours = tiny
    idx = torch.randint(0, 1000, (2, 6), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ours.setup_cache(3, 16)
        ours.prefill(idx, torch.tensor([5, 5]))
        k = ours.h[0].attn._split_heads(ours.h[0].ln_1(ours.wte(idx) + ours.wpe(torch.arange(6))))[1]
    assert ours.cache_shape == (3, 16)
    assert torch.allclose(ours.h[0].attn.kv_cache.k[:2, :, :6], k, atol=1e-6)
    assert ours.h[0].attn.kv_cache.k[2].abs().max() == 0                 # rows beyond the batch untouched


def test_kernel_decode_attention_matches_hf_eager_and_traced(tiny):
    """The decode-attention op (its plain fallback here) inside the model: HF logits at every step, and
    the same logits when traced by torch.compile with dynamic shapes (fake kernel, cache mutation)."""
    hf, _ = tiny
    ours = GPT2.from_hf(hf)
    ours.set_decode_attention("kernel")
    errs = _prefill_decode_errors(hf, ours, [1, 9, 4], total=40, bucket=8)
    assert len(errs) == 32 and max(errs) < 1e-4
    traced = torch.compile(ours.decode, backend="aot_eager", dynamic=True)
    tok, pos = torch.tensor([3, 5, 7]), torch.tensor([9, 2, 30])
    with torch.no_grad():
        for B, S in ((3, 32), (2, 40)):                          # two batch sizes and windows, one graph
            got = traced(tok[:B], pos[:B], S)
            ours.set_decode_attention("matmul")
            want = ours.decode(tok[:B], pos[:B], S)               # rewrites the same cache slots
            ours.set_decode_attention("kernel")
            assert (got - want).abs().max().item() < 1e-5
    with pytest.raises(ModelError, match="unknown decode attention 'flash'"):
        ours.set_decode_attention("flash")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-3)])
def test_split_kv_kernel_matches_the_matmul_math_on_the_gpu(dtype, tol):
    from dynashape.models.gpt2 import decode_attention, decode_attention_op
    for B, H, D, L, S in ((1, 12, 64, 1025, 640), (8, 12, 64, 641, 640), (64, 12, 64, 300, 256), (5, 4, 16, 201, 64)):
        g = torch.Generator(device="cuda").manual_seed(B * 1000 + S)
        k = torch.randn(B + 1, H, L, D, device="cuda", generator=g).to(dtype)
        v_t = torch.randn(B + 1, H, D, L, device="cuda", generator=g).to(dtype)
        q = torch.randn(B, 3 * H, D, device="cuda", generator=g).to(dtype)[:, H:2 * H]   # strided, as in the model
        lengths = torch.randint(1, S + 1, (B,), device="cuda", generator=g)
        lengths[0] = S
        mask = torch.arange(S, device="cuda")[None, :] < lengths[:, None]
        ref = decode_attention(q.double()[:, :, None], k[:B, :, :S].double(), v_t[:B, :, :, :S].double(),
                               mask[:, None, None], 0.125)[:, :, 0]
        out = decode_attention_op(q, k, v_t, lengths, S, 0.125)
        assert out.shape == (B, H, D) and out.dtype == dtype and torch.isfinite(out).all()
        assert ((out.double() - ref).norm() / ref.norm()).item() < tol
