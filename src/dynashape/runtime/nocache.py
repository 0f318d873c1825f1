"""Generation without a KV cache: what a forward engine (onnx, tensorrt) can do, and the reference.

Each step runs the whole growing sequence, like the Torch-TensorRT GPT-2 example. Prompts of
different lengths share a batch: they are right-padded, each row reads its logits at its own last
real position and writes its next token right after it (a causal LM never looks at the padding to
its right). Requests are checked by the same rules as the KV-cache generator, and sampled by the same
per-row sampler (the noise keyed by seed and position), so both paths pick the same tokens.
"""
from __future__ import annotations

import torch

from .checks import check_batch, check_prompt
from .sampling import SamplingSettings, sample_next


def parse_prompt_ids(text: str) -> list[int]:
    """'464,3290,318' -> [464, 3290, 318]."""
    from ..errors import GenerateError

    parts = [p.strip() for p in str(text).replace(" ", ",").split(",") if p.strip()]
    if not parts:
        raise GenerateError("the prompt is empty.", "pass at least one token id, e.g. --prompt-ids 464,3290,318.")
    try:
        return [int(p) for p in parts]
    except ValueError:
        bad = next(p for p in parts if not p.lstrip("-").isdigit())
        raise GenerateError(f"--prompt-ids: {bad!r} is not a token id.",
                            "pass whole numbers separated by commas, e.g. --prompt-ids 464,3290,318.") from None


def generate_loop(forward, prompts: list[list[int]], max_new_tokens: int, sampling: SamplingSettings,
                  eos: int | None, device, on_token=None) -> list[list[int]]:
    """``forward(input_ids, attention_mask) -> logits (B, T, V)``; prompts already checked."""
    B = len(prompts)
    lengths = torch.tensor([len(p) for p in prompts], device=device)                    # (B,)
    ids = torch.zeros(B, int(lengths.max()) + max_new_tokens, dtype=torch.long, device=device)
    for row, p in enumerate(prompts):
        ids[row, :len(p)] = torch.tensor(p, dtype=torch.long)
    rows = torch.arange(B, device=device)
    out: list[list[int]] = [[] for _ in range(B)]
    done = [False] * B
    for _ in range(max_new_tokens):
        width = int(lengths.max())
        mask = (torch.arange(width, device=device)[None, :] < lengths[:, None]).long()  # (B, T)
        with torch.no_grad():
            logits = forward(ids[:, :width], mask)                                       # (B, T, V)
        nxt = sample_next(logits[rows, lengths - 1], sampling, lengths)                   # (B,)
        for row, tok in enumerate(nxt.tolist()):
            if done[row]:
                continue
            out[row].append(tok)
            if on_token is not None:
                on_token(row, tok)
            done[row] = tok == eos
        live = torch.tensor([not d for d in done], device=device)
        ids[rows, lengths] = torch.where(live, nxt, ids[rows, lengths])
        lengths = lengths + live.long()
        if all(done):
            break
    return out


def generate_nocache(engine, prompts, max_new_tokens: int, sampling: SamplingSettings | None = None,
                     eos_token_id: int | None = None, ignore_eos: bool = False, on_token=None) -> list[list[int]]:
    """A forward engine's generate: checked like the KV-cache generator, then ``generate_loop``."""
    plan = engine.plan
    sb, ss = plan.serve["batch"], plan.serve["seq"]
    check_batch(prompts, sb.max, engine.rebuild_hint)
    prompts = [check_prompt(p, max_new_tokens, i, plan.model["vocab_size"], ss.max, plan.model["n_positions"],
                            engine.rebuild_hint) for i, p in enumerate(prompts)]
    if len(prompts) < sb.min:
        from ..errors import GenerateError

        raise GenerateError(f"{len(prompts)} prompts are fewer than this engine's batch min {sb.min}.",
                            f"pass {sb.min} to {sb.max} prompts, or rebuild: {engine.rebuild_hint(batch=f'1:{sb.max}')}")
    eos = None if ignore_eos else (plan.model.get("eos_token_id") if eos_token_id is None else eos_token_id)
    return generate_loop(lambda i, m: engine(i, m), prompts, max_new_tokens, sampling or SamplingSettings(), eos,
                         engine.device, on_token)
