"""Host-side helpers of the fast generation loop (fastgen): a clock that marks the device timeline
(CUDA events, or the host clock on a CPU), and a stream that brings tokens back to the host one chunk
behind the GPU, so EOS checks and streaming never stall the device.
"""
from __future__ import annotations

import time

import torch


class Clock:
    """Marks on the device timeline (CUDA events) or the host clock; read() -> ttft, per-token, total."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
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

    def read(self):
        if self.cuda:
            self.marks[-1][0].synchronize()
        t = [m for m, _ in self.marks]
        per_token = []
        for (a, _), (b, n) in zip(self.marks[1:], self.marks[2:]):
            per_token += [self._ms(a, b) / n] * n
        return self._ms(t[0], t[1]), per_token, self._ms(t[0], t[-1])


class HostStream:
    """Brings tokens to the host one chunk behind the GPU: EOS checks and on_token without stalls."""

    def __init__(self, out: torch.Tensor, on_token, eos: int):
        self.out, self.on_token, self.eos = out, on_token, eos
        self.live = on_token is not None or eos >= 0       # else: one copy at the end
        self.cuda = out.device.type == "cuda"
        self.host = torch.zeros(out.shape, dtype=torch.long, pin_memory=self.cuda and self.live)
        self.pending: list[tuple] = []
        self.stopped = [False] * out.shape[0]
        self.all_done = False

    def push(self, a: int, b: int) -> None:
        """Tokens a..b-1 were launched; copy them back asynchronously, deliver the chunk before."""
        if not self.live:
            return
        self.host[:, a:b].copy_(self.out[:, a:b], non_blocking=True)
        ev = None
        if self.cuda:
            ev = torch.cuda.Event()
            ev.record()
        self.pending.append((ev, a, b))
        while len(self.pending) > 1:                       # keep one chunk in flight
            self._deliver(*self.pending.pop(0))

    def _deliver(self, ev, a: int, b: int) -> None:
        if ev is not None:
            ev.synchronize()
        for row, tokens in enumerate(self.host[:, a:b].tolist()):
            for t in tokens:
                if self.stopped[row]:
                    break
                if self.on_token is not None:
                    self.on_token(row, t)
                self.stopped[row] = t == self.eos
        self.all_done = self.eos >= 0 and all(self.stopped)

    def finish(self) -> list[list[int]]:
        for item in self.pending:
            self._deliver(*item)
        self.pending = []
        tokens = self.out.tolist()                         # rows past EOS hold EOS: cut after the first
        return [row[:row.index(self.eos) + 1] if self.eos in row else row for row in tokens]
