"""Next-token choice from logits: greedy, temperature, top-k, top-p, with a seeded generator.

Everything stays on the logits' device and takes no host sync (no ``.item()``), so a decode step
that samples can be captured in a CUDA graph. Sampling uses the exponential-race trick
(``argmax(p / q)`` with ``q ~ Exp(1)``), which draws from ``p`` exactly without ``torch.multinomial``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import GenerateError


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 0.0   # 0 means greedy
    top_k: int = 0             # 0 means off
    top_p: float = 1.0         # 1.0 means off
    seed: int = 0

    def __post_init__(self):
        if not self.temperature >= 0:
            raise GenerateError(f"--temperature {self.temperature} is negative.", "use 0 (greedy) or a positive value like 0.8.")
        if self.top_k < 0:
            raise GenerateError(f"--top-k {self.top_k} is negative.", "use 0 (off) or a positive count like 50.")
        if not 0.0 < self.top_p <= 1.0:
            raise GenerateError(f"--top-p {self.top_p} is outside (0, 1].", "use a value like 0.9, or 1.0 for off.")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask (to -inf) the logits outside top-k and outside the top-p nucleus. logits: (B, V)."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]          # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the mass before it already reaches top_p (the first token always stays)
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(logits: torch.Tensor, settings: SamplingSettings,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Choose the next token per row. logits: (B, V) -> (B,) int64, without host sync."""
    if settings.greedy:
        return torch.argmax(logits, dim=-1)
    logits = filter_logits(logits.float() / settings.temperature, settings.top_k, settings.top_p)
    probs = torch.softmax(logits, dim=-1)
    q = torch.empty_like(probs).exponential_(1.0, generator=generator)
    return torch.argmax(probs / q, dim=-1)


def make_generator(device: torch.device | str, seed: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g
