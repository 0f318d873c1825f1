"""One /v1/completions request: prompts -> checked jobs -> the scheduler -> choices (whole, or as SSE).

Everything a request can get wrong is checked here, before it is queued (400 at once, one line with
the fix): text without a tokenizer, unsupported options, token ids outside the vocabulary, a prompt
plus max_tokens beyond the engine's positions. The jobs of one request share one asyncio queue; the
scheduler thread puts ``(index, tokens, finish_reason, error)`` updates on it.

A sequence ends at max_tokens ("length"), at EOS (unless ``ignore_eos``), at a stop token id, or at
a stop string ("stop"). The token that stopped it is counted in usage but left out of the text and
``token_ids``; a stop string cuts the text where it starts, and the job is cancelled at once so its
slot is free for the next request.
"""
from __future__ import annotations

import asyncio
import random
import time
import uuid

from ..errors import GenerateError
from ..runtime.sampling import SamplingSettings
from ..runtime.state import Request
from . import protocol as P
from .scheduler import Job
from .text import TextStream


class Completion:
    def __init__(self, serving, body: P.CompletionRequest):
        self.serving, self.body = serving, body
        self.cid, self.created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        self.queue: asyncio.Queue = asyncio.Queue()
        self.jobs: list[Job] = []
        self.shapes: list[tuple[int, int]] = []     # (prompt length, max_tokens) per prompt, for the request log
        self.prompt_tokens = 0

    # ---- checks -> jobs ----------------------------------------------------------------------------
    def build(self) -> list[Job]:
        """The request's jobs, every check done; raises APIError(400) for the first problem."""
        b, s = self.body, self.serving
        bad = b.unsupported()
        if bad:
            raise P.APIError.bad(f"{bad[0]}={bad[1]!r} is not supported by this server.",
                                 f"leave {bad[0]} out (or at its default).", bad[0])
        prompts = self._prompts()
        max_tokens = 16 if b.max_tokens is None else b.max_tokens
        self.shapes = [(len(p), max_tokens) for p in prompts]
        self.stops = self._stops()
        eos = None if b.ignore_eos else s.eos
        stop_ids = tuple(b.stop_token_ids or ())
        seed = random.getrandbits(62) if b.seed is None else b.seed
        sampling = SamplingSettings(1.0 if b.temperature is None else b.temperature, b.top_k or 0,
                                    1.0 if b.top_p is None else b.top_p, seed)
        loop = asyncio.get_running_loop()
        for i, prompt in enumerate(prompts):
            prompt = self._check(prompt, max_tokens, i)
            req = Request(prompt, max_tokens, sampling, eos, stop_ids)
            self.jobs.append(Job(req, i, loop, self.queue))
        self.prompt_tokens = sum(len(j.req.prompt) for j in self.jobs)
        return self.jobs

    def _prompts(self) -> list[list[int]]:
        p, tok = self.body.prompt, self.serving.tokenizer
        many = p if isinstance(p, list) and p and isinstance(p[0], (list, str)) else [p]
        if isinstance(p, list) and not p:
            raise P.APIError.bad("prompt is an empty list.", "send at least one token id or some text.", "prompt")
        if len(many) > self.serving.max_prompts:
            raise P.APIError.bad(f"{len(many)} prompts in one request is more than this server holds "
                                 f"({self.serving.max_prompts}: batch plus --max-queue).",
                                 "split them over several requests.", "prompt")
        if any(isinstance(x, str) for x in many):
            if tok is None:
                raise P.APIError.bad("this engine has no tokenizer, so prompts must be token ids, not text.",
                                     'send "prompt": [464, 3290] (lists of ids), or serve an engine built from a '
                                     "model with a tokenizer.", "prompt")
            return [tok.encode(x) for x in many]
        return many

    def _stops(self) -> list[str]:
        b, s = self.body, self.serving
        stops = [b.stop] if isinstance(b.stop, str) else list(b.stop or [])
        if stops and s.tokenizer is None:
            raise P.APIError.bad("stop strings need a tokenizer, and this engine has none.",
                                 'use "stop_token_ids": [ids] instead.', "stop")
        if any(x == "" for x in stops):
            raise P.APIError.bad("a stop string is empty.", "leave empty strings out of stop.", "stop")
        bad = [i for i in (b.stop_token_ids or ()) if not 0 <= i < s.vocab]
        if bad:
            raise P.APIError.bad(f"stop_token_ids holds {bad[0]}, outside the vocabulary 0..{s.vocab - 1}.",
                                 f"use ids below {s.vocab}.", "stop_token_ids")
        return stops

    def _check(self, prompt: list[int], max_tokens: int, index: int) -> list[int]:
        try:
            return self.serving.generator.check(prompt, max_tokens, index)
        except GenerateError as e:
            text = e.one_line().replace("--max-new-tokens", "max_tokens").replace("new tokens", "max_tokens")
            over = isinstance(prompt, list) and len(prompt) + max_tokens > self.serving.max_len
            short = isinstance(prompt, list) and len(prompt) < self.serving.max_len
            raise P.APIError.bad(text, param="max_tokens" if over and short else "prompt") from None

    # ---- updates -> choices ------------------------------------------------------------------------
    async def updates(self):
        """Yield (index, text, token_ids, finish_reason) as tokens arrive, until every job has finished.
        Updates that queued up meanwhile are merged, so a busy event loop sends fewer, larger chunks."""
        s = self.serving
        streams = [TextStream(s.tokenizer, self.stops) for _ in self.jobs]
        self.counts = [0] * len(self.jobs)
        open_jobs = set(range(len(self.jobs)))
        while open_jobs:
            pending = [await self.queue.get()]
            while not self.queue.empty():
                pending.append(self.queue.get_nowait())
            for index, tokens, finish, error in _merged(pending):
                if index not in open_jobs:
                    continue                   # tokens after a stop string, before the cancel landed
                if error is not None:
                    raise _as_api_error(error)
                job, stream = self.jobs[index], streams[index]
                self.counts[index] += len(tokens)
                shown = tokens[:-1] if finish == "stop" and tokens and _stopper(job.req, tokens[-1]) else tokens
                text = stream.feed(shown)
                if stream.stopped:
                    finish = "stop"
                    s.scheduler.cancel(job)
                if finish is not None:
                    text += stream.flush()
                    open_jobs.discard(index)
                yield index, text, shown, finish

    async def whole(self) -> dict:
        texts, ids, finish = [""] * len(self.jobs), [[] for _ in self.jobs], [None] * len(self.jobs)
        async for index, text, shown, reason in self.updates():
            texts[index] += text
            ids[index] += shown
            finish[index] = reason or finish[index]
        choices = [P.choice(i, texts[i], ids[i], finish[i]) for i in range(len(self.jobs))]
        return P.completion(self.cid, self.created, self.serving.model_name, choices,
                            P.usage(self.prompt_tokens, sum(self.counts)))

    async def events(self, include_usage: bool):
        """SSE bytes: one chunk per update that has text (or ends a choice), then usage, then [DONE]."""
        held = [[] for _ in self.jobs]          # ids of updates whose text is still held back
        async for index, text, shown, finish in self.updates():
            held[index] += shown
            if text or finish is not None:
                chunk = P.choice(index, text, held[index], finish)
                held[index] = []
                yield P.sse(P.completion(self.cid, self.created, self.serving.model_name, [chunk], None))
        if include_usage:
            yield P.sse(P.completion(self.cid, self.created, self.serving.model_name, [],
                                     P.usage(self.prompt_tokens, sum(self.counts))))
        yield P.sse("[DONE]")

    def cancel_unfinished(self) -> bool:
        """Free the slots of jobs still running (the client went away); True when there were any."""
        left = [j for j in self.jobs if not j.done]
        for job in left:
            self.serving.scheduler.cancel(job)
        return bool(left)


def _merged(updates: list) -> list:
    """Consecutive updates of one job as one: tokens joined, the last finish, the first error."""
    out: dict[int, list] = {}
    for index, tokens, finish, error in updates:
        u = out.setdefault(index, [index, [], None, None])
        u[1] = u[1] + tokens
        u[2] = finish or u[2]
        u[3] = u[3] or error
    return [tuple(u) for u in out.values()]


def _stopper(req: Request, token: int) -> bool:
    return token == req.eos_token_id or token in req.stop_ids


def _as_api_error(error: BaseException) -> P.APIError:
    from ..errors import DynashapeError

    if isinstance(error, P.APIError):
        return error
    if isinstance(error, DynashapeError) and "server stopped" in error.message:
        return P.APIError(503, error.one_line(), "service_unavailable", code="shutting_down")
    first = (str(error).strip().splitlines() or [""])[0][:200]
    text = error.one_line() if isinstance(error, DynashapeError) else f"internal error {type(error).__name__}: {first}."
    fix = "" if isinstance(error, DynashapeError) else " Fix: send the request again; other requests were not affected."
    return P.APIError(500, text + fix, "server_error", code="internal_error")
