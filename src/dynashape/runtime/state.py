"""Device-side state of a running batch, one entry per cache slot, and the request it belongs to.

The decode step reads and writes these tensors through a ``rows`` index (B,) that names each batch
row's slot, so a captured CUDA graph serves any set of active requests: rows join (prefill writes
their slot's entries) and leave (the host stops listing their slot) between replays.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from .sampling import SamplingSettings


@dataclass(eq=False)        # identity: two requests with the same prompt and settings are still two
class Request:
    """One sequence to generate. The runtime fills ``tokens`` and ``finish_reason`` as it goes."""

    prompt: list[int]
    max_new_tokens: int
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    eos_token_id: int | None = None               # ends the row on the device (None: only the budget)
    stop_ids: tuple[int, ...] = ()                # more ids that end the row (checked on the host)
    on_token: Callable[["Request", int], None] | None = None
    tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None              # "stop" | "length" | "cancelled"
    slot: int = -1
    launched: int = 0                             # tokens the device has been asked for so far

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def take(self, token: int) -> bool:
        """Record one new token; True when the request is finished by it."""
        if self.finished:
            return True
        self.tokens.append(token)
        if self.on_token is not None:
            self.on_token(self, token)
        if token == self.eos_token_id or token in self.stop_ids:
            self.finish_reason = "stop"
        elif len(self.tokens) >= self.max_new_tokens:
            self.finish_reason = "length"
        return self.finished


def right_pad(prompts: list[list[int]], rows: int | None = None, width: int | None = None):
    """Prompts right-padded into ids (rows, width) with a mask of the real tokens and each row's last
    real index (rows, defaults: the prompts' count and longest length; extra rows are all padding).
    Right padding is exact for a causal LM: no real position ever attends to it."""
    rows, width = rows or len(prompts), width or max(len(p) for p in prompts)
    ids, mask = torch.zeros(rows, width, dtype=torch.long), torch.zeros(rows, width, dtype=torch.long)
    last = torch.zeros(rows, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, :len(p)], mask[i, :len(p)], last[i] = torch.as_tensor(p, dtype=torch.long), 1, len(p) - 1
    return ids, mask, last


class SlotState:
    """Per-slot tensors (n_slots,) on the device; the decode step indexes them by ``rows``.

    Whether a row is finished (EOS, stop ids, budget) is decided on the host from the token stream;
    a finished row that still runs until the host drops it only rewrites its own slot.
    """

    def __init__(self, n_slots: int, device):
        z = lambda dt: torch.zeros(n_slots, dtype=dt, device=device)  # noqa: E731
        self.tok, self.pos = z(torch.long), z(torch.long)
        self.temperature, self.top_p = z(torch.float32), z(torch.float32) + 1.0
        self.top_k, self.seed = z(torch.long), z(torch.long)

    def sampling(self, rows: torch.Tensor) -> tuple:
        return self.temperature[rows], self.top_k[rows], self.top_p[rows], self.seed[rows]
