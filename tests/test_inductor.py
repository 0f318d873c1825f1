"""The inductor backend: one precompiled prefill and one decode graph serve the whole planned range,
with no compilation after the build (and the trap it avoids: plain mark_dynamic from 1 recompiles)."""
import pytest
import torch
from torch._dynamo.utils import counters

from dynashape import api

pytestmark = [pytest.mark.integration]


def test_whole_range_without_compiling_after_the_build(tiny, monkeypatch):
    import torch._inductor.compile_fx as cfx

    engine = api.compile("random:tiny", seq="1:64", batch="1:4", backend="inductor", loaded=tiny)
    calls = []
    real = cfx.compile_fx_inner
    monkeypatch.setattr(cfx, "compile_fx_inner", lambda *a, **k: calls.append(1) or real(*a, **k))
    frames = counters["frames"]["total"]
    ref = engine.reference_model()
    gen = engine.generator
    for b, t in [(1, 1), (1, 2), (2, 2), (4, 4), (4, 64), (2, 63), (3, 17), (1, 64), (4, 1), (2, 3)]:
        prompts = torch.randint(0, 1000, (b, t)).tolist()
        with torch.no_grad():
            got = gen.prefill_logits(prompts)
            want = ref(input_ids=torch.tensor(prompts)).logits[:, -1]
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        n = max(1, min(5, 64 - t))
        out = engine.generate([p[:64 - n] for p in prompts], n, ignore_eos=True)
        assert [len(r) for r in out] == [n] * b
    assert calls == [] and counters["frames"]["total"] == frames       # not one compile anywhere in the range


def test_the_default_batch_of_one_compiles_and_matches_eager(tiny):
    """--batch 1 (the CLI default) with inductor: a decode graph of static sizes only. It used to fail its own
    guards at the first call (the example token column kept the prompt's stride, graphs.generation_examples)."""
    engine = api.compile("random:tiny", seq="1:16", batch="1", backend="inductor", loaded=tiny)
    assert engine.plan.graph["batch"].static and engine.plan.graph["batch"].min == 1
    eager = api.compile("random:tiny", seq="1:16", batch="1", backend="eager", loaded=tiny)
    prompt = [[5, 17, 300, 2]]
    assert engine.generate(prompt, 8, ignore_eos=True) == eager.generate(prompt, 8, ignore_eos=True)


def test_plain_mark_dynamic_from_one_is_the_trap_we_avoid(tiny):
    """Raw torch.compile with mark_dynamic(min=1): size 1 is outside the traced graph (0/1 specialisation)."""
    torch._dynamo.reset()
    counters.clear()
    model = torch.compile(lambda ids: tiny.model(input_ids=ids, use_cache=False).logits, backend="eager")
    ids = torch.randint(0, 1000, (1, 16))
    torch._dynamo.mark_dynamic(ids, 1, min=1, max=64)
    model(ids)
    first = counters["stats"]["unique_graphs"]
    model(torch.randint(0, 1000, (1, 1)))        # length 1: torch compiles another graph
    assert counters["stats"]["unique_graphs"] > first
