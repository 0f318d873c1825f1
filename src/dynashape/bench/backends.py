"""``dynashape bench --backends eager,inductor,aoti,onnx``: prefill latency by sequence length.

One run builds an engine per backend from the same model (``--seq 1:MAX`` over the longest length
asked, a static batch) and times the prompt pass at each length, side by side: a generation engine's
prefill graph (which also fills the KV cache and returns the last position's logits), a forward
engine's no-cache graph (logits at every position). Timed: the backend's graph on inputs already
shaped for it (the engine's checks and padding are excluded); median and p90 of ``iters`` calls
after ``warmup`` calls, with CUDA events on a GPU and ``time.perf_counter`` on the CPU. Build time is
recorded per backend, and each backend's logits are checked against the Hugging Face model once,
so a fast wrong backend cannot hide. A backend that cannot run here (onnxruntime without a CUDA
provider on a GPU run, a missing optional package) is recorded as skipped with its reason.

Usable without the CLI: ``python3 -m dynashape.bench.backends --model random:tiny --out PREFIX``.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

import torch

from . import machine, results
from ..backends import default_dtype, resolve_device
from ..errors import DynashapeError, ShapeError

DEFAULT_BACKENDS = ("eager", "inductor", "aoti", "onnx")


@dataclass
class BackendBenchSettings:
    model: str = "random:gpt2"
    backends: tuple[str, ...] = DEFAULT_BACKENDS
    lengths: tuple[int, ...] = ()        # default: 8, 32, 128, 512 ... up to n_positions, and n_positions
    batch: int = 1
    device: str = "auto"                 # cuda when there is a GPU, else cpu
    dtype: str = "auto"                  # float16 on cuda, float32 on cpu
    warmup: int = 3
    iters: int = 20
    budget_s: float = 2.0                # per backend and length: fewer iters (>= 5) when calls are slow
    isolate: bool = True                 # each backend in its own process: a crash is a result, not the end
    out: str = "bench/results/backends"  # writes OUT.json and OUT.png
    command: str = ""

    def resolved(self) -> "BackendBenchSettings":
        device = resolve_device(self.device)
        dtype = default_dtype(device) if self.dtype == "auto" else self.dtype
        if self.batch < 1 or self.warmup < 0 or self.iters < 1 or any(n < 1 for n in self.lengths):
            raise ShapeError("bench sizes must be batch >= 1, lengths >= 1, iters >= 1.",
                             "use e.g. --lengths 8,32,128,512,1024 --batch 1.")
        return BackendBenchSettings(**{**asdict(self), "device": device, "dtype": dtype})


def machine_facts(device: str, dtype: str) -> dict:
    return machine.machine_facts(device, dtype)


# ---- timing ------------------------------------------------------------------------------------

def _one_call_ms(fn, feeds, cuda: bool) -> float:
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(**feeds)
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    fn(**feeds)
    return (time.perf_counter() - t0) * 1e3


def time_calls(fn, feeds, s: BackendBenchSettings) -> dict:
    """median / p90 in ms over up to ``iters`` calls after ``warmup`` calls (fewer when calls are slow)."""
    cuda = s.device.startswith("cuda")
    with torch.no_grad():
        first = _one_call_ms(fn, feeds, cuda)
        for _ in range(max(s.warmup - 1, 0)):
            fn(**feeds)
        warm = _one_call_ms(fn, feeds, cuda)  # sizes the run; the first call may include one-off work
        n = max(min(s.iters, int(s.budget_s * 1e3 / max(warm, 1e-3))), min(5, s.iters))
        times = sorted(_one_call_ms(fn, feeds, cuda) for _ in range(n))
    p90 = times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]
    return {"median_ms": round(statistics.median(times), 4), "p90_ms": round(p90, 4), "iters": n,
            "first_ms": round(first, 3)}


# ---- one backend -------------------------------------------------------------------------------

def _call(engine, batch: int, length: int, seed: int = 0):
    """(fn, feeds) timing one prompt pass of ``engine`` at (batch, length), inputs shaped for its graph."""
    plan = engine.plan
    t = plan.graph_size("seq", length)
    g = torch.Generator().manual_seed(seed + length)
    ids = torch.randint(0, plan.model["vocab_size"], (batch, t), generator=g).to(engine.device)
    if engine.generates:
        gen = engine.generator
        B = plan.graph_size("batch", batch)
        idx = torch.zeros(B, t, dtype=torch.long, device=engine.device)
        idx[:batch] = ids
        feeds = {"idx": idx, "last": torch.full((B,), length - 1, device=engine.device),
                 "slots": torch.arange(B, device=engine.device)}
        return (lambda idx, last, slots: engine.runners["prefill"](idx, last, slots, gen.k, gen.v)), feeds, ids
    feeds = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    return engine.runners["forward"], {spec.name: feeds[spec.name] for spec in plan.inputs}, ids


def _skip_reason(backend: str, s: BackendBenchSettings) -> str | None:
    if backend == "onnx" and s.device.startswith("cuda"):
        try:
            import onnxruntime
        except ImportError:
            return "onnxruntime is not installed (pip install dynashape[onnx])."
        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            return ("onnxruntime here has only " + ", ".join(onnxruntime.get_available_providers()) +
                    ": timing it on the CPU beside GPU backends would not compare like with like.")
    return None


def bench_backend(backend: str, lm, s: BackendBenchSettings) -> dict:
    from .. import api

    reason = _skip_reason(backend, s)
    if reason:
        return {"status": "skipped", "reason": reason}
    t0 = time.perf_counter()
    try:
        engine = api.compile(s.model, seq=f"1:{max(s.lengths)}", batch=str(s.batch), backend=backend, device=s.device,
                             dtype=s.dtype, loaded=lm)
    except DynashapeError as e:
        return {"status": "skipped", "reason": e.one_line()}
    except Exception as e:  # a backend that breaks on this machine is a result, not a crash of the run
        return {"status": "failed", "reason": f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"}
    row = {"status": "ok", "build_s": round(time.perf_counter() - t0, 2), "compile_s": engine.meta["compile_s"],
           "graph": "prefill" if engine.generates else "forward"}
    n = s.lengths[len(s.lengths) // 2]
    fn, feeds, ids = _call(engine, s.batch, n)
    with torch.no_grad():
        got = fn(**feeds).float()[:s.batch]
        want = lm.model(input_ids=ids[:, :n], use_cache=False).logits.float()
        if engine.generates:
            want = want[:, -1]
        else:
            got = got[:, :n]
    row["max_abs_err_vs_hf"] = round((got - want).abs().max().item(), 6)
    row["top1_agree_vs_hf"] = round((got.argmax(-1) == want.argmax(-1)).float().mean().item(), 4)
    row["by_length"] = {str(n): time_calls(*_call(engine, s.batch, n)[:2], s) for n in s.lengths}
    del engine
    gc.collect()
    if s.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return row


# ---- the run -----------------------------------------------------------------------------------

def run_isolated(backend: str, s: BackendBenchSettings) -> dict:
    """bench_backend in a child process, so a backend that crashes (e.g. a segfault) is recorded."""
    fd, path = tempfile.mkstemp(prefix="dynashape-bench-", suffix=".json")
    os.close(fd)
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONFAULTHANDLER="1",
               PYTHONPATH=os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p))
    argv = [sys.executable, "-m", "dynashape.bench.backends", "--model", s.model, "--backends", backend,
            "--lengths", ",".join(map(str, s.lengths)), "--batch", str(s.batch), "--device", s.device,
            "--dtype", s.dtype, "--warmup", str(s.warmup), "--iters", str(s.iters), "--budget-s", str(s.budget_s),
            "--no-isolate", "--row-json", path]
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-3000:])
        with open(path) as f:
            text = f.read()
        if proc.returncode == 0 and text:
            return json.loads(text)
    finally:
        os.unlink(path)
    how = (f"signal {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
           else f"exit code {proc.returncode}")
    where = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip().startswith("File ")][:3]
    return {"status": "failed", "reason": f"the benchmark process died ({how})" +
            (f"; innermost frames: {' | '.join(where)}" if where else "")}


def default_lengths(n_positions: int) -> tuple[int, ...]:
    lengths = [n for n in (8, 32, 128, 512) if n < n_positions]
    return tuple(lengths + [n_positions])


def run_backend_bench(settings: BackendBenchSettings) -> dict:
    from ..backends import get_backend
    from ..models.load import load_model, parse_dtype

    s = settings.resolved()
    for name in s.backends:
        get_backend(name)  # unknown names fail before any model is loaded
    lm = load_model(s.model)
    n_pos = lm.info()["n_positions"]
    s.lengths = tuple(s.lengths) or default_lengths(n_pos)
    if max(s.lengths) > n_pos:
        raise ShapeError(f"--lengths max {max(s.lengths)} is above the model's n_positions {n_pos}.",
                         f"use lengths up to {n_pos}.")
    if not s.isolate:  # isolated runs load the model in each backend's own process
        lm.model.to(s.device, parse_dtype(s.dtype))
    results = {}
    load_before = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    for name in s.backends:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        results[name] = run_isolated(name, s) if s.isolate else bench_backend(name, lm, s)
    return {"command": s.command or "python3 -m dynashape.bench.backends " + shlex.join(sys.argv[1:]),
            "machine": dict(machine_facts(s.device, s.dtype), loadavg_1m_start=load_before),
            "model": lm.info(), "settings": asdict(s),
            "plan": {"serve_seq": f"1:{max(s.lengths)}", "batch": s.batch},
            "timed": "the backend's prompt graph on inputs already shaped for it (engine checks excluded): a "
                     "generation engine's prefill (cache write + last-position logits), a forward engine's "
                     "no-cache forward (logits at every position)",
            "lengths": list(s.lengths), "backends": results, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


# ---- output ------------------------------------------------------------------------------------

def plot(result: dict, path: str) -> None:
    """Median forward latency by sequence length, one line per backend, p90 shaded."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    values, left_out = [], []
    for name, row in result["backends"].items():
        if row["status"] != "ok":
            left_out.append(f"{name}: {row['status']}")
            continue
        values += [v["p90_ms"] for v in row["by_length"].values()] + [v["median_ms"] for v in row["by_length"].values()]
        xs = [int(n) for n in row["by_length"]]
        med = [v["median_ms"] for v in row["by_length"].values()]
        p90 = [v["p90_ms"] for v in row["by_length"].values()]
        line, = ax.plot(xs, med, marker="o", label=name)
        ax.fill_between(xs, med, p90, color=line.get_color(), alpha=0.15)
    m = result["machine"]
    wide = bool(values) and max(values) / max(min(values), 1e-9) > 20  # log scale only when it spans decades
    ax.set(xscale="log", yscale="log" if wide else "linear", ylabel="forward latency, ms (median; p90 shaded)",
           xlabel="sequence length (batch %d)" % result["plan"]["batch"])
    if not wide:
        ax.set_ylim(bottom=0)
    ax.set_xticks(result["lengths"], [str(n) for n in result["lengths"]])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    if left_out:
        ax.text(0.99, 0.01, "not shown: " + "; ".join(left_out), transform=ax.transAxes, ha="right",
                va="bottom", fontsize=7, color="0.4")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title(f"{result['model']['name']} {m['dtype']} on {m['gpu'] or m['cpu']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)


def write_results(result: dict, json_path: str, png_path: str | None = None) -> None:
    """JSON (and the PNG plot when a path is given), each written to a temp file and renamed."""
    results.write_results(result, json_path, png_path, plot)


def format_table(result: dict) -> str:
    ok = [n for n, r in result["backends"].items() if r["status"] == "ok"]
    m = result["machine"]
    lines = [f"{result['model']['name']} {m['dtype']} on {m['gpu'] or m['cpu']}, batch {result['plan']['batch']}: "
             "forward ms, median / p90",
             f"{'seq':>6s} " + " ".join(f"{n:>19s}" for n in ok)]
    for n in result["lengths"]:
        cells = [result["backends"][b]["by_length"][str(n)] for b in ok]
        lines.append(f"{n:>6d} " + " ".join(f"{c['median_ms']:>9.3f} / {c['p90_ms']:<7.3f}" for c in cells))
    lines.append(f"{'build':>6s} " + " ".join(f"{result['backends'][b]['build_s']:>17.1f} s" for b in ok))
    lines.append(f"{'err':>6s} " + " ".join(f"{result['backends'][b]['max_abs_err_vs_hf']:>19.2e}" for b in ok))
    for name, r in result["backends"].items():
        if r["status"] != "ok":
            lines.append(f"{name}: {r['status']}: {r['reason']}")
    return "\n".join(lines)


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in str(text).split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers") from None


def main(argv: list[str] | None = None, prog: str = "python3 -m dynashape.bench.backends") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    d = BackendBenchSettings()
    p.add_argument("--model", default=d.model)
    p.add_argument("--backends", type=lambda t: tuple(x for x in t.split(",") if x), default=d.backends)
    p.add_argument("--lengths", type=_ints, default=d.lengths, help="e.g. 8,32,128,512,1024")
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--device", default=d.device)
    p.add_argument("--dtype", default=d.dtype)
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--iters", type=int, default=d.iters)
    p.add_argument("--budget-s", type=float, default=d.budget_s)
    p.add_argument("--out", default=d.out, help="path prefix: writes OUT.json and OUT.png")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--no-isolate", action="store_true", help="run every backend in this process")
    p.add_argument("--row-json", default=None, help=argparse.SUPPRESS)  # internal: run_isolated's child
    a = p.parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)
    s = BackendBenchSettings(model=a.model, backends=a.backends, lengths=a.lengths, batch=a.batch, device=a.device,
                             dtype=a.dtype, warmup=a.warmup, iters=a.iters, budget_s=a.budget_s, out=a.out,
                             isolate=not a.no_isolate, command=f"{prog} {shlex.join(argv)}".strip())
    try:
        result = run_backend_bench(s)
    except DynashapeError as e:
        print(f"error: {e.one_line()}", file=sys.stderr)
        return e.exit_code
    if a.row_json:
        with open(a.row_json, "w") as f:
            json.dump(result["backends"][s.backends[0]], f)
        return 0
    write_results(result, s.out + ".json", None if a.no_plot else s.out + ".png")
    print(format_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
