"""Traffic-driven planning: the request log a server writes, and the plan it suggests.

``serve --log-requests FILE`` appends one JSON line per prompt::

    {"t": 1767225600.123, "prompt_len": 37, "max_tokens": 128, "inflight": 12, "ok": true}

``t`` is the arrival (Unix seconds), ``inflight`` the sequences running or waiting when it arrived
(itself included), ``ok`` false when the engine refused it (a prompt or budget beyond the plan:
traffic the plan should grow to cover). ``doctor --workload FILE`` reads it back and compares the
plan named on its command line with one fitted to the traffic (``plan_for_workload``).
"""
from __future__ import annotations

import heapq
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass

from ..errors import DynashapeError


class RequestLog:
    """Append-only JSONL, one line per prompt, flushed per request (a crash loses at most one)."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._file = open(path, "a", encoding="utf-8")

    def log(self, shapes: list[tuple[int, int]], inflight: int, ok: bool) -> None:
        now = round(time.time(), 4)
        lines = "".join(json.dumps({"t": now, "prompt_len": n, "max_tokens": m, "inflight": inflight, "ok": ok}) + "\n"
                        for n, m in shapes)
        with self._lock:
            if not self._file.closed:
                self._file.write(lines)
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


# ---- reading a log ---------------------------------------------------------------------------------

@dataclass
class Traffic:
    """The logged requests, one entry per prompt."""

    path: str
    prompt_len: list[int]
    max_tokens: list[int]
    t: list[float]
    inflight: list[int]           # running or waiting at arrival, itself included (estimated when not logged)
    inflight_logged: bool

    def __len__(self) -> int:
        return len(self.prompt_len)

    @property
    def positions(self) -> list[int]:
        return [p + m for p, m in zip(self.prompt_len, self.max_tokens)]


def read_traffic(path: str, assumed_tpot_s: float) -> Traffic:
    """The JSONL a server wrote with --log-requests (lines without ``inflight`` get an estimate)."""
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if line.strip():
                    rows.append(_row(line, i, path))
    except OSError as e:
        raise DynashapeError(f"--workload {path} cannot be read ({e.strerror}).",
                             "name a file written by dynashape serve --log-requests FILE.") from None
    if not rows:
        raise DynashapeError(f"--workload {path} holds no requests.",
                             "serve some traffic with dynashape serve ... --log-requests FILE first.")
    rows.sort(key=lambda r: r[2])
    logged = all(r[3] is not None for r in rows)
    p, m, t = ([r[k] for r in rows] for k in range(3))
    inflight = [r[3] for r in rows] if logged else _estimate_inflight(t, m, assumed_tpot_s)
    return Traffic(path, p, m, t, inflight, logged)


def _row(line: str, number: int, path: str) -> tuple:
    try:
        d = json.loads(line)
        p, m, t = int(d["prompt_len"]), int(d["max_tokens"]), float(d.get("t", number))
        c = d.get("inflight")
        if p < 1 or m < 1:
            raise ValueError
        return p, m, t, None if c is None else max(1, int(c))
    except (ValueError, TypeError, KeyError):
        raise DynashapeError(f"--workload {path} line {number} is not a request record.",
                             'each line is JSON like {"t": 1767225600.1, "prompt_len": 37, "max_tokens": 128}.'
                             ) from None


def _estimate_inflight(t: list[float], m: list[int], tpot_s: float) -> list[int]:
    """Requests still running at each arrival, if each ran max_tokens x tpot_s (sorted arrivals)."""
    ends: list[float] = []
    out = []
    for ti, mi in zip(t, m):
        while ends and ends[0] <= ti:
            heapq.heappop(ends)
        heapq.heappush(ends, ti + mi * tpot_s)
        out.append(len(ends))
    return out


# ---- padding of a plan against traffic ---------------------------------------------------------------

def waste(plan, traffic: Traffic) -> dict:
    """What this plan does with this traffic: padding shares, refusals, waits (arrivals see time
    averages, so in-flight counts at arrivals sample the running batch over time)."""
    from ..runtime.graphs import decode_batch, prefill_len     # the runtime's own padding rules

    seq_max, batch_max = plan.serve["seq"].max, plan.serve["batch"].max
    fits = [(p, m) for p, m in zip(traffic.prompt_len, traffic.max_tokens) if p + m <= seq_max]
    real = sum(p for p, _ in fits)
    padded = sum(prefill_len(plan, p) for p, _ in fits)
    rows = [min(c, batch_max) for c in traffic.inflight]
    run = sum(decode_batch(plan, n) for n in rows)
    return {"prefill_padding": _share(padded - real, padded), "decode_padding": _share(run - sum(rows), run),
            "refused": _share(len(traffic) - len(fits), len(traffic)),
            "waited": _share(sum(c > batch_max for c in traffic.inflight), len(traffic)),
            "cache_use": _share(sum(p + m for p, m in fits), len(fits) * seq_max),
            "prefill_graphs": len({prefill_len(plan, p) for p, _ in fits}),
            "decode_graphs": len(plan.runtime.cuda_graph_batches)}


def _share(part: float, whole: float) -> float:
    return round(part / whole, 4) if whole else 0.0


# ---- the proposal ---------------------------------------------------------------------------------------

PREFILL_GRAPHS = 16   # distinct prefill lengths allowed: what the default bucket (64) makes of 1024 positions
BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
ASSUMED_TPOT_S = {"cuda": 0.001, "cpu": 0.02}   # per token, only when the log has no in-flight counts


def plan_for_workload(model: str, path: str, seq: str | None = None, batch: str = "1", device: str = "cpu",
                      dtype: str | None = None, backend: str = "auto") -> dict:
    """Today's plan (the flags given; --seq defaults to serve's 1:n_positions) against the traffic in
    ``path``, a proposal that minimises padding for it, and both plans' padding."""
    from .. import api
    from ..backends import default_dtype
    from ..models import load_info

    cuda = str(device).startswith("cuda")
    dtype = dtype or default_dtype(device)
    n_pos = load_info(model)["n_positions"]
    common = dict(model=model, device=device, dtype=dtype, backend=backend)
    today = api.plan(seq=seq or f"1:{n_pos}", batch=batch, **common)
    api.require_ok(today)
    traffic = read_traffic(path, ASSUMED_TPOT_S["cuda" if cuda else "cpu"])
    flags = propose(traffic, n_pos, cuda)
    proposed = api.plan(**flags, **common)
    api.require_ok(proposed)
    return {"workload": summary(traffic), "device": device, "today": _plan_row(today, traffic),
            "proposed": _plan_row(proposed, traffic), "compile": _compile_cmd(model, proposed, common),
            "assumed_tpot_s": None if traffic.inflight_logged else ASSUMED_TPOT_S["cuda" if cuda else "cpu"]}


def propose(traffic: Traffic, n_positions: int, cuda: bool) -> dict:
    """--seq: the longest request (prompt + max_tokens), rounded up to 16; --batch: the most requests
    ever in flight; the prefill bucket: the smallest that keeps to PREFILL_GRAPHS prefill lengths;
    CUDA-graph batch sizes: as many as the default (powers of two) would be, placed where the
    running batch sizes fall so that the padding rows are fewest."""
    seq_max = min(n_positions, -(-max(traffic.positions) // 16) * 16)
    batch_max = max(traffic.inflight)
    flags = {"seq": f"1:{seq_max}", "batch": f"1:{batch_max}" if batch_max > 1 else "1"}
    if cuda:
        lens = [p for p, n in zip(traffic.prompt_len, traffic.positions) if n <= seq_max]
        flags["prefill_bucket"] = next((b for b in BUCKETS if len({min(-(-p // b) * b, seq_max) for p in lens})
                                        <= PREFILL_GRAPHS), BUCKETS[-1])
        k = len([b for b in BUCKETS + (512, 1024) if b <= batch_max]) or 1
        flags["graph_batches"] = tuple(best_sizes([min(c, batch_max) for c in traffic.inflight], batch_max, k))
    return flags


def best_sizes(rows: list[int], top: int, k: int) -> list[int]:
    """At most k batch sizes (``top`` among them) minimising the padding rows sum(size(n) - n) over
    ``rows``, where size(n) is the smallest chosen size >= n. Dynamic programming over the observed
    sizes (an optimal size always sits on one of them, or on top)."""
    hist = Counter(rows)
    cands = sorted(set(hist) | {top})
    H, N = [0], [0]                     # prefix sums of counts and of n * count over cands
    for c in cands:
        H.append(H[-1] + hist[c])
        N.append(N[-1] + c * hist[c])

    def cost(a: int, i: int) -> int:    # rows in (cands[a-1], cands[i]] all run as cands[i]
        return cands[i] * (H[i + 1] - H[a]) - (N[i + 1] - N[a])

    m = len(cands)
    best = {(1, i): (cost(0, i), None) for i in range(m)}
    for j in range(2, min(k, m) + 1):
        for i in range(j - 1, m):
            best[(j, i)] = min((best[(j - 1, a)][0] + cost(a + 1, i), a) for a in range(j - 2, i))
    j = min(range(1, min(k, m) + 1), key=lambda j: (best[(j, m - 1)][0], j))
    sizes, i = [], m - 1
    while i is not None:
        sizes.append(cands[i])
        i, j = best[(j, i)][1], j - 1
    return sorted(sizes)


def summary(traffic: Traffic) -> dict:
    def q(xs, f):
        s = sorted(xs)
        return s[min(len(s) - 1, int(f * len(s)))]

    span = traffic.t[-1] - traffic.t[0]
    return {"file": traffic.path, "requests": len(traffic), "seconds": round(span, 2),
            "per_s": round(len(traffic) / span, 2) if span > 0 else None,
            "prompt_len": {"min": min(traffic.prompt_len), "p50": q(traffic.prompt_len, .5),
                           "p99": q(traffic.prompt_len, .99), "max": max(traffic.prompt_len)},
            "max_tokens": {"min": min(traffic.max_tokens), "p50": q(traffic.max_tokens, .5),
                           "max": max(traffic.max_tokens)},
            "inflight": {"p50": q(traffic.inflight, .5), "p99": q(traffic.inflight, .99), "max": max(traffic.inflight),
                         "logged": traffic.inflight_logged}}


def _plan_row(plan, traffic: Traffic) -> dict:
    r = plan.runtime
    return {"seq": plan.serve["seq"].text(), "batch": plan.serve["batch"].text(), "prefill_bucket": r.prefill_bucket,
            "cuda_graph_batches": list(r.cuda_graph_batches), **waste(plan, traffic)}


def _compile_cmd(model: str, plan, common: dict) -> str:
    r = plan.runtime
    parts = [f"dynashape compile {model} --seq {plan.serve['seq'].text()} --batch {plan.serve['batch'].text()}"]
    if str(common["device"]).startswith("cuda"):
        parts.append(f"--prefill-bucket {r.prefill_bucket} --graph-batches {','.join(map(str, r.cuda_graph_batches))}")
    parts.append(f"--backend {r.backend} --device {common['device']} --dtype {common['dtype']} -o DIR")
    return " ".join(parts)


def format_report(rep: dict) -> str:
    """The report as text: the traffic, today's plan and the proposal side by side, the command."""
    w, t, p = rep["workload"], rep["today"], rep["proposed"]
    pl, inf = w["prompt_len"], w["inflight"]
    est = "" if inf["logged"] else f" (estimated: {rep['assumed_tpot_s'] * 1e3:g} ms per token assumed)"
    lines = [f"workload  {w['file']}: {w['requests']} requests over {w['seconds']} s; prompt {pl['min']}..{pl['max']} "
             f"(p50 {pl['p50']}, p99 {pl['p99']}); max_tokens {w['max_tokens']['min']}..{w['max_tokens']['max']}; "
             f"in flight p50 {inf['p50']}, p99 {inf['p99']}, max {inf['max']}{est}", "",
             f"  {'':<30}{'today':<26}proposed"]
    pct = lambda x: f"{x * 100:.1f}%"  # noqa: E731
    graphs = lambda r: ",".join(map(str, r["cuda_graph_batches"])) or "none"  # noqa: E731
    rows = [("--seq", "seq", str), ("--batch", "batch", str), ("prefill bucket", "prefill_bucket", str),
            ("CUDA-graph batch sizes", None, graphs), ("prefill padding", "prefill_padding", pct),
            ("decode padding (rows)", "decode_padding", pct), ("refused (too long)", "refused", pct),
            ("waited for a slot", "waited", pct), ("KV cache positions used", "cache_use", pct),
            ("prefill lengths (graphs)", "prefill_graphs", str)]
    for label, key, fmt in rows:
        a, b = (fmt(r[key]) if key else fmt(r) for r in (t, p))
        lines.append(f"  {label:<30}{a:<26}{b}")
    if not str(rep["device"]).startswith("cuda"):
        lines.append("  (CPU: no CUDA graphs and no prefill buckets; plan with --device cuda for a GPU server)")
    lines += ["", f"compile   {rep['compile']}"]
    return "\n".join(lines)
