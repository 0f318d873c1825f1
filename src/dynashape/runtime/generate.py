"""Generation without a KV cache through any forward (an engine or a Hugging Face model).

Each step runs the whole growing sequence, like the Torch-TensorRT GPT-2 example; this is what a
no-cache engine can do, and what the lean runtime (``fastgen``) makes fast. Prompts of different
lengths share a batch: they are right-padded, each row reads its logits at its own last real position
and writes its next token right after it (a causal LM never looks at the padding to its right).
Everything a request can get wrong is refused before the first forward.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import GenerateError
from .sampling import SamplingSettings, make_generator, sample_next


@dataclass
class GenerateSettings:
    max_new_tokens: int = 20
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    eos_token_id: int | None = None    # stop a row when it makes this token (None: never)


@dataclass
class Limits:
    """What the forward can take: seq and batch ranges and the vocabulary size."""

    max_seq: int
    max_batch: int
    vocab_size: int
    min_batch: int = 1
    where: str = "the model"           # named in errors: "the engine (--seq 1:64)" / "gpt2 (n_positions 1024)"
    fix: str = ""                      # how to get more positions (e.g. the rebuild command)
    batch_fix: str = ""                # how to get a larger batch range


def parse_prompt_ids(text: str) -> list[int]:
    """'464,3290,318' -> [464, 3290, 318]."""
    parts = [p.strip() for p in str(text).replace(" ", ",").split(",") if p.strip()]
    if not parts:
        raise GenerateError("the prompt is empty.", "pass at least one token id, e.g. --prompt-ids 464,3290,318.")
    try:
        return [int(p) for p in parts]
    except ValueError:
        bad = next(p for p in parts if not p.lstrip("-").isdigit())
        raise GenerateError(f"--prompt-ids: {bad!r} is not a token id.",
                            "pass whole numbers separated by commas, e.g. --prompt-ids 464,3290,318.") from None


def check_request(prompts: list[list[int]], settings: GenerateSettings, limits: Limits) -> None:
    if not prompts or any(len(p) == 0 for p in prompts):
        raise GenerateError("a prompt is empty.", "pass at least one token id per prompt, e.g. --prompt-ids 464,3290.")
    if settings.max_new_tokens < 1:
        raise GenerateError(f"--max-new-tokens {settings.max_new_tokens} makes nothing.", "use 1 or more.")
    for p in prompts:
        bad = next((t for t in p if not 0 <= t < limits.vocab_size), None)
        if bad is not None:
            raise GenerateError(f"token id {bad} is outside the vocabulary 0..{limits.vocab_size - 1}.",
                                f"pass ids between 0 and {limits.vocab_size - 1}.")
    if not limits.min_batch <= len(prompts) <= limits.max_batch:
        raise GenerateError(f"{len(prompts)} prompts do not fit {limits.where}'s batch range "
                            f"{limits.min_batch}..{limits.max_batch}.",
                            limits.batch_fix or f"pass {limits.min_batch} to {limits.max_batch} prompts.")
    longest = max(len(p) for p in prompts)
    if longest + settings.max_new_tokens > limits.max_seq:
        room = limits.max_seq - longest
        fix = (f"use --max-new-tokens {room} or less" if room >= 1 else f"shorten the prompt to under {limits.max_seq} tokens")
        raise GenerateError(f"prompt ({longest} tokens) + --max-new-tokens {settings.max_new_tokens} = "
                            f"{longest + settings.max_new_tokens} is beyond {limits.where}'s {limits.max_seq} positions.",
                            fix + (f", or {limits.fix}" if limits.fix else "") + ".")


def generate(forward, prompts: list[list[int]], settings: GenerateSettings, limits: Limits,
             device: torch.device | str = "cpu", on_token=None) -> list[list[int]]:
    """New tokens per prompt. ``forward(input_ids, attention_mask) -> logits (B, T, V)``.

    ``on_token(step, tokens, active)`` is called after each step with the (B,) tokens chosen and the (B,) mask
    of rows that were still generating (a row that finished earlier makes no token).
    """
    check_request(prompts, settings, limits)
    b = len(prompts)
    lengths = torch.tensor([len(p) for p in prompts], device=device)                    # (B,)
    total = int(lengths.max()) + settings.max_new_tokens
    ids = torch.zeros(b, total, dtype=torch.long, device=device)                          # (B, L)
    for row, p in enumerate(prompts):
        ids[row, : len(p)] = torch.tensor(p, dtype=torch.long)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    gen = make_generator(device, settings.sampling.seed)
    rows = torch.arange(b, device=device)
    out: list[list[int]] = [[] for _ in range(b)]
    for step in range(settings.max_new_tokens):
        width = int(lengths.max())
        positions = torch.arange(width, device=device)
        mask = (positions[None, :] < lengths[:, None]).long()                           # (B, T)
        logits = forward(ids[:, :width], mask)                                           # (B, T, V)
        nxt = sample_next(logits[rows, lengths - 1], settings.sampling, gen)              # (B,)
        for row in range(b):
            if not done[row]:
                out[row].append(int(nxt[row]))
        if on_token is not None:
            on_token(step, nxt, ~done)
        ids[rows, lengths] = torch.where(done, ids[rows, lengths], nxt)
        lengths = lengths + (~done).long()
        if settings.eos_token_id is not None:
            done = done | (nxt == settings.eos_token_id)
            if bool(done.all()):
                break
    return out
