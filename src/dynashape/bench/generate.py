"""``dynashape bench [ENGINE|MODEL]``: generation speed side by side, on the same random prompts.

Systems: ``dynashape`` (the engine: loaded from its directory, or compiled in memory from a model),
``hf_eager`` (Hugging Face ``generate``) and ``hf_static_compile`` (``generate`` with a static cache,
which transformers compiles with ``torch.compile`` mode reduce-overhead; on transformers 4 we compile
``forward`` the same way). Hugging Face runs the engine's own weights. EOS is ignored so every run
makes ``new_tokens`` tokens. Timing: CUDA events after a warm-up call (the host clock on a CPU).

Physics per record: ``floor_ms`` = the bytes a decode step must read (every weight once, plus the
K/V positions in use) over the copy bandwidth measured in the same run; ``floor_share`` = floor over
the measured step time (1.0 would be the bandwidth floor); ``gbps`` = those bytes over the step
time. ``speedup_vs_hf_static`` compares per-token decode times in the same run. ``compile_s`` = the
first call minus a timed call (graph captures, lazy compiles); the engine's build and load times are
recorded once per run.
"""
from __future__ import annotations

import statistics
import sys
import time
from dataclasses import asdict, dataclass

import torch

from ..errors import DynashapeError, GenerateError
from . import results
from .hf import HFRunner, Skip

SYSTEMS = ("dynashape", "hf_eager", "hf_static_compile")


@dataclass
class BenchSettings:
    target: str = "random:gpt2"      # an engine directory, or a model compiled in memory
    dtype: str = "float16"
    device: str = "auto"
    backend: str = "auto"            # for a model: the backend to compile with
    batches: tuple[int, ...] = (1, 8, 64)
    prompt_lens: tuple[int, ...] = (7, 128, 512)
    new_tokens: int = 128
    systems: tuple[str, ...] = SYSTEMS
    repeats: int = 3                 # timed calls per configuration, after one warm-up call
    budget_s: float = 0.0            # wall seconds per system; configurations past it are recorded as skipped
    seed: int = 0
    out: str = "bench/results/generate"   # writes OUT.json and OUT.png
    command: str = ""

    def __post_init__(self):
        unknown = [s for s in self.systems if s not in SYSTEMS]
        if unknown:
            raise GenerateError(f"unknown bench system {unknown[0]!r}.", "use systems from: " + ", ".join(SYSTEMS) + ".")
        if self.new_tokens < 2 or min(self.batches, default=0) < 1 or min(self.prompt_lens, default=0) < 1:
            raise GenerateError("bench sizes must be batch >= 1, prompt >= 1 and new tokens >= 2.",
                                "use e.g. --batches 1,8,64 --prompt-lens 7,128,512 --new-tokens 128.")


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of all distinct weights (tied ones once): what a decode step must read at least once."""
    return sum({p.data_ptr(): p.numel() * p.element_size() for p in module.parameters()}.values())


def decode_bytes(wbytes: int, m: dict, elem: int, lengths: list[int], steps: int) -> int:
    """Bytes the decode steps must read: all weights once per step + K and V of the positions in use."""
    per_pos = 2 * m["n_layer"] * m["n_embd"] * elem                      # K and V of one position, all layers
    return sum(wbytes + per_pos * sum(L + j + 1 for L in lengths) for j in range(steps))


class EngineRunner:
    """The dynashape system: ``engine.generate`` greedy, timed by the generator's own device marks."""

    def __init__(self, engine):
        self.engine, self.last = engine, []

    def __call__(self, ids: torch.Tensor, new_tokens: int):
        self.last = self.engine.generate(ids.tolist(), new_tokens, ignore_eos=True)
        t = self.engine.generator.last_timing
        return t.ttft_ms, t.step_ms, t.total_ms, len(self.last[0])

    @torch.no_grad()
    def top1_agreement(self, hf, ids: torch.Tensor) -> float:
        """Share of our greedy tokens that the HF model (same weights and dtype) ranks first, same prefix."""
        ours = torch.tensor(self.last, device=ids.device)
        logits = hf(torch.cat([ids, ours], 1)).logits[:, ids.shape[1] - 1:-1]           # (B, N, V)
        return (logits.argmax(-1) == ours).float().mean().item()


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(run, ids, s: BenchSettings, device, wbytes: int, m: dict, elem: int, copy: float) -> dict:
    """One warm-up call, then ``repeats`` timed calls -> one record."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    t0 = time.perf_counter()
    run(ids, s.new_tokens)
    _sync(device)
    first_s = time.perf_counter() - t0
    calls = [run(ids, s.new_tokens) for _ in range(max(1, s.repeats))]
    steps = [x for c in calls for x in c[1]]
    total_ms = statistics.median(c[2] for c in calls)
    B, L, N = ids.shape[0], ids.shape[1], s.new_tokens
    step_mean = statistics.fmean(steps)
    nbytes = decode_bytes(wbytes, m, elem, [L] * B, N - 1) / (N - 1)       # per step, on average
    q = statistics.quantiles(steps, n=10) if len(steps) > 1 else steps * 9
    rec = dict(batch=B, prompt_len=L, new_tokens=N, made_tokens=calls[-1][3],
               ttft_ms=statistics.median(c[0] for c in calls), tpot_ms_median=statistics.median(steps),
               tpot_ms_p90=q[8], tokens_per_s=B * N / (total_ms / 1e3), decode_tokens_per_s=B / (step_mean / 1e3),
               gbps=nbytes / (step_mean / 1e3) / 1e9, floor_ms=nbytes / (copy * 1e9) * 1e3,
               compile_s=max(first_s - total_ms / 1e3, 0.0), first_call_s=first_s,
               peak_mem_gb=torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None)
    rec["floor_share"] = rec["floor_ms"] / step_mean
    return {k: round(v, 5) if isinstance(v, float) else v for k, v in rec.items()}


def _prompts(s: BenchSettings, vocab: int, B: int, L: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(s.seed * 1_000_003 + B * 1009 + L)
    return torch.randint(0, vocab - 1, (B, L), generator=g)                # never EOS (vocab - 1)


def run_system(system, setup, s: BenchSettings, on_record=None) -> list[dict]:
    engine, hf, device, facts = setup["engine"], setup["hf"], setup["device"], setup["facts"]
    torch._dynamo.reset()                                       # each HF system compiles from scratch
    records, t_start = [], time.perf_counter()
    try:
        run = EngineRunner(engine) if system == "dynashape" else HFRunner(hf, device, static=system == "hf_static_compile")
    except Skip as e:
        return [dict(system=system, batch=B, prompt_len=L, new_tokens=s.new_tokens, skipped=str(e))
                for B in s.batches for L in s.prompt_lens]
    m, elem = engine.plan.model, torch.empty((), dtype=engine.model.wte.weight.dtype).element_size()
    for B in s.batches:
        for L in sorted(s.prompt_lens, reverse=True):
            rec = dict(system=system, batch=B, prompt_len=L, new_tokens=s.new_tokens)
            if s.budget_s and time.perf_counter() - t_start > s.budget_s:
                records.append(dict(rec, skipped=f"time budget {s.budget_s:.0f} s for this system spent"))
                continue
            ids = _prompts(s, m["vocab_size"], B, L).to(device)
            try:
                rec.update(measure(run, ids, s, device, setup["wbytes"], m, elem, facts["copy_gbps"]))
                if isinstance(run, EngineRunner):
                    rec["top1_agreement_vs_hf"] = round(run.top1_agreement(hf, ids), 5)
            except (DynashapeError, RuntimeError) as e:       # OOM or a failed compile: say so, go on
                rec["error"] = " ".join(str(e).split())[:300]
            records.append(rec)
            if on_record:
                on_record(records)
            print(f"  {system:18s} batch {B:3d} prompt {L:4d}: " + (
                f"ttft {rec['ttft_ms']:.3f} ms, tpot {rec['tpot_ms_median']:.4f} ms ({rec['floor_share']:.0%} of floor)"
                if "tpot_ms_median" in rec else rec.get("error", rec.get("skipped", ""))), flush=True)
    return records


def add_speedups(runs: list[dict]) -> None:
    base = {(r["batch"], r["prompt_len"]): r["tpot_ms_median"] for r in runs
            if r["system"] == "hf_static_compile" and "tpot_ms_median" in r}
    for r in runs:
        key = (r["batch"], r["prompt_len"])
        if r["system"] == "dynashape" and "tpot_ms_median" in r and key in base:
            r["speedup_vs_hf_static"] = round(base[key] / r["tpot_ms_median"], 3)


def run_bench(s: BenchSettings, on_progress=None) -> dict:
    """Every system on every size; ``on_progress(result)`` sees the result after each record."""
    from .setup import bench_setup

    setup = bench_setup(s)
    result = dict(setup["facts"], command=s.command or " ".join(sys.argv), model=setup["engine"].plan.model,
                  engine=setup["engine_facts"], weight_bytes=setup["wbytes"], settings=asdict(s), runs=[],
                  created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    done: list[dict] = []
    for system in s.systems:
        report = (lambda recs: on_progress(dict(result, runs=done + recs))) if on_progress else None
        done += run_system(system, setup, s, report)
    add_speedups(done)
    result["runs"] = done
    return result


def write_results(result: dict, json_path: str, png_path: str | None = None) -> None:
    """JSON (and the PNG plot when a path is given), each written to a temp file and renamed."""
    from .report import plot

    results.write_results(result, json_path, png_path, plot)
