"""Fast generation on the lean GPT-2 runtime: compiled prefill, CUDA-graph decode, mixed-length batches.

How a request runs (``FastGenerator.generate``):

1. Prompts are right-padded to one length ``T`` (rounded up to ``prefill_bucket``, at least 2, since
   torch specialises sizes 0 and 1). Causal attention makes this exact: real tokens never see the
   padding, and the first new token is sampled from each row's last real position.
2. Decode runs ``max_new_tokens - 1`` static-shape steps. Each row feeds its token at its own
   position (a tensor), so rows of different lengths share one step. A step reads only the first
   ``S`` cache slots (the largest position in use, rounded up to ``attn_bucket``); on a GPU the
   split-KV attention kernel reads each row's keys and values only up to its own position.
3. On a GPU, prefill and decode are compiled with inductor (no cudagraphs mode) and captured by us:
   one ``torch.cuda.CUDAGraph`` per (batch, S) holding ``steps_per_graph`` whole decode steps, so
   one replay pays the host overhead once for several tokens; a one-step graph runs the remainder.
   The host checks EOS and streams tokens one chunk behind the GPU, so it never stalls the queue.
   On the CPU the same step functions run eagerly.
4. Exact runtime options, each A/B-measured (``bench/ab_decode.py``): ``vocab_pad`` (logits against
   an output weight padded to a multiple of 64 rows, so cuBLAS's lm_head GEMM gets an aligned row
   stride; the padding is sliced off) and ``projections`` ("mm": matmul plus add that inductor may
   fuse, or "linear": cuBLAS ``F.linear``).

Rows stop at EOS (the EOS token is kept; later slots are filled with EOS and cut) or at the budget.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from .. import backends
from ..errors import DynashapeError, GenerateError
from ..models import gpt2 as gpt2_module
from ..models.gpt2 import DECODE_ATTENTION, GPT2, PROJECTIONS
from ..models.load import parse_dtype
from .sampling import SamplingSettings, make_generator, sample_next
from .streaming import Clock, HostStream

OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


@dataclass
class GenTiming:
    """What the last ``generate`` call measured (CUDA events on a GPU, the host clock on the CPU)."""
    ttft_ms: float = 0.0                                  # request start -> first token on the device
    step_ms: list[float] = field(default_factory=list)   # per decode token (a chunk's time / its steps)
    total_ms: float = 0.0
    setup_s: float = 0.0                                  # compile + warm-up + capture inside this call
    graphs_captured: int = 0


class _Slots:
    """Static device buffers of one batch size; captured graphs read and write exactly these."""

    def __init__(self, B: int, K: int, device):
        self.tok = torch.zeros(B, dtype=torch.long, device=device)    # token fed next
        self.pos = torch.zeros(B, dtype=torch.long, device=device)    # its cache slot / position
        self.done = torch.zeros(B, dtype=torch.bool, device=device)   # row met EOS
        self.chunk = torch.zeros(K, B, dtype=torch.long, device=device)  # tokens made by one replay

    def clone(self) -> "_Slots":
        c = _Slots.__new__(_Slots)
        c.tok, c.pos, c.done, c.chunk = (t.clone() for t in (self.tok, self.pos, self.done, self.chunk))
        return c


def _advance(nxt, tok, pos, done, out_row, eos: int) -> None:
    """After a step: finished rows repeat EOS; record the token; feed it next at pos + 1."""
    if eos >= 0:
        nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
        done.logical_or_(nxt == eos)
    out_row.copy_(nxt)
    tok.copy_(nxt)
    pos.add_(1)


def greedy_steps(model: GPT2):
    """Greedy prefill and decode steps with the argmax (and the bookkeeping) inside: one compiled
    graph each, so no eager reduction over the vocabulary is left between captured kernels."""
    def prefill_greedy(idx, last):
        return model.prefill(idx, last).argmax(-1)

    def decode_greedy(tok, pos, done, out_row, attn_len: int, eos: int) -> None:
        _advance(model.decode(tok, pos, attn_len).argmax(-1), tok, pos, done, out_row, eos)
    return prefill_greedy, decode_greedy


def _compile_decode(fn, tune: bool):
    """Two compiled variants of a decode step, chosen by batch (its first argument's length).

    Batch 1 (which torch specialises anyway) with coordinate-descent tuning: inductor then turns
    every one-row matmul into a fused matrix-vector reduction (the layer norm before it and the
    bias after it fused in). Larger batches without it: the matmuls stay cuBLAS calls, and the
    pattern matcher is off so the attention products are not rewritten into a fused kernel that
    parallelises over (batch, head) only.
    """
    one = torch.compile(fn, dynamic=True, options={"coordinate_descent_tuning": True} if tune else {})
    many = torch.compile(fn, dynamic=True, options={"pattern_matcher": False})
    return lambda tok, *args: (one if tok.shape[0] == 1 else many)(tok, *args)


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of all distinct weights (tied ones once): what a decode step must read at least once."""
    seen = {p.data_ptr(): p.numel() * p.element_size() for p in module.parameters()}
    return sum(seen.values())


def _shape_plan(hf, max_batch: int, max_len: int):
    """The foundation's ShapePlan for prompts of 1..max_len tokens and 1..max_batch rows: it says which
    prompt lengths the dynamic prefill cannot take (length 1 is padded to 2) and records why."""
    from ..planning.rules import PlanSettings, make_plan
    from ..planning.shapes import Range

    info = {"name": getattr(hf.config, "name_or_path", "") or "gpt2", "n_positions": int(hf.config.n_positions),
            "vocab_size": int(hf.config.vocab_size), "n_layer": int(hf.config.n_layer),
            "n_head": int(hf.config.n_head), "n_embd": int(hf.config.n_embd)}
    return make_plan(info, PlanSettings(seq=Range(1, max_len), batch=Range(1, max_batch)))


def _round_up(n: int, k: int) -> int:
    return -(-n // k) * k


def resolve_device(device) -> torch.device:
    """backends.resolve_device (the one device rule), raised as this runtime's GenerateError."""
    try:
        return torch.device(backends.resolve_device(device))
    except DynashapeError as e:
        raise GenerateError(e.message, e.fix) from None


def resolve_dtype(dtype, device: torch.device) -> torch.dtype:
    """models.parse_dtype with the device's default for None/'auto', raised as GenerateError."""
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return parse_dtype(backends.default_dtype(str(device)) if dtype in (None, "auto") else dtype)
    except DynashapeError as e:
        raise GenerateError(e.message, e.fix) from None


class FastGenerator:
    """Generate token ids with the lean runtime. Plan sizes once: ``max_batch`` rows, ``max_len`` slots."""

    def __init__(self, model, device=None, dtype=None, max_batch: int = 8, max_len: int | None = None, *,
                 compile: bool | None = None, cuda_graphs: bool | None = None, steps_per_graph: int = 8,
                 attn_bucket: int = 128, prefill_bucket: int | None = None, tune: bool = True,
                 attention: str = "auto", vocab_pad: int = 64, projections: str = "mm"):
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        on_gpu = self.device.type == "cuda"
        self.compiled = on_gpu if compile is None else bool(compile)
        self.cuda_graphs = on_gpu if cuda_graphs is None else bool(cuda_graphs) and on_gpu
        self.steps_per_graph = max(1, int(steps_per_graph))
        self.attn_bucket = max(1, int(attn_bucket))
        self.prefill_bucket = (64 if self.compiled else 1) if prefill_bucket is None else max(1, int(prefill_bucket))
        hf = getattr(model, "model", model)                   # LoadedModel -> GPT2LMHeadModel
        n_positions = int(hf.config.n_positions)
        self.max_len = n_positions if max_len is None else int(max_len)
        self.max_batch = int(max_batch)
        self._check_plan(n_positions)
        self.plan = _shape_plan(hf, self.max_batch, self.max_len)  # prefill sizes come from the planner
        if projections not in PROJECTIONS:
            raise GenerateError(f"unknown projections {projections!r}.", "use projections='mm' or 'linear'.")
        self.vocab_pad, self.projections = max(1, int(vocab_pad)), projections
        try:
            self.model = hf.to(self.device, self.dtype) if isinstance(hf, GPT2) else \
                GPT2.from_hf(hf, dtype=self.dtype, device=self.device)
            # one spare slot: a window S equal to the whole buffer makes the slice a no-op, which
            # torch specialises on (a recompile); with the spare slot S < buffer length always
            self.model.setup_cache(self.max_batch, self.max_len + 1)
        except OOM:
            raise self._oom(self.max_batch) from None
        self.config = self.model.config
        self.attention = self._resolve_attention(attention)
        self.model.set_decode_attention(self.attention)
        self.model.set_projections(self.projections)
        self.model.pad_vocab(self.vocab_pad)
        self.last_timing = GenTiming()
        self._gen = make_generator(self.device, 0)
        self._slots: dict[int, _Slots] = {}
        self._graphs: dict[tuple, tuple] = {}
        self._pool = torch.cuda.graph_pool_handle() if self.cuda_graphs else None
        self._prefill_fn, self._decode_fn, self._advance_fn = self.model.prefill, self.model.decode, _advance
        self._prefill_greedy, self._decode_greedy = greedy_steps(self.model)
        if self.compiled:
            # dynamic=True: batch and lengths symbolic from the first call, so one graph serves every
            # size >= 2 (torch specialises size 1: batch 1 compiles once more, prompts are padded to 2)
            self._prefill_fn = torch.compile(self.model.prefill, dynamic=True)
            self._advance_fn = torch.compile(_advance, dynamic=True)
            self._prefill_greedy = torch.compile(self._prefill_greedy, dynamic=True)
            self._decode_fn = _compile_decode(self.model.decode, tune)
            self._decode_greedy = _compile_decode(self._decode_greedy, tune)

    # ---- checks ------------------------------------------------------------------------------
    def _check_plan(self, n_positions: int) -> None:
        if self.max_batch < 1:
            raise GenerateError(f"max_batch {self.max_batch} is below 1.", "use --max-batch 1 or more.")
        if not 2 <= self.max_len <= n_positions:
            raise GenerateError(f"cache length {self.max_len} is outside 2..{n_positions} (the model's positions).",
                                f"use --max-len between 2 and {n_positions}.")

    def _resolve_attention(self, attention: str) -> str:
        """"auto": the split-KV kernel on a GPU with Triton (power-of-two head size), matmuls otherwise."""
        if attention not in ("auto", *DECODE_ATTENTION):
            raise GenerateError(f"unknown decode attention {attention!r}.", "use attention='auto', 'kernel' or 'matmul'.")
        if attention != "auto":
            return attention
        D = self.model.config.head_dim
        fits = self.device.type == "cuda" and gpt2_module.triton is not None and D & (D - 1) == 0
        return "kernel" if fits else "matmul"

    def _oom(self, batch: int) -> GenerateError:
        return GenerateError(f"out of GPU memory for batch {batch} with a KV cache of {self.max_batch} rows x "
                             f"{self.max_len} positions ({self.dtype}).",
                             "lower --max-batch, --max-len or the batch, or use --dtype float16.")

    def check_request(self, prompts, max_new_tokens: int) -> tuple[torch.Tensor, list[int]]:
        """Validate before any device work. Returns right-padded ids (B, max length) and the lengths."""
        if not isinstance(prompts, (list, tuple)) or not prompts:
            raise GenerateError("no prompts given.", "pass at least one prompt of token ids.")
        if len(prompts) > self.max_batch:
            raise GenerateError(f"batch of {len(prompts)} prompts is larger than the planned max batch {self.max_batch}.",
                                f"create the generator with max_batch={len(prompts)} (--max-batch {len(prompts)}), "
                                "or split the prompts.")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise GenerateError(f"max_new_tokens {max_new_tokens} is not a whole number >= 0.", "use --max-new-tokens 32.")
        V, P = self.config.vocab_size, self.config.n_positions
        lengths = [len(p) for p in prompts]
        for i, n in enumerate(lengths):
            if n == 0:
                raise GenerateError(f"prompt {i} is empty.", "give every prompt at least one token.")
            if n > P:
                raise GenerateError(f"prompt {i} has {n} tokens; the model has {P} positions.",
                                    f"shorten the prompt to at most {P} tokens.")
            if n + max_new_tokens > self.max_len:
                raise GenerateError(f"prompt {i} ({n} tokens) plus {max_new_tokens} new tokens is beyond the "
                                    f"cache length {self.max_len}.",
                                    f"use --max-new-tokens {max(self.max_len - n, 0)} or less, or raise --max-len "
                                    f"(at most {P}).")
        ids = torch.zeros(len(prompts), max(lengths), dtype=torch.long)
        for i, p in enumerate(prompts):
            try:
                row = torch.as_tensor(p)
            except (TypeError, ValueError, RuntimeError):
                row = None
            if row is None or row.dim() != 1 or row.dtype.is_floating_point or row.dtype.is_complex \
                    or row.dtype == torch.bool:
                raise GenerateError(f"prompt {i} is not a list of whole-number token ids.",
                                    "pass prompts as lists of ints, e.g. [[464, 3290]].")
            lo, hi = int(row.min()), int(row.max())
            if lo < 0 or hi >= V:
                raise GenerateError(f"prompt {i} holds token id {lo if lo < 0 else hi}, outside the vocabulary "
                                    f"0..{V - 1}.", f"use token ids below {V} (the model's vocab_size).")
            ids[i, :lengths[i]] = row
        return ids, lengths

    # ---- public ------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompts, max_new_tokens: int, sampling: SamplingSettings | None = None,
                 eos_token_id: int | None = None, ignore_eos: bool = False, on_token=None) -> list[list[int]]:
        """New tokens per prompt (EOS kept when met). ``on_token(row, token)`` streams them in order.

        ``eos_token_id`` None means the model's EOS; ``ignore_eos`` makes every row run the whole budget.
        """
        clock = Clock(self.device)
        clock.mark()                                        # the request starts here (checks included)
        sampling = sampling or SamplingSettings()
        ids, lengths = self.check_request(prompts, max_new_tokens)
        if max_new_tokens == 0:
            self.last_timing = GenTiming()
            return [[] for _ in prompts]
        eos = eos_token_id if eos_token_id is not None else self.config.eos_token_id
        eos = -1 if ignore_eos or eos is None else int(eos)
        try:
            return self._generate(ids, lengths, max_new_tokens, sampling, eos, on_token, clock)
        except OOM:
            raise self._oom(len(prompts)) from None

    def weight_bytes(self) -> int:
        return weight_bytes(self.model)

    def options(self) -> dict:
        """The runtime options in effect (recorded with every benchmark record)."""
        return dict(attention=self.attention, vocab_pad=self.vocab_pad, projections=self.projections,
                    steps_per_graph=self.steps_per_graph, attn_bucket=self.attn_bucket,
                    cuda_graphs=self.cuda_graphs, compiled=self.compiled)

    # ---- the request -------------------------------------------------------------------------
    def _generate(self, ids, lengths, max_new, sampling, eos, on_token, clock) -> list[list[int]]:
        B, dev = len(lengths), self.device
        self._setup_s, self._captured = 0.0, 0
        self._gen.manual_seed(sampling.seed)
        if B not in self._slots:
            self._slots[B] = _Slots(B, self.steps_per_graph, dev)
        sl = self._slots[B]
        out = torch.full((B, max_new), max(eos, 0), dtype=torch.long, device=dev)
        first = self._prefill(ids, lengths, sampling)       # (B,) on the device
        out[:, 0] = first
        sl.tok.copy_(first)
        sl.pos.copy_(torch.tensor(lengths, device=dev))
        if eos >= 0:
            torch.eq(first, eos, out=sl.done)
        else:
            sl.done.zero_()
        clock.mark()
        host = HostStream(out, on_token, eos)
        host.push(0, 1)
        steps, j, max_l = max_new - 1, 0, max(lengths)
        while j < steps and not host.all_done:
            n = self.steps_per_graph if steps - j >= self.steps_per_graph else 1
            S = min(self.max_len, _round_up(max_l + j + n, self.attn_bucket))   # slots any row may read
            self._decode_chunk(sl, n, S, sampling, eos)
            out[:, 1 + j:1 + j + n] = sl.chunk[:n].t()
            clock.mark(n)
            host.push(1 + j, 1 + j + n)
            j += n
        rows = host.finish()
        t = GenTiming(*clock.read(), setup_s=self._setup_s, graphs_captured=self._captured)
        self.last_timing = t
        return rows

    def _prefill(self, ids, lengths, sampling) -> torch.Tensor:
        B = len(lengths)
        T = min(self.max_len, _round_up(self.plan.graph_size("seq", ids.shape[1]), self.prefill_bucket))
        padded = torch.zeros(B, T, dtype=torch.long)
        padded[:, :ids.shape[1]] = ids
        last = torch.tensor(lengths, dtype=torch.long) - 1
        key = ("prefill", B, T, _sampling_key(sampling))
        if key not in self._graphs:
            bufs = (padded.to(self.device, copy=True), last.to(self.device, copy=True),
                    torch.zeros(B, dtype=torch.long, device=self.device))

            def body(gen):                                     # rerunning it rewrites the same slots
                if sampling.greedy:
                    bufs[2].copy_(self._prefill_greedy(bufs[0], bufs[1]))
                else:
                    bufs[2].copy_(sample_next(self._prefill_fn(bufs[0], bufs[1]), sampling, gen))
            self._graphs[key] = (self._capture(body, sampling.greedy, warm=body), bufs)
        run, bufs = self._graphs[key]
        bufs[0].copy_(padded)
        bufs[1].copy_(last)
        run()
        return bufs[2]

    def _decode_chunk(self, sl: _Slots, n: int, S: int, sampling, eos: int) -> None:
        key = ("decode", sl.tok.shape[0], n, S, _sampling_key(sampling), eos)
        if key not in self._graphs:
            def body(gen, slots=sl):
                for i in range(n):
                    if sampling.greedy:
                        self._decode_greedy(slots.tok, slots.pos, slots.done, slots.chunk[i], S, eos)
                        continue
                    logits = self._decode_fn(slots.tok, slots.pos, S)      # (B, V)
                    nxt = sample_next(logits, sampling, gen)
                    self._advance_fn(nxt, slots.tok, slots.pos, slots.done, slots.chunk[i], eos)
            # warm up on copies: the KV slots it writes (pos..pos+n-1) are rewritten by the real steps
            self._graphs[key] = (self._capture(body, sampling.greedy, warm=lambda gen: body(gen, sl.clone())), None)
        self._graphs[key][0]()

    def _capture(self, body, greedy: bool, warm):
        """A callable running ``body(generator)``: a replayed CUDA graph on the GPU, eager otherwise.

        ``warm(generator)`` runs the same shapes first (compile, autotune, cuBLAS workspaces) without
        touching state the request still needs.
        """
        eager = lambda: body(self._gen)  # noqa: E731
        if not self.cuda_graphs:
            return eager
        graph = torch.cuda.CUDAGraph()
        if not greedy and not hasattr(graph, "register_generator_state"):
            return eager                                   # old torch: seeded sampling stays eager
        t0 = time.perf_counter()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):                      # compile + autotune outside the capture
            for _ in range(2):
                warm(make_generator(self.device, 0))
        torch.cuda.current_stream().wait_stream(side)
        if not greedy:
            graph.register_generator_state(self._gen)      # replays advance the seeded generator
        with torch.cuda.graph(graph, pool=self._pool):
            body(self._gen)
        self._setup_s += time.perf_counter() - t0
        self._captured += 1
        return graph.replay


def _sampling_key(s: SamplingSettings) -> tuple:
    return (s.temperature, s.top_k, s.top_p)
