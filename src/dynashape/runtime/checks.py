"""Request checks shared by every generation path: one sentence for what is wrong, the fix after it.

Everything is checked before any device work, so a bad request never leaves a half-run batch.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import GenerateError

INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.uint8)


def check_budget(max_new_tokens) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise GenerateError(f"max_new_tokens {max_new_tokens!r} is not a whole number >= 1.",
                            "use --max-new-tokens 32 (or any count >= 1).")


def check_batch(prompts, max_batch: int, rebuild_hint) -> None:
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise GenerateError("no prompts given.", "pass at least one prompt of token ids.")
    if len(prompts) > max_batch:
        raise GenerateError(f"a batch of {len(prompts)} prompts is larger than this engine's batch max {max_batch}.",
                            f"split the prompts, or rebuild: {rebuild_hint(batch=f'1:{len(prompts)}')}")


def check_prompt(prompt, max_new_tokens: int, index: int, vocab: int, max_len: int, n_positions: int,
                 rebuild_hint) -> list[int]:
    """One prompt against the vocabulary and the positions the engine holds; returns it as ints."""
    check_budget(max_new_tokens)
    if isinstance(prompt, (list, tuple)) and not prompt:
        raise GenerateError(f"prompt {index} is empty.", "give every prompt at least one token.")
    if isinstance(prompt, torch.Tensor):
        prompt = prompt.detach().cpu().numpy() if prompt.dtype in INT_DTYPES else None
    try:                  # numpy: a 512-token list in ~10 us (torch.as_tensor took ~60 us of the TTFT)
        row = np.asarray(prompt)
    except (TypeError, ValueError, OverflowError):
        row = None
    if row is None or row.ndim != 1 or row.dtype.kind not in "iu":
        raise GenerateError(f"prompt {index} is not a list of whole-number token ids.",
                            "pass prompts as lists of ints, e.g. [[464, 3290]].")
    n = row.size
    if n == 0:
        raise GenerateError(f"prompt {index} is empty.", "give every prompt at least one token.")
    lo, hi = int(row.min()), int(row.max())
    if lo < 0 or hi >= vocab:
        raise GenerateError(f"prompt {index} holds token id {lo if lo < 0 else hi}, outside the vocabulary "
                            f"0..{vocab - 1}.", f"use token ids below {vocab} (the model's vocab_size).")
    if n + max_new_tokens > max_len:
        fix = f"use --max-new-tokens {max_len - n} or less" if n < max_len else f"shorten the prompt to under {max_len} tokens"
        wider = max(max_len, min(n + max_new_tokens, n_positions))
        more = f", or rebuild: {rebuild_hint(seq=f'1:{wider}')}" if wider > max_len else ""
        raise GenerateError(f"prompt {index} ({n} tokens) + {max_new_tokens} new tokens = {n + max_new_tokens} "
                            f"positions is beyond this engine's {max_len} (--seq max {max_len}).", fix + more)
    return row.tolist()
