"""Captured steps: prefill and decode bodies over static buffers, replayed as CUDA graphs on a GPU.

A body reads and writes only buffers that outlive it (the cache, the slot state, its own inputs and
outputs), so one capture serves every later call of its shape: the host only rewrites the ``rows``
buffer (which slot each batch row is) and the prompt buffers. Batches are padded to the size the
graph has (the plan's CUDA-graph sizes; compiled graphs start at 2) with rows that name the scratch
slot. Before a capture the body runs once on a side stream with every row on the scratch slot, so
compilation, autotuning and library workspaces stay out of the graph and no request is touched.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch

from .sampling import batch_mode, choose
from .state import right_pad


def _round_up(n: int, k: int) -> int:
    return -(-n // k) * k


def _fields(B: int, T: int) -> list[int]:
    """Offsets of a prefill buffer's last, rows, top_k and seed fields after its (B, T) prompts, and its
    length: each field starts on a 16-byte boundary, so the kernels given a field (rows) see the same
    pointer alignment at every B and T (Triton compiles a kernel per alignment: a variant the build did
    not meet would compile at load)."""
    start = _round_up(B * T, 2)
    return [start + j * _round_up(B, 2) for j in range(5)]


def prefill_len(plan, n: int) -> int:
    """The length a prompt of n tokens is right-padded to (bucketed; compiled graphs start at 2)."""
    T = _round_up(plan.graph_size("seq", n), plan.runtime.prefill_bucket)
    return max(min(T, plan.graph["seq"].max), n)


def decode_batch(plan, n: int, graphs: bool = True) -> int:
    """The batch a step of n rows runs as: with CUDA graphs the smallest captured size >= n; at least the
    graph's min."""
    sizes = [s for s in plan.runtime.cuda_graph_batches if s >= n] if graphs else []
    return plan.graph_size("batch", min(sizes) if sizes else n)


def capture(body, pool=None) -> torch.cuda.CUDAGraph:
    """Run ``body`` once on a side stream (compilation, autotuning and library workspaces stay out of the
    graph), then capture it into a CUDA graph (from ``pool`` when given)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        body()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        body()
    return graph


class GraphSet:
    def __init__(self, gen, prefill_fn, decode_fn, greedy_fn=None):
        self.gen, self.plan, self.policy = gen, gen.plan, gen.policy
        self.prefill_fn, self.decode_fn, self.greedy_fn = prefill_fn, decode_fn, greedy_fn
        self.device = gen.device
        self.cuda = self.device.type == "cuda" and bool(self.policy.cuda_graph_batches)
        self.pool = torch.cuda.graph_pool_handle() if self.cuda else None
        self.entries: dict[tuple, SimpleNamespace] = {}
        self.scratch = self.policy.scratch_slot

    # ---- sizes -----------------------------------------------------------------------------------
    def batch_size(self, n: int) -> int:
        return decode_batch(self.plan, n, self.cuda)

    def prefill_len(self, n: int) -> int:
        return prefill_len(self.plan, n)

    def _rows(self, slots: list[int], B: int) -> torch.Tensor:
        return torch.tensor(slots + [self.scratch] * (B - len(slots)), dtype=torch.long)

    # ---- bodies ----------------------------------------------------------------------------------
    def _decode_body(self, e, n: int, mode: str):
        # a row past its budget still runs until the chunk ends: it repeats the last position it may
        # hold (inside the cache and below n_positions, so the position embedding stays in range)
        last_pos = min(self.policy.cache_len, self.plan.model["n_positions"]) - 1
        st, gen = self.gen.state, self.gen
        if mode == "greedy" and self.greedy_fn is not None:    # the backend's own greedy step (same math)
            def greedy_body():
                for i in range(n):
                    self.greedy_fn(e.rows, st.tok, st.pos, last_pos, gen.k, gen.v, e.out[i])
            return greedy_body

        def body():
            rows = e.rows
            for i in range(n):
                pos = st.pos[rows].clamp(max=last_pos)
                logits = self.decode_fn(st.tok[rows], pos, rows, gen.k, gen.v)     # (B, V)
                nxt = self._pick(logits, mode, rows, pos + 1)
                e.out[i].copy_(nxt)
                st.tok[rows] = nxt
                st.pos[rows] = pos + 1
        return body

    def _prefill_body(self, e, mode: str):
        st, gen = self.gen.state, self.gen

        def body():
            st.top_k[e.rows], st.seed[e.rows] = e.top_k, e.seed                   # the rows' sampling settings
            st.temperature[e.rows], st.top_p[e.rows] = e.floats[0], e.floats[1]
            logits = self.prefill_fn(e.idx, e.last, e.rows, gen.k, gen.v)          # (B, V)
            first = self._pick(logits, mode, e.rows, e.last + 1)
            e.out.copy_(first)
            st.tok[e.rows] = first
            st.pos[e.rows] = e.last + 1
        return body

    def _pick(self, logits, mode: str, rows, position) -> torch.Tensor:
        """The next tokens; greedy needs no sampling settings (no gathers of them in the graph)."""
        if mode == "greedy":
            return logits.argmax(-1)
        return choose(logits, mode, *self.gen.state.sampling(rows), position)

    @torch.no_grad()      # compiled graphs guard on grad mode: every run and capture is inference
    def _entry(self, key: tuple) -> SimpleNamespace:
        if key in self.entries:
            return self.entries[key]
        kind, B = key[0], key[1]
        z = lambda *shape: torch.zeros(shape, dtype=torch.long, device=self.device)  # noqa: E731
        if kind == "decode":
            e = SimpleNamespace(rows=z(B), out=z(key[2], B))
            body = self._decode_body(e, key[2], key[3])
        else:                    # one int64 buffer: idx (B, T) | last | rows | top_k | seed, and the floats
            T = key[2]
            at = _fields(B, T)
            ints, floats = z(at[-1]), torch.zeros(2, B, dtype=torch.float32, device=self.device)
            e = SimpleNamespace(ints=ints, floats=floats, idx=ints[:B * T].view(B, T), out=z(B), copied=None, at=at,
                                **{name: ints[at[i]:at[i] + B] for i, name in
                                   enumerate(("last", "rows", "top_k", "seed"))})
            e.host_ints, e.host_floats = (torch.zeros_like(t, device="cpu").pin_memory() if self.cuda
                                          else torch.zeros_like(t) for t in (ints, floats))
            body = self._prefill_body(e, key[3])
        e.run = self._capture(body, e) if self.cuda else body
        self.entries[key] = e
        return e

    def _capture(self, body, e):
        """Warm up on the scratch slot, then capture ``body`` into a graph."""
        e.rows.fill_(self.scratch)
        e.graph = capture(body, self.pool)
        return e.graph.replay

    def capture_decode(self) -> None:
        """Capture the greedy decode chunks of every planned batch size (single steps, for the ends of
        budgets, and sampling graphs are captured on first use: a few milliseconds each)."""
        if not self.cuda:
            return
        for B in sorted({self.batch_size(b) for b in self.policy.cuda_graph_batches}):
            self._entry(("decode", B, self.policy.steps_per_graph, "greedy"))
        torch.cuda.synchronize()

    # ---- runs ------------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, reqs, n: int, mode: str) -> torch.Tensor:
        """n decode steps for the requests' rows -> tokens (n, B) on the device."""
        e = self._entry(("decode", self.batch_size(len(reqs)), n, mode))
        e.rows.copy_(self._rows([r.slot for r in reqs], e.rows.shape[0]), non_blocking=True)
        e.run()
        return e.out

    @torch.no_grad()
    def prefill(self, reqs, T: int) -> torch.Tensor:
        """Prefill the requests (prompts <= T) into their slots -> first tokens (B,) on the device. The
        host writes the prompts, rows and sampling settings into pinned buffers, copied in two transfers."""
        e = self._entry(("prefill", self.batch_size(len(reqs)), T, batch_mode(r.sampling for r in reqs)))
        B = e.rows.shape[0]
        if e.copied is not None:
            e.copied.synchronize()                           # the previous copy out of these buffers is done
        ints, floats, at = e.host_ints.numpy(), e.host_floats.numpy(), e.at
        ints[:] = 0
        ints[at[1]:at[1] + B] = self.scratch                 # padding rows: the scratch slot
        floats[0], floats[1] = 0.0, 1.0
        for i, r in enumerate(reqs):
            n, s = len(r.prompt), r.sampling
            ints[i * T:i * T + n] = r.prompt
            for j, value in enumerate((n - 1, r.slot, s.top_k, s.seed)):
                ints[at[j] + i] = value
            floats[0, i], floats[1, i] = s.temperature, s.top_p
        e.ints.copy_(e.host_ints, non_blocking=True)
        e.floats.copy_(e.host_floats, non_blocking=True)
        if self.cuda:
            e.copied = torch.cuda.Event()
            e.copied.record()
        e.run()
        return e.out

    # ---- teacher forcing (no graphs, no sampling) ------------------------------------------------
    @torch.no_grad()
    def raw_prefill(self, prompts: list[list[int]]) -> torch.Tensor:
        B = len(prompts)
        Bg, T = self.plan.graph_size("batch", B), self.plan.graph_size("seq", max(len(p) for p in prompts))
        idx, _, last = right_pad(prompts, Bg, T)
        rows = self._rows(list(range(B)), Bg)
        dev = self.device
        return self.prefill_fn(idx.to(dev), last.to(dev), rows.to(dev), self.gen.k, self.gen.v)[:B]

    @torch.no_grad()
    def raw_decode(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        B = tokens.shape[0]
        Bg = self.plan.graph_size("batch", B)
        pad = lambda t, v: torch.cat([t.cpu(), torch.full((Bg - B,), v, dtype=torch.long)])  # noqa: E731
        dev = self.device
        rows = self._rows(list(range(B)), Bg).to(dev)
        return self.decode_fn(pad(tokens, 0).to(dev), pad(positions, 0).to(dev), rows, self.gen.k, self.gen.v)[:B]
