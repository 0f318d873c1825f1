"""The generator's timeline: marks on the device (CUDA events) or the host clock, read once at the
end, so timing a request never stalls it."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch


@dataclass
class Timing:
    """What one ``generate`` call measured (CUDA events on a GPU, the host clock on the CPU)."""
    ttft_ms: float = 0.0                                  # request start -> first token on the device
    step_ms: list[float] = field(default_factory=list)   # per decode token (a chunk's time / its steps)
    total_ms: float = 0.0                                 # request start -> last token on the device
    wall_s: float = 0.0                                   # host wall clock of the whole call


class Clock:
    """mark(steps) after each launch: the first mark after the start is the prefill, then chunks."""

    def __init__(self, device: torch.device):
        self.cuda = torch.device(device).type == "cuda"
        self.marks: list[tuple] = []

    def mark(self, steps: int = 0) -> None:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.marks.append((ev, steps))
        else:
            self.marks.append((time.perf_counter(), steps))

    def _ms(self, a, b) -> float:
        return a.elapsed_time(b) if self.cuda else (b - a) * 1e3

    def read(self, wall_s: float = 0.0) -> Timing:
        if self.cuda:
            self.marks[-1][0].synchronize()
        t = [m for m, _ in self.marks]
        per_token = []
        for (a, _), (b, n) in zip(self.marks[1:], self.marks[2:]):
            if n:
                per_token += [self._ms(a, b) / n] * n
        return Timing(self._ms(t[0], t[1]), per_token, self._ms(t[0], t[-1]), wall_s)
