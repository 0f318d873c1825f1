"""Continuous batching for a server: the one thread that owns an engine's Generator.

The HTTP handlers run on an asyncio event loop; the Generator is not thread-safe and its steps
block, so exactly one thread (this scheduler) ever touches it. The loop is:

    take cancellations -> admit queued jobs into free slots (prefill) -> one decode chunk -> publish

so a new request joins the running batch between two graph replays, a finished row frees its slot
in the chunk it finishes, and nobody waits for an unrelated long request. Handlers talk to the
thread only through ``submit`` and ``cancel`` (a lock and a condition variable; the thread sleeps
on it when idle, with a bounded wait, never spinning). Tokens go back to each job's asyncio queue
with one ``loop.call_soon_threadsafe`` per chunk, carrying every job's new tokens at once.

Failures stay local: an admit that raises is retried one job at a time, so only the job that
fails gets the error; a decode chunk that raises fails the rows that were in it, and the queue goes
on. Nothing raised here ever stops the thread.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import sys
import threading
import time
from dataclasses import dataclass, field

import torch

from ..errors import DynashapeError
from ..runtime.state import Request

log = logging.getLogger("dynashape.serve")
IDLE_WAIT_S = 0.5      # an idle scheduler re-checks its flags this often (bounded waits only)
SWITCH_INTERVAL_S = 0.001


class QueueFull(Exception):
    """More jobs than running slots plus --max-queue: the client should retry later (429)."""


@dataclass(eq=False)
class Job:
    """One sequence of one HTTP request: the runtime request plus where its tokens go."""

    req: Request
    index: int                              # the choice index in the response
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue                    # shared by a request's jobs: (index, tokens, finish, error)
    arrival: float = field(default_factory=time.perf_counter)
    first_at: float | None = None
    last_at: float | None = None
    cancelled: bool = False
    admitted: bool = False
    done: bool = False                      # the scheduler is finished with it (slot released)
    fresh: list = field(default_factory=list)   # tokens not yet published (scheduler thread only)

    def on_token(self, req: Request, token: int) -> None:
        self.fresh.append(token)


class Scheduler:
    def __init__(self, generator, max_queue: int, metrics=None):
        self.gen, self.max_queue, self.metrics = generator, max_queue, metrics
        self.capacity = generator.max_batch + max_queue
        self._cond = threading.Condition()
        self._waiting: collections.deque[Job] = collections.deque()
        self._cancels: list[Job] = []
        self._admitted: list[Job] = []
        self._inflight = 0                  # submitted and not yet done (running + waiting)
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="dynashape-scheduler", daemon=True)

    # ---- called from the event loop -------------------------------------------------------------
    def start(self) -> None:
        """Start the thread. The GIL switch interval drops to 1 ms (process-wide): the scheduler
        waits on the device with the GIL released, and must get it back promptly to launch the next
        chunk while the event loop thread is busy writing responses (default 5 ms: the GPU idles)."""
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout)

    def submit(self, jobs: list[Job]) -> None:
        """Queue all of a request's jobs, or none (QueueFull) when they would exceed the capacity."""
        with self._cond:
            if self._inflight + len(jobs) > self.capacity:
                raise QueueFull(f"the server is full: {len(self._waiting)} requests waiting and "
                                f"{self.gen.max_batch} running (--max-queue {self.max_queue}).")
            self._inflight += len(jobs)
            self._waiting.extend(jobs)
            for job in jobs:
                job.req.on_token = job.on_token
            self._cond.notify()

    def cancel(self, job: Job) -> None:
        """Stop a job (client gone, or a stop string seen): the scheduler thread frees its slot."""
        with self._cond:
            if job.done or job.cancelled:
                return
            job.cancelled = True
            self._cancels.append(job)
            self._cond.notify()

    @property
    def queued(self) -> int:
        return len(self._waiting)

    @property
    def inflight(self) -> int:
        return self._inflight

    @property
    def running(self) -> int:
        return len(self._admitted)

    # ---- the scheduler thread -------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._stop or self._waiting or self._cancels or self.gen.busy):
                    self._cond.wait(IDLE_WAIT_S)
                if self._stop:
                    break
                cancels, self._cancels = self._cancels, []
            try:
                with torch.no_grad():          # compiled graphs guard on grad mode: never record autograd
                    self._iteration(cancels)
            except BaseException as e:  # noqa: BLE001 - the thread must outlive any one failure
                log.exception("scheduler iteration failed")
                self._fail(list(self._admitted), e)
                self.gen.discard()
        self._fail(list(self._admitted) + list(self._waiting), None)

    def _iteration(self, cancels: list[Job]) -> None:
        for job in cancels:
            if job.admitted and not job.done:
                self.gen.cancel(job.req)
            self._finish(job)
        new = self._take(len(self.gen.free))
        if new:
            self._admit(new)
        if self.gen.busy:
            try:
                self.gen.step()
            except Exception as e:  # noqa: BLE001 - fail the rows of this chunk, keep serving
                log.exception("decode step failed")
                self._fail([j for j in self._admitted if not j.done], e)
                self.gen.discard()
        self._publish()

    def _take(self, n: int) -> list[Job]:
        out = []
        with self._cond:
            while self._waiting and len(out) < n:
                job = self._waiting.popleft()
                if job.cancelled:
                    self._finish(job)
                else:
                    out.append(job)
        return out

    def _admit(self, jobs: list[Job]) -> None:
        """Prefill jobs together; when that fails, one at a time, so only the bad one fails."""
        try:
            self.gen.admit([j.req for j in jobs])
            self._admitted_ok(jobs)
            return
        except Exception as e:  # noqa: BLE001
            self._undo(jobs)
            if len(jobs) == 1:
                log.exception("admit failed")
                self._fail(jobs, e)
                return
        for job in jobs:
            self._admit([job])

    def _admitted_ok(self, jobs: list[Job]) -> None:
        for job in jobs:
            job.admitted = True
        self._admitted += jobs
        if self.metrics is not None:
            self.metrics.prompt_tokens.inc(sum(len(j.req.prompt) for j in jobs))

    def _undo(self, jobs: list[Job]) -> None:
        """Free what a failed admit took; each job gets a fresh Request, since the generator may
        still hold undelivered output for the old one (skipped once it is cancelled)."""
        for job in jobs:
            self.gen.cancel(job.req)
            job.req = dataclasses.replace(job.req, tokens=[], finish_reason=None, slot=-1, launched=0)
            job.fresh = []

    def _fail(self, jobs: list[Job], error: BaseException | None) -> None:
        """Tell each job's handler it failed (None: the server is stopping) and drop it."""
        for job in jobs:
            if job.done:
                continue
            if job.admitted:
                try:
                    self.gen.cancel(job.req)
                except Exception:  # noqa: BLE001 - already failing; the slot list is what matters
                    pass
            self._finish(job)
            try:
                job.loop.call_soon_threadsafe(job.queue.put_nowait, (job.index, [], None, error or _stopping()))
            except RuntimeError:             # its event loop is closed: nobody is waiting any more
                pass

    def _finish(self, job: Job) -> None:
        with self._cond:
            if job.done:
                return
            job.done = True
            self._inflight -= 1
        if job in self._admitted:
            self._admitted.remove(job)

    def _publish(self) -> None:
        """Hand every job's new tokens (and finish) to its event loop, one callback per loop."""
        now, by_loop, n_tokens = time.perf_counter(), {}, 0
        for job in list(self._admitted):
            finished = job.req.finished and not job.cancelled
            if not job.fresh and not finished:
                continue
            tokens, job.fresh = job.fresh, []
            n_tokens += len(tokens)
            if tokens:
                self._timing(job, now, len(tokens))
            if finished:
                self._finish(job)
                self._observe_tpot(job)
            if not job.cancelled:
                update = (job.index, tokens, job.req.finish_reason if finished else None, None)
                by_loop.setdefault(job.loop, []).append((job.queue, update))
        for loop, updates in by_loop.items():
            loop.call_soon_threadsafe(_fan_out, updates)
        if self.metrics is not None and n_tokens:
            self.metrics.generated_tokens.inc(n_tokens)

    def _timing(self, job: Job, now: float, n: int) -> None:
        if job.first_at is None:
            job.first_at = now
            if self.metrics is not None:
                self.metrics.ttft.observe(now - job.arrival)
        job.last_at = now

    def _observe_tpot(self, job: Job) -> None:
        n = len(job.req.tokens)
        if self.metrics is not None and n > 1 and job.first_at is not None:
            self.metrics.tpot.observe((job.last_at - job.first_at) / (n - 1))


def _fan_out(updates) -> None:
    for queue, update in updates:
        queue.put_nowait(update)


def _stopping() -> DynashapeError:
    return DynashapeError("the server stopped before this request finished.", "send it again to a running server.")
