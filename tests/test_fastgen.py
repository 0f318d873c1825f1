"""FastGenerator: greedy tokens equal Hugging Face, mixed-length batches, EOS, sampling, bad input."""
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dynashape.errors import GenerateError  # noqa: E402
from dynashape.runtime.fastgen import FastGenerator  # noqa: E402
from dynashape.models import load_model  # noqa: E402
from dynashape.models.gpt2 import GPT2  # noqa: E402
from dynashape.runtime.sampling import SamplingSettings  # noqa: E402

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
def fg(tiny):
    # small buckets so one request crosses several attention windows and graph sizes
    return FastGenerator(tiny, device="cpu", dtype="float32", max_batch=4, max_len=96,
                         steps_per_graph=4, attn_bucket=16)


def test_greedy_tokens_equal_hf_generate_tiny(tiny, fg):
    for prompt in rand_prompts([1, 2, 7, 40], 1000, seed=1):
        ours = fg.generate([prompt], 30, ignore_eos=True)[0]
        assert ours == hf_greedy(tiny.model, prompt, 30)


def test_greedy_tokens_equal_hf_generate_gpt2():
    lm = perturbed(load_model("random:gpt2"), seed=2, scale=0.02)
    gen = FastGenerator(lm, device="cpu", max_batch=1, max_len=64)
    prompt = rand_prompts([9], 50257, seed=3)[0]
    assert gen.generate([prompt], 12, ignore_eos=True)[0] == hf_greedy(lm.model, prompt, 12)


def test_padded_vocab_is_never_picked_and_options_give_hf_tokens():
    """All real logits negative: the zero logits of the padding rows would win if they leaked."""
    lm = perturbed(load_model("random:tiny"), seed=5)
    with torch.no_grad():
        lm.model.transformer.ln_f.weight.zero_()
        lm.model.transformer.ln_f.bias.fill_(1.0)
        lm.model.transformer.wte.weight.abs_().neg_().sub_(0.01)           # logits = -sum|w| - 0.64 < 0
    prompts = rand_prompts([3, 11], 1000, seed=6)
    kw = dict(device="cpu", dtype="float32", max_batch=2, max_len=64)
    base = FastGenerator(lm, vocab_pad=1, **kw)
    assert base.model.head_weight is None
    s = SamplingSettings(temperature=1.5, seed=1)
    want = base.generate(prompts, 10, ignore_eos=True), base.generate(prompts, 10, s, ignore_eos=True)
    for opts in (dict(vocab_pad=64), dict(vocab_pad=64, projections="linear")):
        g = FastGenerator(lm, **opts, **kw)
        assert g.model.head_weight.shape[0] == 1024 and g.options()["vocab_pad"] == 64
        got = g.generate(prompts, 10, ignore_eos=True), g.generate(prompts, 10, s, ignore_eos=True)
        assert got == want and max(t for rows in got for r in rows for t in r) < 1000
    assert want[0][0] == hf_greedy(lm.model, prompts[0], 10)


def test_mixed_length_batch_equals_single_rows(fg):
    prompts = rand_prompts([1, 23, 5, 11], 1000, seed=4)
    batch = fg.generate(prompts, 25, ignore_eos=True)
    assert [len(r) for r in batch] == [25] * 4
    assert batch == [fg.generate([p], 25, ignore_eos=True)[0] for p in prompts]
    assert len(fg.last_timing.step_ms) == 24 and fg.last_timing.ttft_ms > 0


def test_every_steps_per_graph_gives_the_same_tokens(tiny):
    prompts = rand_prompts([3, 17], 1000, seed=5)
    outs = [FastGenerator(tiny, device="cpu", max_batch=2, max_len=64, steps_per_graph=k, attn_bucket=b)
            .generate(prompts, 20, ignore_eos=True) for k, b in [(1, 1), (3, 8), (8, 64)]]
    assert outs[0] == outs[1] == outs[2]


def test_kernel_attention_gives_the_matmul_tokens(tiny, fg):
    assert fg.attention == "matmul"                          # "auto" on the CPU
    kern = FastGenerator(tiny, device="cpu", dtype="float32", max_batch=4, max_len=96, steps_per_graph=4,
                         attn_bucket=16, attention="kernel")
    prompts = rand_prompts([1, 23, 5, 11], 1000, seed=13)
    assert kern.generate(prompts, 25, ignore_eos=True) == fg.generate(prompts, 25, ignore_eos=True)


def test_rows_stop_at_their_eos_and_stream_in_order(fg):
    prompts = rand_prompts([4, 9, 2], 1000, seed=6)
    free = fg.generate(prompts, 20, ignore_eos=True)
    eos = free[0][3]                                         # row 0 makes this token at step 3
    expect = [r[:r.index(eos) + 1] if eos in r else r for r in free]
    streamed = [[], [], []]
    got = fg.generate(prompts, 20, eos_token_id=eos, on_token=lambda row, t: streamed[row].append(t))
    assert got == expect and streamed == expect
    assert got[0][-1] == eos and len(got[0]) <= 4


def test_generation_ends_early_when_every_row_met_eos(fg):
    prompts = rand_prompts([6, 6], 1000, seed=7)
    free = fg.generate(prompts, 40, ignore_eos=True)
    eos = free[0][1]
    if eos not in free[1][:3]:
        prompts = [prompts[0], prompts[0]]                    # same row twice: both stop at step 1
    got = fg.generate(prompts, 40, eos_token_id=eos)
    assert all(r[-1] == eos for r in got)
    assert len(fg.last_timing.step_ms) < 39                  # stopped launching decode steps early


def test_model_eos_is_the_default_and_ignore_eos_runs_the_budget(tiny):
    prompts = rand_prompts([5], 1000, seed=8)
    g = FastGenerator(tiny, device="cpu", max_batch=1, max_len=64)
    free = g.generate(prompts, 10, ignore_eos=True)[0]
    g.config.eos_token_id = free[2]
    assert g.generate(prompts, 10)[0] == free[:free.index(free[2]) + 1]
    assert g.generate(prompts, 10, ignore_eos=True)[0] == free


def test_sampling_is_reproducible_under_a_seed_and_differs_across_seeds(fg):
    prompts = rand_prompts([3, 8], 1000, seed=9)
    s = SamplingSettings(temperature=1.0, top_k=100, top_p=0.95, seed=11)
    a = fg.generate(prompts, 20, s, ignore_eos=True)
    assert a == fg.generate(prompts, 20, s, ignore_eos=True)
    b = fg.generate(prompts, 20, SamplingSettings(temperature=1.0, top_k=100, top_p=0.95, seed=12), ignore_eos=True)
    assert a != b
    greedy = fg.generate(prompts, 20, ignore_eos=True)
    assert fg.generate(prompts, 20, SamplingSettings(temperature=0.7, top_k=1, seed=5), ignore_eos=True) == greedy


def test_zero_new_tokens_and_our_own_model_are_accepted(tiny):
    ours = GPT2.from_hf(tiny.model)
    g = FastGenerator(ours, device="cpu", max_batch=2, max_len=32)
    assert g.generate([[1, 2], [3]], 0) == [[], []]
    assert len(g.generate([[1, 2]], 5, ignore_eos=True)[0]) == 5


@pytest.mark.parametrize("prompts,new,match", [
    ([[1] * 257], 1, "has 257 tokens; the model has 256 positions"),
    ([[1] * 60], 10, "beyond the cache length 64"),
    ([[1]] * 5, 1, "larger than the planned max batch 4"),
    ([[]], 1, "prompt 0 is empty"),
    ([[1, 1000]], 1, "token id 1000, outside the vocabulary"),
    ([[1], [-3]], 1, "prompt 1 holds token id -3"),
    ([[1.5, 2]], 1, "not a list of whole-number token ids"),
    ([], 1, "no prompts"),
    ([[1]], -1, "not a whole number >= 0"),
])
def test_bad_requests_raise_generate_error_with_a_fix(tiny, prompts, new, match):
    g = FastGenerator(tiny, device="cpu", max_batch=4, max_len=64)
    with pytest.raises(GenerateError, match=match) as e:
        g.generate(prompts, new)
    assert e.value.fix and "\n" not in e.value.one_line()


@pytest.mark.parametrize("kwargs,match", [
    (dict(dtype="float8"), "unknown dtype 'float8'"),
    (dict(device="tpu"), "unknown device|not served"),
    (dict(max_len=300), "cache length 300 is outside 2..256"),
    (dict(max_batch=0), "max_batch 0 is below 1"),
    (dict(attention="flash"), "unknown decode attention 'flash'"),
    (dict(projections="gemv"), "unknown projections 'gemv'"),
])
def test_bad_plans_raise_generate_error(tiny, kwargs, match):
    with pytest.raises(GenerateError, match=match) as e:
        FastGenerator(tiny, **{"device": "cpu", **kwargs})
    assert e.value.fix


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without a GPU")
def test_cuda_without_a_gpu_is_a_generate_error(tiny):
    with pytest.raises(GenerateError, match="no CUDA GPU") as e:
        FastGenerator(tiny, device="cuda")
    assert "--device cpu" in e.value.fix


def test_out_of_memory_names_batch_and_cache_size(tiny, monkeypatch):
    def oom(self, *a):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
    monkeypatch.setattr(GPT2, "setup_cache", oom)
    with pytest.raises(GenerateError, match="out of GPU memory for batch 512 with a KV cache of 512 rows x 200"):
        FastGenerator(tiny, device="cpu", max_batch=512, max_len=200)


# ---- on the GPU (run on the H200 via bench/gpu_issue3.sh) ---------------------------------------
GPU_KW = dict(device="cuda", dtype="float32", max_batch=5, max_len=200, steps_per_graph=4, attn_bucket=32)


@pytest.mark.gpu
@needs_gpu
def test_cuda_graph_decode_equals_eager_decode(tiny):
    prompts = rand_prompts([1, 30, 7, 64, 100], 1000, seed=10)
    kw = GPU_KW
    graphs = FastGenerator(tiny, **kw)
    eager = FastGenerator(tiny, cuda_graphs=False, **kw)
    a = graphs.generate(prompts, 60, ignore_eos=True)
    assert a == eager.generate(prompts, 60, ignore_eos=True)
    assert a == graphs.generate(prompts, 60, ignore_eos=True)            # replays, no new capture
    assert graphs.last_timing.graphs_captured == 0
    s = SamplingSettings(temperature=0.9, top_k=50, seed=3)
    first = graphs.generate(prompts, 40, s, ignore_eos=True)              # captures the sampling graphs
    assert first == graphs.generate(prompts, 40, s, ignore_eos=True) == eager.generate(prompts, 40, s, ignore_eos=True)
    for p, row in zip(prompts, a):                                       # fp32 greedy equals HF on the GPU
        assert row[:20] == hf_greedy(tiny.model.to("cuda"), p, 20)
    tiny.model.to("cpu")


@pytest.mark.gpu
@needs_gpu
def test_kernel_and_matmul_attention_make_the_same_tokens_on_the_gpu(tiny):
    prompts = rand_prompts([1, 30, 7, 64, 130], 1000, seed=14)
    kw = GPU_KW
    kern = FastGenerator(tiny, **kw)
    assert kern.attention == "kernel"                        # "auto" on a GPU with Triton
    got = kern.generate(prompts, 60, ignore_eos=True)
    assert got == FastGenerator(tiny, attention="matmul", **kw).generate(prompts, 60, ignore_eos=True)
    assert [kern.generate([p], 60, ignore_eos=True)[0] for p in prompts[:2]] == got[:2]    # batch 1 too


@pytest.mark.gpu
@needs_gpu
def test_every_prompt_length_works_on_the_gpu(tiny):
    g = FastGenerator(tiny, device="cuda", dtype="float16", max_batch=2, max_len=256)
    for L in (1, 2, 3, 63, 64, 65, 200, 255):
        out = g.generate(rand_prompts([L, max(1, L // 2)], 1000, seed=L), 256 - L, ignore_eos=True)
        assert [len(r) for r in out] == [256 - L] * 2


@pytest.mark.gpu
@needs_gpu
def test_fp16_top1_agreement_with_hf_fp16_over_a_long_generation():
    lm = load_model("random:gpt2", dtype=torch.float16)
    lm.model.to("cuda")
    g = FastGenerator(lm, device="cuda", dtype="float16", max_batch=4, max_len=1024)
    prompts = rand_prompts([8, 64, 200, 500], 50257, seed=12)
    outs = g.generate(prompts, 500, ignore_eos=True)
    agree = total = 0
    with torch.no_grad():
        for p, o in zip(prompts, outs):                               # teacher-forced: same prefix for both
            seq = torch.tensor([p + o], device="cuda")
            ref = lm.model(seq).logits[0, len(p) - 1:-1].argmax(-1).tolist()
            agree += sum(a == b for a, b in zip(ref, o))
            total += len(o)
    print(f"fp16 top-1 agreement with HF fp16: {agree}/{total} = {agree / total:.4%}")
    assert agree / total > 0.99


def test_prefill_sizes_come_from_the_foundation_planner(tiny):
    g = FastGenerator(tiny, device="cpu", dtype="float32", max_batch=3, max_len=40)
    assert g.plan.ok and g.plan.serve["seq"].max == 40 and g.plan.serve["batch"].max == 3
    assert g.plan.graph_size("seq", 1) == 2            # length 1 is padded, as in every engine
    ref = tiny.model.generate(torch.tensor([[5]]), max_new_tokens=6, do_sample=False,
                              pad_token_id=tiny.config.eos_token_id)[0, 1:].tolist()
    assert g.generate([[5]], 6, ignore_eos=True)[0] == ref
