"""No-cache generation: golden greedy tokens against Hugging Face generate, batching, EOS, sampling."""
import pytest
import torch

from conftest import make_plan_for
from dynashape.backends import CompileSettings
from dynashape.engine import build_engine
from dynashape.errors import GenerateError
from dynashape.runtime.generate import GenerateSettings, Limits, generate, parse_prompt_ids
from dynashape.runtime.sampling import SamplingSettings

pytestmark = pytest.mark.integration


def hf_greedy(model, prompt, n):
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             max_new_tokens=n, do_sample=False, pad_token_id=model.config.eos_token_id)
    return out[0, len(prompt):].tolist()


def hf_forward(lm):
    def forward(ids, mask):
        with torch.no_grad():
            return lm.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    return forward


@pytest.fixture(scope="module")
def engine(tiny):
    return build_engine(tiny, make_plan_for(tiny, "1:64", "1:4"), CompileSettings(backend="eager"), out="E")


def limits(lm, max_seq=None, max_batch=8):
    return Limits(max_seq or lm.config.n_positions, max_batch, lm.config.vocab_size)


@pytest.mark.parametrize("prompt", [[5], [5, 6, 7], list(range(10, 30))])
def test_engine_greedy_equals_hugging_face_generate(tiny, engine, prompt):
    ours = generate(lambda i, m: engine(i, m), [prompt], GenerateSettings(12), limits(tiny, 64))[0]
    assert ours == hf_greedy(tiny.model, prompt, 12)


def test_full_size_gpt2_greedy_equals_hugging_face_generate(gpt2):
    prompt = [464, 3290, 318]
    ours = generate(hf_forward(gpt2), [prompt], GenerateSettings(10), limits(gpt2))[0]
    assert ours == hf_greedy(gpt2.model, prompt, 10)


def test_mixed_length_batch_equals_each_prompt_alone(tiny):
    prompts = [[1, 2, 3, 4, 5, 6], [7], [8, 9, 10]]
    batched = generate(hf_forward(tiny), prompts, GenerateSettings(8), limits(tiny))
    alone = [generate(hf_forward(tiny), [p], GenerateSettings(8), limits(tiny))[0] for p in prompts]
    assert batched == alone


def test_rows_stop_at_eos(tiny):
    prompt = [5, 6, 7]
    free = generate(hf_forward(tiny), [prompt], GenerateSettings(10), limits(tiny))[0]
    eos = free[3]   # pretend the 4th token is end-of-text
    stopped = generate(hf_forward(tiny), [prompt, [9, 9]], GenerateSettings(10, eos_token_id=eos), limits(tiny))
    assert stopped[0] == free[: free.index(eos) + 1]
    assert len(stopped[1]) <= 10


def test_sampling_is_reproducible_under_a_seed_and_varies_across_seeds(tiny):
    def run(seed):
        s = GenerateSettings(16, SamplingSettings(temperature=1.0, top_k=50, top_p=0.9, seed=seed))
        return generate(hf_forward(tiny), [[1, 2, 3]], s, limits(tiny))[0]

    assert run(1) == run(1)
    assert run(1) != run(2)


@pytest.mark.parametrize("prompts,n,fragment", [
    ([[]], 5, "prompt is empty"),
    ([[1, 2, 1000]], 5, "token id 1000 is outside the vocabulary"),
    ([[1] * 60], 10, "beyond the model's 64 positions"),
    ([[1]] * 9, 2, "9 prompts do not fit"),
    ([[1]], 0, "makes nothing"),
])
def test_bad_requests_are_refused_up_front(tiny, prompts, n, fragment):
    calls = []

    def forward(ids, mask):
        calls.append(1)
        return hf_forward(tiny)(ids, mask)

    with pytest.raises(GenerateError) as info:
        generate(forward, prompts, GenerateSettings(n), limits(tiny, 64))
    assert fragment in info.value.one_line() and "Fix:" in info.value.one_line()
    assert not calls   # refused before any forward


def test_parse_prompt_ids():
    assert parse_prompt_ids("464,3290, 318") == [464, 3290, 318]
    with pytest.raises(GenerateError, match="empty"):
        parse_prompt_ids(",")
    with pytest.raises(GenerateError, match="not a token id"):
        parse_prompt_ids("1,x")


def test_on_token_marks_rows_that_already_stopped(tiny):
    prompt = [5, 6, 7]
    free = generate(hf_forward(tiny), [prompt], GenerateSettings(10), limits(tiny))[0]
    eos = free[1]
    seen = []
    generate(hf_forward(tiny), [prompt, [9, 9]], GenerateSettings(6, eos_token_id=eos), limits(tiny),
             on_token=lambda step, toks, active: seen.append(bool(active[0])))
    stop = free.index(eos)
    assert seen[: stop + 1] == [True] * (stop + 1) and not any(seen[stop + 1:])
