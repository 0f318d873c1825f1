"""The one generator: a KV-cache loop over an engine's prefill and decode graphs.

How requests run:

1. ``admit`` gives each request a free cache slot and prefills it: prompts right-padded to the
   plan's bucket (exact for a causal LM), grouped by bucket, one prefill per group that also picks
   each row's first token. A batch is padded to the graph's batch size with rows that point at the
   scratch slot, so padding never touches a real request.
2. ``step`` runs one chunk of decode steps (``steps_per_graph``, or 1 near the end of every budget)
   for every active row at once: each row feeds its last token at its own position, so rows of
   different lengths and ages share a step. On a GPU every chunk and prefill is a CUDA graph (decode
   graphs captured at load for the plan's batch sizes; prefill graphs on first use per bucket).
3. Tokens come back to the host one chunk behind the device: while chunk i runs, chunk i-1's
   tokens are delivered (``on_token``), checked for EOS, stop ids and budgets, and finished rows free
   their slots, so a new request can join at the next chunk (continuous batching).

``generate`` is the offline loop (admit all, step until done); a server calls ``admit``/``step``
itself. The host never waits for the device except to read tokens it has asked for.
"""
from __future__ import annotations

import time
from collections import deque

import torch

from ..errors import GenerateError
from .checks import check_batch, check_prompt
from .graphs import GraphSet
from .sampling import SamplingSettings, batch_mode
from .state import Request, SlotState
from .streaming import Clock

OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


class Generator:
    """Generates with one engine; owns its KV cache, slots and captured graphs."""

    def __init__(self, engine, capture: bool = True):
        self.engine, self.plan = engine, engine.plan
        pol = self.plan.runtime
        self.device, self.policy = engine.device, pol
        self.vocab, self.n_positions = self.plan.model["vocab_size"], self.plan.model["n_positions"]
        self.max_batch, self.max_len = pol.cache_slots - 1, self.plan.serve["seq"].max
        try:
            self.k, self.v = engine.model.new_cache(pol.cache_slots, pol.cache_len)
        except OOM:
            raise self._oom() from None
        self.state = SlotState(pol.cache_slots, self.device)
        self.graphs = GraphSet(self, engine.runners["prefill"], engine.runners["decode"],
                               engine.runners.get("decode_greedy"))
        self.free = list(range(self.max_batch))          # the last slot is scratch
        self.active: list[Request] = []
        self.pending: deque = deque()                    # launched work whose tokens are not delivered yet
        self.clock = None
        if capture:
            self.graphs.capture_decode()

    # ---- checks --------------------------------------------------------------------------------
    def _oom(self) -> GenerateError:
        p = self.policy
        return GenerateError(f"out of GPU memory for a KV cache of {p.cache_slots} slots x {p.cache_len} positions "
                             f"({self.plan.dtype}).", "rebuild with a smaller --batch or --seq max, or --dtype float16.")

    def check(self, prompt, max_new_tokens: int, index: int = 0) -> list[int]:
        """One request, before any device work; returns the prompt as a list of ints."""
        return check_prompt(prompt, max_new_tokens, index, self.vocab, self.max_len, self.n_positions,
                            self.engine.rebuild_hint)

    # ---- continuous batching ---------------------------------------------------------------------
    def admit(self, reqs: list[Request]) -> None:
        """Prefill ``reqs`` into free slots (checked first); their first tokens arrive with the next step."""
        if len(reqs) > len(self.free):
            raise GenerateError(f"{len(reqs)} requests but {len(self.free)} free slots (batch max {self.max_batch}).",
                                f"wait for running requests, or rebuild: {self.engine.rebuild_hint(batch=f'1:{len(reqs)}')}")
        for i, r in enumerate(reqs):
            r.prompt = self.check(r.prompt, r.max_new_tokens, i)
        groups: dict[int, list[Request]] = {}
        for r in reqs:
            groups.setdefault(self.graphs.prefill_len(len(r.prompt)), []).append(r)
        for T, group in sorted(groups.items()):
            for r in group:
                r.slot, r.launched = self.free.pop(0), 1
            self.active += group
            try:
                out = self.graphs.prefill(group, T)          # (Bg,) first tokens on the device
            except OOM:
                raise self._oom() from None
            self._launched(out[None], group)

    def step(self) -> list[Request]:
        """One decode chunk for every active row; delivers the previous chunk; returns finished requests."""
        live = [r for r in self.active if not r.finished and r.launched < r.max_new_tokens]
        if live:
            n = self.policy.steps_per_graph
            if max(r.max_new_tokens - r.launched for r in live) < n:
                n = 1
            mode = batch_mode(r.sampling for r in live)
            out = self.graphs.decode(live, n, mode)             # (n, Bg) tokens on the device
            for r in live:
                r.launched += n
            self._launched(out, live, n)
        return self._deliver(keep=1 if live else 0)

    def cancel(self, req: Request) -> None:
        """Stop a request now (a client went away) and free its slot."""
        if req in self.active and not req.finished:
            req.finish_reason = "cancelled"
        self._release([req])

    def flush(self) -> list[Request]:
        return self._deliver(keep=0)

    def discard(self) -> None:
        """After a failed launch: drop the tokens still in flight (their requests are being failed; the
        pinned buffers they were copied into are freed by torch only once those copies are done)."""
        self.pending.clear()

    @property
    def busy(self) -> bool:
        return bool(self.active or self.pending)

    def _launched(self, out: torch.Tensor, reqs: list[Request], steps: int = 0) -> None:
        """Queue the device's tokens (n, Bg) for delivery without waiting for them."""
        host = torch.empty(out.shape, dtype=out.dtype, pin_memory=out.is_cuda)   # the graph reuses ``out``
        host.copy_(out, non_blocking=out.is_cuda)
        event = None
        if out.is_cuda:
            event = torch.cuda.Event()
            event.record()
        if self.clock is not None:
            self.clock.mark(steps)
        self.pending.append((event, host, list(reqs)))

    def _deliver(self, keep: int) -> list[Request]:
        finished = []
        while len(self.pending) > keep:
            event, host, reqs = self.pending.popleft()
            if event is not None:
                event.synchronize()
            for col, r in enumerate(reqs):
                if r.finished:
                    continue
                for tok in host[:, col].tolist():
                    if r.take(tok):
                        finished.append(r)
                        break
        self._release(finished)
        return finished

    def _release(self, reqs: list[Request]) -> None:
        for r in reqs:
            if r in self.active:
                self.active.remove(r)
                self.free.append(r.slot)

    # ---- offline ---------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompts, max_new_tokens: int, sampling: SamplingSettings | None = None,
                 eos_token_id: int | None = None, ignore_eos: bool = False, on_token=None) -> list[list[int]]:
        """New tokens per prompt (EOS kept when met). ``on_token(row, token)`` streams them in order.

        ``eos_token_id`` None means the model's EOS; ``ignore_eos`` makes every row run its budget.
        """
        check_batch(prompts, self.max_batch, self.engine.rebuild_hint)
        if self.busy:
            raise GenerateError("this generator is serving other requests.", "use admit/step, or another engine.")
        eos = None if ignore_eos else (self.plan.model.get("eos_token_id") if eos_token_id is None else eos_token_id)
        sampling = sampling or SamplingSettings()
        reqs = [Request(list(p) if isinstance(p, (list, tuple)) else p, max_new_tokens, sampling, eos) for p in prompts]
        for i, r in enumerate(reqs):              # prompts are checked by admit, before any device work
            if on_token is not None:
                r.on_token = (lambda row: lambda req, tok: on_token(row, tok))(i)
        self.clock = Clock(self.device)
        self.clock.mark()
        t0 = time.perf_counter()
        self.admit(reqs)
        while self.active:
            self.step()
        self.flush()
        self.last_timing = self.clock.read(time.perf_counter() - t0)
        self.clock = None
        return [r.tokens for r in reqs]

    # ---- teacher forcing (verify) ----------------------------------------------------------------
    @torch.no_grad()
    def prefill_logits(self, prompts: list[list[int]]) -> torch.Tensor:
        """Logits (B, V) after each prompt (slots 0..B-1), through the engine's prefill graph."""
        return self.graphs.raw_prefill(prompts)

    @torch.no_grad()
    def decode_logits(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Logits (B, V) for tokens (B,) fed at positions (B,) of slots 0..B-1 (their caches filled)."""
        return self.graphs.raw_decode(tokens, positions)
