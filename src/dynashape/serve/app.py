"""The HTTP API: a FastAPI app over one engine (built in the app's lifespan, so each process, and
each Ray Serve replica, owns exactly one engine and one scheduler thread).

    POST /v1/completions   OpenAI completions (JSON, or SSE with "stream": true)
    GET  /v1/models        the served model
    GET  /health           200 once the engine is loaded and its graphs captured, else 503
    GET  /metrics          Prometheus text format

Loading runs in a background thread by default, so the socket answers at once and /health says
503 "loading" until the engine is ready; Ray Serve loads in the foreground instead, so a replica
counts as started only when it can serve. Every error is a JSON body in OpenAI's shape.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import DynashapeError
from . import protocol as P
from .completion import Completion
from .metrics import Metrics
from .scheduler import QueueFull, Scheduler
from .workload import RequestLog

log = logging.getLogger("dynashape.serve")
ROUTES = "POST /v1/completions, GET /v1/models, GET /health, GET /metrics"


@dataclass
class ServeSettings:
    """How one server runs; defaults live here."""

    model_name: str | None = None      # what clients send as "model" (default: the engine's model name)
    aliases: tuple = ()                # more names accepted in "model"
    max_queue: int = 256               # jobs waiting beyond the running batch; more get 429
    log_requests: str | None = None    # JSONL file: one line per prompt (shape and arrival time)
    retry_after_s: int = 1


class Serving:
    """Per-app state: the engine, its generator and scheduler, and whether it is ready."""

    def __init__(self, source: Callable, settings: ServeSettings, on_fatal: Callable | None = None):
        self.source, self.settings, self.on_fatal = source, settings, on_fatal
        self.metrics = Metrics()
        self.status, self.error = "loading", None
        self.engine = self.generator = self.scheduler = self.tokenizer = None
        self.request_log = RequestLog(settings.log_requests) if settings.log_requests else None

    def load(self) -> None:
        """Engine -> generator (allocates the cache, captures graphs) -> scheduler thread; then ready."""
        try:
            engine = self.source()
            _leave_a_core(engine.device)
            gen = engine.generator
            self.engine, self.generator, self.tokenizer = engine, gen, engine.tokenizer
            m = engine.plan.model
            self.vocab, self.eos, self.max_len = m["vocab_size"], m.get("eos_token_id"), gen.max_len
            self.model_name = self.settings.model_name or m.get("name") or "dynashape"
            self.names = {self.model_name, m.get("name"), *self.settings.aliases} - {None}
            self.max_prompts = gen.max_batch + self.settings.max_queue
            self.scheduler = Scheduler(gen, self.settings.max_queue, self.metrics)
            self.metrics.watch(self.scheduler)
            self.scheduler.start()
            self.status = "ready"
        except BaseException as e:  # noqa: BLE001 - reported, and the server stops (on_fatal)
            self.status = "failed"
            self.error = e.one_line() if isinstance(e, DynashapeError) else (
                f"loading the engine failed ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}). "
                "Fix: rerun with DYNASHAPE_DEBUG=1 and report the traceback.")
            if os.environ.get("DYNASHAPE_DEBUG"):
                log.error("engine failed to load", exc_info=e)
            if self.on_fatal is not None:      # the server reports it and stops
                self.on_fatal(self.error)
            else:
                log.error("engine failed to load: %s", self.error)
            if not isinstance(e, Exception):
                raise

    def require_ready(self) -> None:
        if self.status != "ready":
            why = {"loading": "the engine is still loading.", "stopping": "the server is shutting down.",
                   "failed": "the engine failed to load (the server's log says why)."}[self.status]
            raise P.APIError(503, DynashapeError(why, "retry in a few seconds; /health says when it is ready.")
                             .one_line(), "service_unavailable", code=self.status,
                             headers={"Retry-After": str(self.settings.retry_after_s)})

    def stop(self) -> None:
        self.status = "stopping"
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.request_log is not None:
            self.request_log.close()


def _leave_a_core(device) -> None:
    """On a CPU engine, torch's intra-op pool gets all cores but one, unless OMP_NUM_THREADS says
    otherwise: the event loop needs a core too, and a parallel region whose thread lost its core
    stalls at the barrier (measured on 2 cores with 32 streaming clients: 2.6k -> 4.9k tokens/s)."""
    import torch

    cores = os.cpu_count() or 1
    if torch.device(device).type == "cpu" and "OMP_NUM_THREADS" not in os.environ and cores > 1:
        torch.set_num_threads(min(torch.get_num_threads(), cores - 1))


def build_app(source: Callable, settings: ServeSettings | None = None, background: bool = True,
              on_fatal: Callable | None = None) -> FastAPI:
    """The app; ``source()`` returns the engine (called once, in the lifespan).

    The per-app state (metrics registry, locks, threads) is made in the lifespan, not here: Ray Serve
    pickles the app into each replica, and each replica needs its own."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        serving = app.state.serving = Serving(source, settings or ServeSettings(), on_fatal)
        if background:
            threading.Thread(target=serving.load, name="dynashape-load", daemon=True).start()
        else:
            await asyncio.to_thread(serving.load)
            if serving.status != "ready":
                raise RuntimeError(serving.error)
        yield
        serving.stop()

    app = FastAPI(title="dynashape", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    _add_error_handlers(app)
    _add_routes(app)
    app.add_middleware(ReplicaHeader)
    return app


def _serving(request: Request) -> Serving:
    return request.app.state.serving


def _add_routes(app: FastAPI) -> None:
    @app.get("/health")
    async def health(request: Request):
        serving = _serving(request)
        return JSONResponse({"status": "ok" if serving.status == "ready" else serving.status},
                            status_code=200 if serving.status == "ready" else 503)

    @app.get("/metrics")
    async def metrics(request: Request):
        data, content_type = _serving(request).metrics.render()
        return Response(data, media_type=content_type)

    @app.get("/v1/models")
    async def models(request: Request):
        serving = _serving(request)
        serving.require_ready()
        return {"object": "list", "data": [{"id": serving.model_name, "object": "model", "created": 0,
                                            "owned_by": "dynashape", "max_model_len": serving.max_len}]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        serving = _serving(request)
        serving.require_ready()
        body = P.parse_request(await request.body())
        if body.model not in serving.names:
            raise P.APIError(404, DynashapeError(f"model {body.model!r} is not served here.",
                                                 f'send "model": "{serving.model_name}".').one_line(),
                             "invalid_request_error", "model", "model_not_found")
        run = Completion(serving, body)
        jobs = _build_logged(serving, run)
        try:
            serving.scheduler.submit(jobs)
        except QueueFull as e:
            raise P.APIError(429, DynashapeError(str(e), f"retry after {serving.settings.retry_after_s} s, or "
                                                 "raise --max-queue.").one_line(), "rate_limit_error",
                             code="server_busy", headers={"Retry-After": str(serving.settings.retry_after_s)})
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(_stream(serving, run, include_usage), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        result = await _whole(serving, run, request)
        return JSONResponse(result) if result is not None else Response(status_code=499)


def _build_logged(serving: Serving, run: Completion):
    """Check and build the jobs; with --log-requests, log every prompt's shape, refused or not (a
    refusal is traffic the plan does not cover: exactly what ``doctor --workload`` should see)."""
    ok = False
    try:
        jobs = run.build()
        ok = True
        return jobs
    finally:
        if serving.request_log is not None and run.shapes:
            serving.request_log.log(run.shapes, serving.scheduler.inflight + (len(run.shapes) if ok else 0), ok)


async def _whole(serving: Serving, run: Completion, request: Request) -> dict | None:
    """The whole response (None when the client went away first: its jobs are cancelled at once,
    so their slots are free for the next request)."""
    collect = asyncio.ensure_future(run.whole())
    gone = asyncio.ensure_future(_disconnected(request))
    outcome = "cancelled"
    try:
        await asyncio.wait({collect, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not collect.done():
            return None
        result = collect.result()              # raises the job's APIError, if any
        outcome = "ok"
        return result
    except P.APIError:
        outcome = None                          # counted by the error handler
        raise
    finally:
        gone.cancel()
        if not collect.done():
            collect.cancel()
        if outcome != "ok":
            run.cancel_unfinished()
        if outcome is not None:
            serving.metrics.outcome(outcome)


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _stream(serving: Serving, run: Completion, include_usage: bool):
    """SSE; an error after the 200 went out is an SSE event with the error body (clients raise on it).
    A client that disconnects cancels this generator: ``finally`` frees its slots."""
    outcome = "cancelled"
    try:
        async for event in run.events(include_usage):
            yield event
        outcome = "ok"
    except P.APIError as e:
        outcome = {503: "unavailable"}.get(e.status, "error" if e.status >= 500 else "invalid")
        yield P.sse(e.body())
    finally:
        if outcome != "ok":
            run.cancel_unfinished()
        serving.metrics.outcome(outcome)


def _add_error_handlers(app: FastAPI) -> None:
    def respond(request: Request, e: P.APIError) -> JSONResponse:
        outcome = {429: "busy", 503: "unavailable"}.get(e.status, "error" if e.status >= 500 else "invalid")
        serving = getattr(request.app.state, "serving", None)
        if serving is not None:
            serving.metrics.outcome(outcome)
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(P.APIError)
    async def api_error(request, exc: P.APIError):
        return respond(request, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError):
        return respond(request, P.APIError.bad(f"the request is invalid ({exc.errors()[0].get('msg', '')}).",
                                      f"send a JSON object such as {P.EXAMPLE}."))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc: StarletteHTTPException):
        what = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return respond(request, P.APIError(exc.status_code, DynashapeError(what + ".", f"use {ROUTES}.").one_line(),
                                  "invalid_request_error", code="not_found" if exc.status_code == 404 else None))

    @app.exception_handler(Exception)
    async def internal_error(request, exc: Exception):
        log.error("internal error on %s", request.url.path, exc_info=exc)
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        return respond(request, P.APIError(500, f"internal error {type(exc).__name__}: {first}. Fix: send the request "
                                  "again; the server and other requests go on.", "server_error", code="internal_error"))


class ReplicaHeader:
    """Pure ASGI middleware (no buffering, no extra task): names the process that answered, so a
    client behind Ray's proxy can tell replicas apart."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_header(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [(b"x-dynashape-replica", str(os.getpid()).encode())]
            await send(message)

        await self.app(scope, receive, send_with_header)
