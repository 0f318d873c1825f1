"""The lean GPT-2 against the Hugging Face model: logits at prefill and every decode step (slots,
mixed lengths), the weight mapping both ways, options, refusals, and the decode-attention op."""
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dynashape.errors import ModelError  # noqa: E402
from dynashape.models import load_model, model_from_config, preset_config  # noqa: E402
from dynashape.models.gpt2 import (GPT2, GPT2Config, hf_key_map, load_hf_state_dict,  # noqa: E402
                                   to_hf_state_dict)


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
    assert ours.lm_head.weight is ours.wte.weight
    back = to_hf_state_dict(ours.config, ours.state_dict())             # the inverse, for verify's reference
    assert all(torch.equal(back[k], hf.state_dict()[k]) for k in back)


@pytest.mark.parametrize("fixture,T", [("tiny", 37), ("gpt2", 48)])
def test_forward_logits_match_hf(request, fixture, T):
    hf, ours = request.getfixturevalue(fixture)
    idx = torch.randint(0, ours.config.vocab_size, (2, T), generator=torch.Generator().manual_seed(T))
    with torch.no_grad():
        assert (hf(idx).logits - ours(idx)).abs().max().item() < 1e-4


def prefill_decode_errors(hf, ours, lengths, total, slots=None, n_slots=None):
    """Mixed-length rows in the given cache slots: prefill, then decode to ``total``; each step's logits
    against HF on the whole sequence. Returns the errors and the cache."""
    B = len(lengths)
    slots = torch.tensor(slots if slots is not None else list(range(B)))
    seq = torch.randint(0, ours.config.vocab_size, (B, total), generator=torch.Generator().manual_seed(7))
    k, v = ours.new_cache(n_slots or B + 1, total + 1)
    with torch.no_grad():
        ref = hf(seq).logits                                             # (B, total, V)
        padded = torch.zeros(B, max(lengths), dtype=torch.long)
        for b, L in enumerate(lengths):
            padded[b, :L] = seq[b, :L]
        last = torch.tensor(lengths) - 1
        errs = [(ours.prefill(padded, last, slots, k, v) - ref[torch.arange(B), last]).abs().max().item()]
        pos = torch.tensor(lengths)
        while int(pos.max()) < total:
            p = pos.clamp(max=total - 1)
            logits = ours.decode(seq[torch.arange(B), p], p, slots, k, v)
            errs.append((logits - ref[torch.arange(B), p]).abs().max().item())
            pos = pos + 1
    return errs, (k, v)


def test_prefill_and_every_decode_step_match_hf_in_scattered_slots(tiny):
    hf, ours = tiny
    errs, (k, v) = prefill_decode_errors(hf, ours, [1, 9, 4], total=40, slots=[5, 0, 3], n_slots=7)
    assert len(errs) == 32 and max(errs) < 1e-4
    for unused in (1, 2, 4, 6):                                       # slots no row names stay untouched
        assert all(layer[unused].abs().max() == 0 for layer in k + v)


def test_prefill_and_decode_match_hf_gpt2(gpt2):
    hf, ours = gpt2
    errs, _ = prefill_decode_errors(hf, ours, [12, 5], total=24)
    assert len(errs) == 13 and max(errs) < 1e-4


def test_cache_is_one_tensor_per_layer_written_in_place(tiny):
    hf, ours = tiny
    k, v = ours.new_cache(3, 16)
    assert len(k) == len(v) == ours.config.n_layer and k[0].shape == (3, 4, 16, 16)
    ptrs = [t.data_ptr() for t in k + v]
    idx = torch.randint(0, 1000, (1, 6), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ours.prefill(idx, torch.tensor([5]), torch.tensor([2]), k, v)
        x = ours.h[0].ln_1(ours.wte(idx) + ours.wpe(torch.arange(6)))
        keys = ours.h[0].attn._heads(x)[1]                             # (1, H, 6, D)
    assert [t.data_ptr() for t in k + v] == ptrs
    assert torch.allclose(k[0][2, :, :6], keys[0], atol=1e-6)
    assert k[0][2, :, 6:].abs().max() == 0 and k[0][:2].abs().max() == 0


def test_scale_by_inverse_layer_idx_and_untied_head_match_hf():
    cfg = preset_config("tiny")
    cfg.scale_attn_by_inverse_layer_idx = True
    cfg.tie_word_embeddings = False
    hf = perturbed(model_from_config(cfg, attn_implementation="eager"), seed=3)   # 4.46 sdpa ignores the option
    ours = GPT2.from_hf(hf)
    assert ours.lm_head.weight is not ours.wte.weight
    errs, _ = prefill_decode_errors(hf, ours, [3, 7], total=20)
    assert max(errs) < 1e-4


@pytest.mark.parametrize("fixture,padded", [("tiny", 1024), ("gpt2", 50304)])
def test_padded_vocab_logits_match_hf_and_hide_the_padding(request, fixture, padded):
    hf, _ = request.getfixturevalue(fixture)
    ours = GPT2.from_hf(hf).configure(vocab_pad=64)
    V, C = ours.config.vocab_size, ours.config.n_embd
    assert ours.head_weight.shape == (padded, C) and ours.head_weight[V:].abs().max() == 0
    idx = torch.randint(0, V, (2, 21), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        logits = ours(idx)
    assert logits.shape == (2, 21, V) and (hf(idx).logits - logits).abs().max().item() < 1e-4
    errs, _ = prefill_decode_errors(hf, ours, [12, 5], total=24)
    assert max(errs) < 1e-4
    assert ours.configure(vocab_pad=1).head_weight is None


def test_unsupported_configs_and_options_are_refused_with_a_fix(tiny):
    cfg = preset_config("tiny")
    cfg.activation_function = "mish"
    with pytest.raises(ModelError, match="activation") as e:
        GPT2Config.from_hf(cfg)
    assert e.value.fix
    cfg = preset_config("tiny")
    cfg.add_cross_attention = True
    with pytest.raises(ModelError, match="cross-attention"):
        GPT2Config.from_hf(cfg)
    _, ours = tiny
    with pytest.raises(ModelError, match="unknown decode attention 'flash'"):
        ours.configure(attention="flash")
    with pytest.raises(ModelError, match="unknown decode kernels 'cuda'"):
        ours.configure(kernels="cuda")


def test_fused_kernels_refuse_an_activation_they_do_not_implement(tiny):
    hf, _ = tiny
    state = GPT2.from_hf(hf).state_dict()
    cfg = GPT2Config.from_hf(hf.config)
    cfg.activation = "relu"
    with pytest.raises(ModelError, match="tanh GELU") as e:
        GPT2.from_state(cfg, state).configure(kernels="fused")
    assert "--kernels torch" in e.value.fix


def test_missing_weights_are_a_model_error(tiny):
    hf, ours = tiny
    state = dict(hf.state_dict())
    del state["transformer.h.1.mlp.c_fc.bias"]
    with pytest.raises(ModelError, match="lacks 1 GPT-2 weights"):
        load_hf_state_dict(ours.config, state)
    ours_state = dict(ours.state_dict())
    del ours_state["h.0.ln_1.bias"]
    with pytest.raises(ModelError, match="do not fit"):
        GPT2.from_state(ours.config, ours_state)


def test_kernel_decode_attention_matches_hf_eager_and_traced(tiny):
    """The decode-attention op (its plain fallback here) inside the model: HF logits at every step, and
    the same logits when traced by torch.compile with dynamic shapes (fake kernel, cache mutation)."""
    hf, _ = tiny
    ours = GPT2.from_hf(hf).configure(attention="kernel")
    errs, (k, v) = prefill_decode_errors(hf, ours, [1, 9, 4], total=40, slots=[2, 0, 1])
    assert max(errs) < 1e-4
    traced = torch.compile(ours.decode, backend="aot_eager", dynamic=True)
    tok, pos, slots = torch.tensor([3, 5, 7]), torch.tensor([9, 2, 30]), torch.tensor([0, 1, 2])
    with torch.no_grad():
        for B in (3, 2):                                            # two batch sizes, one graph
            got = traced(tok[:B], pos[:B], slots[:B], k, v)
            ours.configure(attention="matmul")
            want = ours.decode(tok[:B], pos[:B], slots[:B], k, v)     # rewrites the same cache positions
            ours.configure(attention="kernel")
            assert (got - want).abs().max().item() < 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-3)])
def test_split_kv_kernel_matches_the_matmul_math_on_the_gpu(dtype, tol):
    from dynashape.models.decode_attention import decode_attention, decode_attention_op
    for B, H, D, L in ((1, 12, 64, 1025), (8, 12, 64, 641), (64, 12, 64, 300), (5, 4, 16, 201)):
        g = torch.Generator(device="cuda").manual_seed(B * 1000 + L)
        k = torch.randn(B + 3, H, L, D, device="cuda", generator=g).to(dtype)
        v = torch.randn(B + 3, H, L, D, device="cuda", generator=g).to(dtype)
        q = torch.randn(B, 3 * H, D, device="cuda", generator=g).to(dtype)[:, H:2 * H].contiguous()
        slots = torch.randperm(B + 3, device="cuda", generator=g)[:B]
        lengths = torch.randint(1, L + 1, (B,), device="cuda", generator=g)
        lengths[0] = L
        ref = decode_attention(q.double()[:, :, None], k[slots].double(), v[slots].double(), lengths - 1, 0.125)[:, :, 0]
        out = decode_attention_op(q, k, v, slots, lengths, 0.125)
        assert out.shape == (B, H, D) and out.dtype == dtype and torch.isfinite(out).all()
        assert ((out.double() - ref).norm() / ref.norm()).item() < tol
