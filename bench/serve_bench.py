"""Serving benchmark: N concurrent streaming clients against `dynashape serve`, and the same engine's
offline batch throughput measured in the same run.

    # GPU (the issue's target: server tokens/s >= 80% of offline at batch 64, zero failures)
    python bench/serve_bench.py engines/gpt2 --clients 64 --prompt-lens 8:512 --max-tokens 128 \
        --duration 60 --procs 4 --out bench/results/h100_serve_gpt2_fp16.json
    # CPU (random:tiny compiled in memory by the server and by this script, the same way)
    python bench/serve_bench.py random:tiny --clients 32 --prompt-lens 8:128 --max-tokens 64 \
        --duration 60 --out bench/results/cpu_serve_tiny.json

What it does, in order: builds a pool of prompts (seeded, lengths uniform in --prompt-lens); starts
the server on 127.0.0.1 with --port 0 (or uses --url); warms it up (every pool prompt once, short,
so every prefill bucket is captured before timing); runs the clients in a closed loop for
--duration seconds (each streams greedy completions of exactly --max-tokens tokens, ignore_eos;
client k sends pool prompts k, k+N, k+2N, ...); stops the server with SIGTERM; then loads the same
engine here and times offline ``generate`` of a full batch of pool prompts (the engine's batch max,
at most --clients); and finally checks every response against offline greedy generation of its
prompt. Clients speak raw HTTP/1.1 over asyncio streams (no client library in the timing path) and
can be spread over --procs processes so the load generator is never the bottleneck.

TTFT: request sent -> first token received. TPOT: (last token - first token) / (tokens - 1), per
request. Server throughput: tokens received / (last response end - first request sent).
Only 127.0.0.1 is contacted; every wait is bounded.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

HOST = "127.0.0.1"


# ---- the client (runs in worker processes) --------------------------------------------------------------

async def _read_chunked(reader, on_bytes) -> None:
    """Feed the body of a chunked HTTP response to on_bytes until the last chunk."""
    while True:
        size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            await reader.readline()
            return
        on_bytes(await reader.readexactly(size))
        await reader.readexactly(2)


async def stream_one(port: int, body: dict, timeout: float) -> dict:
    """One streaming completion: timings, token ids, and an error string if anything went wrong."""
    rec = {"prompt": body["_pool_index"], "t_send": time.perf_counter(), "tokens": [], "times": [], "error": None}
    payload = json.dumps({k: v for k, v in body.items() if not k.startswith("_")}).encode()
    buf, state = b"", {"done": False}

    def on_bytes(data: bytes) -> None:
        nonlocal buf
        buf += data
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            text = event.decode().removeprefix("data: ")
            if text == "[DONE]":
                state["done"] = True
                continue
            d = json.loads(text)
            if "error" in d:
                rec["error"] = d["error"]["message"]
                continue
            ids = d["choices"][0]["token_ids"] if d["choices"] else []
            if ids:
                rec["tokens"] += ids
                rec["times"].append((time.perf_counter(), len(ids)))

    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
        writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (HOST.encode(), port, len(payload)) + payload)
        status = (await asyncio.wait_for(reader.readline(), timeout)).split()
        headers = {}
        while (line := await asyncio.wait_for(reader.readline(), timeout)) not in (b"\r\n", b""):
            k, _, v = line.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        if status[1] != b"200":
            rec["error"] = f"HTTP {status[1].decode()}: {(await reader.read(2000)).decode(errors='replace')[:200]}"
        elif headers.get("transfer-encoding") == "chunked":
            await asyncio.wait_for(_read_chunked(reader, on_bytes), timeout)
        else:
            on_bytes(await asyncio.wait_for(reader.read(), timeout))
        writer.close()
    except Exception as e:  # noqa: BLE001 - every failure is a failed request in the result
        rec["error"] = f"{type(e).__name__}: {e}"
    rec["t_end"] = time.perf_counter()
    if rec["error"] is None and not state["done"]:
        rec["error"] = "stream ended without [DONE]"
    if rec["error"] is None and len(rec["tokens"]) != body["max_tokens"]:
        rec["error"] = f"{len(rec['tokens'])} tokens, {body['max_tokens']} asked"
    return rec


async def _clients(port: int, model: str, pool: list, ids: list[int], n_all: int, max_tokens: int,
                   duration: float, timeout: float) -> list[dict]:
    deadline = time.perf_counter() + duration
    out: list[dict] = []

    async def client(k: int) -> None:
        i = 0
        while time.perf_counter() < deadline:
            index = (k + i * n_all) % len(pool)
            body = {"model": model, "prompt": pool[index], "max_tokens": max_tokens, "temperature": 0,
                    "ignore_eos": True, "stream": True, "_pool_index": index}
            out.append(await stream_one(port, body, timeout))
            i += 1

    await asyncio.gather(*(client(k) for k in ids))
    return out


def run_clients(args: tuple) -> list[dict]:
    """Worker process entry: some of the clients, in one asyncio loop."""
    port, model, pool, ids, n_all, max_tokens, duration, timeout, t0_wall = args
    while time.time() < t0_wall:           # every process starts its clients at the same moment
        time.sleep(0.001)
    offset = time.time() - time.perf_counter()
    recs = asyncio.run(_clients(port, model, pool, ids, n_all, max_tokens, duration, timeout))
    for r in recs:                          # to wall-clock seconds: comparable across processes
        r["t_send"] += offset
        r["t_end"] += offset
        r["times"] = [(t + offset, n) for t, n in r["times"]]
    return recs


def load(port: int, model: str, pool: list, clients: int, procs: int, max_tokens: int, duration: float,
         timeout: float) -> list[dict]:
    groups = [list(range(p, clients, procs)) for p in range(procs)]
    start = time.time() + 1.0
    jobs = [(port, model, pool, g, clients, max_tokens, duration, timeout, start) for g in groups if g]
    with mp.get_context("spawn").Pool(len(jobs)) as workers:
        return [r for recs in workers.map(run_clients, jobs) for r in recs]


# ---- the server -----------------------------------------------------------------------------------------

class Server:
    def __init__(self, target: str, flags: list[str], timeout: float = 900.0):
        self.proc = subprocess.Popen([sys.executable, "-m", "dynashape", "serve", target, "--host", HOST,
                                      "--port", "0", "--model-name", "bench", *flags],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.lines, self.url, ready = [], None, threading.Event()

        def pump():
            for line in self.proc.stdout:
                self.lines.append(line)
                if line.startswith("listening on "):
                    self.url = line.split()[2]
                    ready.set()
        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(timeout):
            self.stop()
            raise RuntimeError("server did not start:\n" + "".join(self.lines))
        from dynashape.serve.server import wait_healthy

        wait_healthy(self.url, timeout)

    def stop(self, timeout: float = 120.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return None


def server_metrics(url: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    keep = ("dynashape_requests_total", "dynashape_generated_tokens_total", "dynashape_prompt_tokens_total",
            "dynashape_ttft_seconds_sum", "dynashape_ttft_seconds_count", "dynashape_tpot_seconds_sum",
            "dynashape_tpot_seconds_count")
    return {s.name + ("{" + ",".join(f"{k}={v}" for k, v in s.labels.items()) + "}" if s.labels else ""): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples if s.name in keep}


# ---- statistics -------------------------------------------------------------------------------------------

def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def summarise(recs: list[dict]) -> dict:
    ok = [r for r in recs if r["error"] is None]
    ttft = [(r["times"][0][0] - r["t_send"]) * 1e3 for r in ok if r["times"]]
    tpot = [(r["times"][-1][0] - r["times"][0][0]) * 1e3 / (len(r["tokens"]) - 1) for r in ok if len(r["tokens"]) > 1]
    span = max(r["t_end"] for r in recs) - min(r["t_send"] for r in recs)
    tokens = sum(len(r["tokens"]) for r in ok)
    errors: dict[str, int] = {}
    for r in recs:
        if r["error"] is not None:
            key = r["error"][:120]
            errors[key] = errors.get(key, 0) + 1
    return {"requests": len(recs), "completed": len(ok), "failed": len(recs) - len(ok), "errors": errors,
            "seconds": round(span, 3), "output_tokens": tokens, "tokens_per_s": round(tokens / span, 1),
            "ttft_ms": {"p50": _r(pct(ttft, .5)), "p90": _r(pct(ttft, .9)), "p99": _r(pct(ttft, .99))},
            "tpot_ms": {"p50": _r(pct(tpot, .5)), "p90": _r(pct(tpot, .9)), "p99": _r(pct(tpot, .99))}}


def _r(x):
    return None if x is None else round(x, 3)


# ---- offline: the same engine, here ---------------------------------------------------------------------

def offline(source, pool: list, batch: int, max_tokens: int, reps: int) -> dict:
    """Offline batch throughput (a full batch of mixed pool prompts, median of reps after a warm-up)
    and greedy outputs for every pool prompt (the reference each response is checked against)."""
    engine = source.load()
    gen = engine.generator
    B = min(batch, gen.max_batch)
    expected = []                          # first, so it is also the warm-up (captures, first-use costs)
    for i in range(0, len(pool), B):
        expected += engine.generate(pool[i:i + B], max_tokens, ignore_eos=True)
    walls = []
    for _ in range(reps):
        t0 = time.perf_counter()
        engine.generate(pool[:B], max_tokens, ignore_eos=True)
        walls.append(time.perf_counter() - t0)
    wall = statistics.median(walls)
    return {"batch": B, "prompt_lens": [len(p) for p in pool[:B]], "walls_s": [round(w, 4) for w in walls],
            "tokens_per_s": round(B * max_tokens / wall, 1), "expected": expected,
            "engine": {"backend": engine.backend, "device": engine.settings.device, "dtype": engine.settings.dtype,
                       "seq": engine.plan.serve["seq"].text(), "batch": engine.plan.serve["batch"].text()}}


def check(recs: list[dict], expected: list[list[int]]) -> dict:
    """Every completed response against offline greedy generation of its prompt."""
    ok = [r for r in recs if r["error"] is None]
    bad = [r for r in ok if r["tokens"] != expected[r["prompt"]]]
    first = [next(i for i, (a, b) in enumerate(zip(r["tokens"], expected[r["prompt"]])) if a != b) for r in bad]
    return {"checked": len(ok), "equal_offline": len(ok) - len(bad), "differ": len(bad),
            "prompts_differing": sorted({r["prompt"] for r in bad})[:20],
            "first_difference_at_token_p50": pct(first, .5)}


async def _warm(port: int, model: str, pool: list, clients: int, max_tokens: int, timeout: float) -> int:
    """Every pool prompt once (short), `clients` at a time: prefill buckets are captured before timing."""
    gate = asyncio.Semaphore(clients)

    async def one(i):
        async with gate:
            body = {"model": model, "prompt": pool[i], "max_tokens": max_tokens, "temperature": 0,
                    "ignore_eos": True, "stream": True, "_pool_index": i}
            return await stream_one(port, body, timeout)
    recs = await asyncio.gather(*(one(i) for i in range(len(pool))))
    return sum(r["error"] is not None for r in recs)


# ---- main -----------------------------------------------------------------------------------------------

def make_pool(n: int, lo: int, hi: int, vocab: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(vocab - 1) for _ in range(rng.randint(lo, hi))] for _ in range(n)]


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("target", help="engine directory, or a model the server compiles in memory (random:tiny)")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of closed-loop load")
    ap.add_argument("--prompt-lens", default="8:512", help="MIN:MAX prompt lengths (uniform)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--pool", type=int, default=256, help="distinct prompts (checked against offline)")
    ap.add_argument("--procs", type=int, default=max(1, min(4, (os.cpu_count() or 1) // 4)),
                    help="client processes")
    ap.add_argument("--timeout", type=float, default=300.0, help="per-request limit, seconds")
    ap.add_argument("--reps", type=int, default=5, help="offline timed runs (median)")
    ap.add_argument("--url", default=None, help="a running server (http://127.0.0.1:PORT) instead of starting one")
    ap.add_argument("--seq", default=None, help="for a model target (server and offline alike)")
    ap.add_argument("--batch", default="1:8", help="for a model target")
    ap.add_argument("--backend", default="eager")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/serve_bench.json")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    a = parse(argv)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
    from dynashape.serve.source import EngineSource

    source = EngineSource(a.target, a.seq, a.batch, a.backend, a.device, a.dtype)
    facts = source.check()
    vocab = _vocab(source)
    lo, hi = (int(x) for x in a.prompt_lens.split(":"))
    if hi + a.max_tokens > facts.max_len:
        sys.exit(f"error: prompts up to {hi} + {a.max_tokens} tokens exceed the engine's {facts.max_len} positions. "
                 "Fix: lower --prompt-lens or --max-tokens, or use an engine with a larger --seq.")
    pool = make_pool(a.pool, lo, hi, vocab, a.seed)
    flags = ["--max-queue", str(max(256, 2 * a.clients))]
    if not source.is_engine:
        flags += [f for k in ("seq", "batch", "backend", "device", "dtype") if getattr(a, k)
                  for f in (f"--{k}", str(getattr(a, k)))]
    t0 = time.time()
    server = None if a.url else Server(a.target, flags)
    url = a.url or server.url
    port = int(url.rsplit(":", 1)[1])
    startup_s = round(time.time() - t0, 2)
    with urllib.request.urlopen(url + "/v1/models", timeout=30) as r:
        model = json.load(r)["data"][0]["id"]
    warm_failed = asyncio.run(_warm(port, model, pool, a.clients, min(8, a.max_tokens), a.timeout))
    recs = load(port, model, pool, a.clients, a.procs, a.max_tokens, a.duration, a.timeout)
    served = summarise(recs)
    metrics_end = server_metrics(url)
    exit_status = server.stop() if server else None
    off = offline(source, pool, a.clients, a.max_tokens, a.reps)
    correct = check(recs, off.pop("expected"))
    result = _result(a, facts, startup_s, warm_failed, served, metrics_end, exit_status, off, correct)
    from dynashape.bench.results import write_results

    write_results(result, a.out)
    print(json.dumps({k: result[k] for k in ("server", "offline", "ratio", "correctness", "target")}, indent=1))
    return 0


def _vocab(source) -> int:
    if source.is_engine:
        with open(os.path.join(source.target, "plan.json")) as f:
            return json.load(f)["model"]["vocab_size"]
    from dynashape.models import load_info

    return load_info(source.target)["vocab_size"]


def _result(a, facts, startup_s, warm_failed, served, metrics_end, exit_status, off, correct) -> dict:
    from dynashape.bench.machine import machine_facts

    ratio = served["tokens_per_s"] / off["tokens_per_s"]
    return {"command": "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "machine": machine_facts(facts.device, off["engine"]["dtype"]),
            "setup": {"target": a.target, "clients": a.clients, "client_procs": a.procs, "duration_s": a.duration,
                      "prompt_lens": a.prompt_lens, "max_tokens": a.max_tokens, "pool": a.pool,
                      "sampling": "greedy, ignore_eos", "server_startup_s": startup_s,
                      "warmup_failed": warm_failed},
            "server": served, "server_metrics_at_end": metrics_end, "server_exit_status": exit_status,
            "offline": off, "ratio": round(ratio, 3), "correctness": correct,
            "target": {"ratio_at_least": 0.8, "ratio_met": ratio >= 0.8, "zero_failed": served["failed"] == 0,
                       "all_equal_offline": correct["differ"] == 0 and correct["checked"] > 0}}


if __name__ == "__main__":
    sys.exit(main())
