"""Next-token choice from logits, per row: greedy, temperature, top-k, top-p, under a per-row seed.

Everything stays on the logits' device and takes no host sync, so a decode step that samples can
be captured in a CUDA graph, and every row carries its own settings (a server batches requests
with different temperatures). Sampling uses the exponential race (``argmax(p / q)``, ``q ~ Exp(1)``),
which draws from ``p`` exactly. The noise is not a generator's state: it is a hash of (row's seed,
position of the token being drawn, vocabulary id), so a request's tokens depend only on its own
seed and prompt, never on which other requests share its batch or on how steps are grouped.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import GenerateError

MODES = ("greedy", "sample", "filter")   # filter: some row uses top-k or top-p
_MIX = (0x9E3779B97F4A7C15 - (1 << 64), 0xBF58476D1CE4E5B9 - (1 << 64), 0x94D049BB133111EB - (1 << 64))


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

    @property
    def mode(self) -> str:
        if self.greedy:
            return "greedy"
        return "filter" if self.top_k or self.top_p < 1.0 else "sample"


def batch_mode(settings) -> str:
    """The one graph mode that serves every row: the most general any row needs."""
    return max((s.mode for s in settings), key=MODES.index, default="greedy")


def _shift(x: torch.Tensor, n: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> n) & ((1 << (64 - n)) - 1)


def exp_noise(seed: torch.Tensor, position: torch.Tensor, V: int) -> torch.Tensor:
    """Exp(1) noise (B, V) from a splitmix64 hash of (seed, position, vocab id); int64 math wraps."""
    vocab = torch.arange(V, device=seed.device, dtype=torch.int64)
    x = (seed[:, None] * _MIX[0]) ^ (position[:, None] * _MIX[1]) ^ (vocab[None, :] * _MIX[2])
    x = (x ^ _shift(x, 30)) * _MIX[1]
    x = (x ^ _shift(x, 27)) * _MIX[2]
    x = x ^ _shift(x, 31)
    u = (_shift(x, 40).float() + 0.5) * (1.0 / (1 << 24))                # (0, 1), 24 random bits
    return -torch.log(u)


def filter_logits(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Mask (to -inf) each row's logits outside its top-k and its top-p nucleus. (B, V); k 0 / p 1 = off."""
    V = logits.shape[-1]
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    probs = torch.softmax(sorted_logits, dim=-1)
    rank = torch.arange(V, device=logits.device)[None, :]
    k = torch.where(top_k > 0, top_k, V)[:, None]
    # drop a token when the mass before it already reaches top_p (the first token always stays)
    drop_sorted = (rank >= k) | ((probs.cumsum(-1) - probs) >= top_p[:, None])
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def choose(logits, mode: str, temperature, top_k, top_p, seed, position) -> torch.Tensor:
    """Next token per row, (B, V) -> (B,) int64. Rows with temperature 0 take the argmax in any mode.
    ``position`` (B,) is the position the new token will have (part of the noise key)."""
    best = torch.argmax(logits, dim=-1)
    if mode == "greedy":
        return best
    greedy = temperature <= 0
    x = logits.float() / torch.where(greedy, torch.ones_like(temperature), temperature)[:, None]
    if mode == "filter":
        x = filter_logits(x, top_k, top_p)
    probs = torch.softmax(x, dim=-1)
    pick = torch.argmax(probs / exp_noise(seed, position, logits.shape[-1]), dim=-1)
    return torch.where(greedy, best, pick)


def sample_next(logits: torch.Tensor, settings: SamplingSettings, position: torch.Tensor | None = None) -> torch.Tensor:
    """One setting for every row (the no-cache loop): (B, V) -> (B,)."""
    B, dev = logits.shape[0], logits.device
    full = lambda v, dt: torch.full((B,), v, dtype=dt, device=dev)  # noqa: E731
    position = torch.zeros(B, dtype=torch.long, device=dev) if position is None else position
    return choose(logits, settings.mode, full(settings.temperature, torch.float32), full(settings.top_k, torch.long),
                  full(settings.top_p, torch.float32), full(settings.seed, torch.long), position)
