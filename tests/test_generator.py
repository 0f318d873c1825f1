"""The generator over an engine: greedy tokens equal Hugging Face, mixed lengths, EOS, streaming,
per-row seeded sampling, continuous batching (admit/step/cancel), and every bad request."""
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dynashape import api  # noqa: E402
from dynashape.errors import GenerateError  # noqa: E402
from dynashape.models import load_model  # noqa: E402
from dynashape.runtime.sampling import SamplingSettings  # noqa: E402
from dynashape.runtime.state import Request  # noqa: E402

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def perturbed(lm, seed=0, scale=0.05):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lm.model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return lm


def hf_greedy(hf, prompt, n):
    ids = torch.tensor([prompt], device=hf.device)
    out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                      do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def rand_prompts(lengths, vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab - 1, (L,), generator=g).tolist() for L in lengths]   # never EOS (vocab-1)


@pytest.fixture(scope="module")
def tiny():
    return perturbed(load_model("random:tiny"))


@pytest.fixture(scope="module")
def engine(tiny):
    return api.compile("random:tiny", seq="1:96", batch="1:4", backend="eager", loaded=tiny, steps_per_graph=4)


def test_greedy_tokens_equal_hf_generate_tiny(tiny, engine):
    for prompt in rand_prompts([1, 2, 7, 40], 1000, seed=1):
        assert engine.generate([prompt], 30, ignore_eos=True)[0] == hf_greedy(tiny.model, prompt, 30)


def test_greedy_tokens_equal_hf_generate_gpt2():
    lm = perturbed(load_model("random:gpt2"), seed=2, scale=0.02)
    engine = api.compile("random:gpt2", seq="1:64", batch="1", backend="eager", loaded=lm)
    prompt = rand_prompts([9], 50257, seed=3)[0]
    assert engine.generate([prompt], 12, ignore_eos=True)[0] == hf_greedy(lm.model, prompt, 12)


def test_mixed_length_batch_equals_single_rows(engine):
    prompts = rand_prompts([1, 23, 5, 11], 1000, seed=4)
    batch = engine.generate(prompts, 25, ignore_eos=True)
    assert [len(r) for r in batch] == [25] * 4
    assert batch == [engine.generate([p], 25, ignore_eos=True)[0] for p in prompts]
    t = engine.generator.last_timing
    assert len(t.step_ms) == 24 and t.ttft_ms > 0 and t.total_ms >= t.ttft_ms


@pytest.mark.parametrize("steps", [1, 3, 8])
def test_every_steps_per_graph_gives_the_same_tokens(tiny, engine, steps):
    prompts = rand_prompts([3, 17], 1000, seed=5)
    other = api.compile("random:tiny", seq="1:96", batch="1:4", backend="eager", loaded=tiny, steps_per_graph=steps)
    assert other.plan.runtime.steps_per_graph == steps
    assert other.generate(prompts, 20, ignore_eos=True) == engine.generate(prompts, 20, ignore_eos=True)


def test_rows_stop_at_their_eos_and_stream_in_order(engine):
    prompts = rand_prompts([4, 9, 2], 1000, seed=6)
    free = engine.generate(prompts, 20, ignore_eos=True)
    eos = free[0][3]                                         # row 0 makes this token at step 3
    expect = [r[:r.index(eos) + 1] if eos in r else r for r in free]
    streamed = [[], [], []]
    got = engine.generate(prompts, 20, eos_token_id=eos, on_token=lambda row, t: streamed[row].append(t))
    assert got == expect and streamed == expect
    assert got[0][-1] == eos and len(got[0]) <= 4


def test_generation_ends_early_when_every_row_met_eos(engine):
    prompt = rand_prompts([6], 1000, seed=7)[0]
    free = engine.generate([prompt, prompt], 40, ignore_eos=True)[0]
    got = engine.generate([prompt, prompt], 40, eos_token_id=free[2])
    assert got == [free[:free.index(free[2]) + 1]] * 2
    assert len(engine.generator.last_timing.step_ms) < 16      # stopped launching decode chunks early


def test_model_eos_is_the_default_and_ignore_eos_runs_the_budget(engine):
    prompt = rand_prompts([5], 1000, seed=8)[0]
    free = engine.generate([prompt], 10, ignore_eos=True)[0]
    old, engine.plan.model["eos_token_id"] = engine.plan.model.get("eos_token_id"), free[2]
    try:
        assert engine.generate([prompt], 10)[0] == free[:free.index(free[2]) + 1]
        assert engine.generate([prompt], 10, ignore_eos=True)[0] == free
    finally:
        engine.plan.model["eos_token_id"] = old


def test_sampling_is_reproducible_per_row_and_independent_of_the_batch(engine):
    prompts = rand_prompts([3, 8, 30], 1000, seed=9)
    s = SamplingSettings(temperature=1.0, top_k=100, top_p=0.95, seed=11)
    a = engine.generate(prompts, 20, s, ignore_eos=True)
    assert a == engine.generate(prompts, 20, s, ignore_eos=True)
    assert a[1] == engine.generate([prompts[1]], 20, s, ignore_eos=True)[0]        # alone = in a batch
    b = engine.generate(prompts, 20, SamplingSettings(temperature=1.0, top_k=100, top_p=0.95, seed=12), ignore_eos=True)
    assert a != b
    greedy = engine.generate(prompts, 20, ignore_eos=True)
    assert engine.generate(prompts, 20, SamplingSettings(temperature=0.7, top_k=1, seed=5), ignore_eos=True) == greedy
    hot = engine.generate(prompts, 20, SamplingSettings(temperature=5.0, seed=5), ignore_eos=True)
    assert hot != greedy and len({t for r in hot for t in r}) > 30           # a flat distribution spreads out


def test_continuous_batching_admits_and_releases_between_steps(engine):
    """Requests join a running batch and leave it; each gets what it gets alone."""
    gen = engine.generator
    p = rand_prompts([5, 17, 2, 9], 1000, seed=10)
    alone = [engine.generate([q], n, ignore_eos=True)[0] for q, n in zip(p, (30, 6, 25, 12))]
    reqs = [Request(q, n) for q, n in zip(p, (30, 6, 25, 12))]
    gen.admit(reqs[:2])
    finished = []
    for _ in range(3):
        finished += gen.step()
    gen.admit(reqs[2:])                                      # join mid-flight
    slow = reqs[0]
    gen.cancel(reqs[3])                                      # a client goes away
    while gen.active:
        finished += gen.step()
    finished += gen.flush()
    assert [r.tokens for r in reqs[:3]] == alone[:3]
    assert [r.finish_reason for r in reqs] == ["length", "length", "length", "cancelled"]
    assert sorted(gen.free) == [0, 1, 2, 3] and not gen.busy and slow in finished


def test_a_row_that_ends_mid_chunk_at_the_last_position_stays_in_range(tiny):
    """A row whose budget ends at n_positions inside a longer row's chunk keeps running to the chunk's end:
    its positions must stop at the last one the model has (the cache is one longer than n_positions)."""
    engine = api.compile("random:tiny", seq="1:256", batch="1:2", backend="eager", loaded=tiny, steps_per_graph=8)
    gen = engine.generator
    long, short = Request(rand_prompts([10], 1000, 11)[0], 200), Request(rand_prompts([250], 1000, 12)[0], 6)
    gen.admit([long])
    for _ in range(3):
        gen.step()
    gen.admit([short])
    while gen.active:
        gen.step()
    gen.flush()
    assert [r.finish_reason for r in (long, short)] == ["length", "length"]
    assert short.tokens == engine.generate([short.prompt], 6, ignore_eos=True)[0]
    assert long.tokens == engine.generate([long.prompt], 200, ignore_eos=True)[0]


@pytest.mark.parametrize("B,T", [(1, 7), (3, 5), (2, 64), (5, 33)])
def test_prefill_buffer_fields_start_on_16_byte_boundaries(engine, B, T):
    """The rows field reaches the kernels (their cache slots): Triton compiles one variant per pointer
    alignment, so at every batch and padded length it must start aligned, as at the build's warm-up."""
    e = engine.generator.graphs._entry(("prefill", B, T, "greedy"))
    assert e.idx.shape == (B, T) and e.idx.data_ptr() % 16 == 0
    assert all(getattr(e, f).shape == (B,) and getattr(e, f).data_ptr() % 16 == 0
               for f in ("last", "rows", "top_k", "seed"))


def test_admitting_more_requests_than_free_slots_is_refused(engine):
    gen = engine.generator
    with pytest.raises(GenerateError, match="5 requests but 4 free slots") as e:
        gen.admit([Request([1], 2) for _ in range(5)])
    assert "--batch 1:5" in e.value.fix and not gen.busy


def test_padded_vocab_is_never_picked(tiny):
    """All real logits negative: the zero logits of the padding rows would win if they leaked."""
    lm = perturbed(load_model("random:tiny"), seed=5)
    with torch.no_grad():
        lm.model.transformer.ln_f.weight.zero_()
        lm.model.transformer.ln_f.bias.fill_(1.0)
        lm.model.transformer.wte.weight.abs_().neg_().sub_(0.01)           # logits = -sum|w| - 0.64 < 0
    e = api.compile("random:tiny", seq="1:32", batch="1:2", backend="eager", loaded=lm)
    assert e.model.head_weight.shape[0] == 1024
    out = e.generate(rand_prompts([3, 11], 1000, seed=6), 10, SamplingSettings(temperature=1.5, seed=1),
                     ignore_eos=True)
    assert max(t for r in out for t in r) < 1000


@pytest.mark.parametrize("prompts,new,match,fix", [
    ([[1] * 90], 10, r"prompt 0 \(90 tokens\) \+ 10 new tokens = 100 positions is beyond this engine's 96",
     "--max-new-tokens 6 or less, or rebuild: dynashape compile"),
    ([[1]] * 5, 1, "larger than this engine's batch max 4", "--batch 1:5"),
    ([[]], 1, "prompt 0 is empty", "at least one token"),
    ([[1, 1000]], 1, "token id 1000, outside the vocabulary", "below 1000"),
    ([[1], [-3]], 1, "prompt 1 holds token id -3", "below 1000"),
    ([[1.5, 2]], 1, "not a list of whole-number token ids", "lists of ints"),
    ([], 1, "no prompts", "at least one prompt"),
    ([[1]], 0, "not a whole number >= 1", "--max-new-tokens"),
    ([[1]], True, "not a whole number >= 1", "--max-new-tokens"),
])
def test_bad_requests_raise_generate_error_with_a_fix(engine, prompts, new, match, fix):
    with pytest.raises(GenerateError, match=match) as e:
        engine.generate(prompts, new)
    assert fix in e.value.fix and "\n" not in e.value.one_line()
    assert not engine.generator.busy                          # nothing was half-run


# ---- on the GPU (run on the GPU machine: bench/gpu_session.sh gputests) --------------------------------

@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("backend,kernels", [("eager", "fused"), ("eager", "torch"), ("inductor", "torch")])
def test_cuda_graphs_give_the_eager_tokens_on_the_gpu(tiny, backend, kernels):
    """The captured graphs (fused kernels or torch ops) against the same engine on the CPU, greedy and sampled."""
    prompts = rand_prompts([1, 30, 7, 64, 100], 1000, seed=10)
    kw = dict(seq="1:200", batch="1:5", loaded=tiny, steps_per_graph=4)
    gpu = api.compile("random:tiny", backend=backend, device="cuda", dtype="float32", kernels=kernels, **kw)
    cpu = api.compile("random:tiny", backend="eager", **kw)
    assert gpu.plan.runtime.kernels == kernels and gpu.plan.runtime.cuda_graph_batches == [1, 2, 4, 5]
    a = gpu.generate(prompts, 60, ignore_eos=True)
    assert a == cpu.generate(prompts, 60, ignore_eos=True)
    assert a == gpu.generate(prompts, 60, ignore_eos=True)            # replays
    s = SamplingSettings(temperature=0.9, top_k=50, seed=3)
    assert gpu.generate(prompts, 40, s, ignore_eos=True) == cpu.generate(prompts, 40, s, ignore_eos=True)
    for p, row in zip(prompts[:2], a):                                 # fp32 greedy equals HF on the GPU
        assert row[:20] == hf_greedy(tiny.model, p, 20)


@pytest.mark.gpu
@needs_gpu
def test_fp16_top1_agreement_with_hf_fp16_over_a_long_generation():
    lm = load_model("random:gpt2", dtype=torch.float16)
    engine = api.compile("random:gpt2", seq="1:1024", batch="1:4", device="cuda", dtype="float16", loaded=lm)
    prompts = rand_prompts([8, 64, 200, 500], 50257, seed=12)
    outs = engine.generate(prompts, 500, ignore_eos=True)
    hf = lm.model.to("cuda")
    agree = total = 0
    with torch.no_grad():
        for p, o in zip(prompts, outs):                               # teacher-forced: same prefix for both
            ref = hf(torch.tensor([p + o], device="cuda")).logits[0, len(p) - 1:-1].argmax(-1).tolist()
            agree += sum(a == b for a, b in zip(ref, o))
            total += len(o)
    print(f"fp16 top-1 agreement with HF fp16: {agree}/{total} = {agree / total:.4%}")
    assert agree / total > 0.99
