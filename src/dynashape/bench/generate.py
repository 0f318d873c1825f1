"""``dynashape bench``: generation speed, side by side, on the same random prompts.

Systems: ``hf_eager`` (Hugging Face ``generate``), ``hf_static_compile`` (``generate`` with a static
cache, which transformers 5 compiles with ``torch.compile`` mode reduce-overhead; on transformers 4
we compile ``forward`` the same way) and ``dynashape`` (``FastGenerator``). EOS is ignored so every
run makes ``new_tokens`` tokens. Timing: CUDA events after a warm-up call (host clock on the CPU);
Hugging Face steps are marked by a pass-through logits processor, ours by ``FastGenerator``.

Physics per record: ``gbps`` = bytes a decode step must read (every weight once, plus the K/V
positions in use, never cache padding) over the decode time, and ``copy_share`` = that over the
device-to-device copy bandwidth measured in the same run. ``compile_s`` = first call minus a
timed call (compile, warm-up, graph capture). ``tokens_per_s`` is end to end (prefill included);
``decode_tokens_per_s`` = batch / mean per-token time.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field

import torch

from . import results
from ..errors import DynashapeError, GenerateError
from ..runtime.fastgen import FastGenerator, resolve_device, resolve_dtype, weight_bytes
from ..models.load import dtype_name, load_model

SYSTEMS = ("dynashape", "hf_eager", "hf_static_compile")


@dataclass
class BenchSettings:
    model: str = "random:gpt2"
    dtype: str = "float16"
    device: str = "auto"
    batches: tuple[int, ...] = (1, 8, 64)
    prompt_lens: tuple[int, ...] = (7, 128, 512)
    new_tokens: int = 128
    systems: tuple[str, ...] = SYSTEMS
    repeats: int = 3                 # timed calls per configuration, after one warm-up call
    budget_s: float = 0.0            # wall seconds per system; configurations past it are recorded as skipped
    seed: int = 0
    steps_per_graph: int = 8
    out: str = "bench/results/generate"   # writes OUT.json and OUT.png
    command: str = ""

    def __post_init__(self):
        unknown = [s for s in self.systems if s not in SYSTEMS]
        if unknown:
            raise GenerateError(f"unknown bench system {unknown[0]!r}.", "use systems from: " + ", ".join(SYSTEMS) + ".")
        if self.new_tokens < 2 or min(self.batches) < 1 or min(self.prompt_lens) < 1:
            raise GenerateError("bench sizes must be batch >= 1, prompt >= 1 and new tokens >= 2.",
                                "use e.g. --batches 1,8,64 --prompt-lens 7,128,512 --new-tokens 128.")


@dataclass
class Measure:
    ttft_ms: float
    step_ms: list[float]
    total_ms: float
    made: int = 0                    # tokens made per row (checked against new_tokens)
    notes: list[str] = field(default_factory=list)


class _Skip(Exception):
    pass


# ---- machine and physics ---------------------------------------------------------------------
def copy_gbps(device: torch.device) -> float:
    """Device-to-device copy bandwidth, counting bytes read plus bytes written."""
    n = (1 << 30) if device.type == "cuda" else (1 << 26)
    src = torch.empty(n, dtype=torch.uint8, device=device).random_(0, 255)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    reps = 20 if device.type == "cuda" else 5
    t = _Timer(device)
    for _ in range(reps):
        dst.copy_(src)
    ms = t.stop()
    del src, dst
    return 2 * n * reps / (ms / 1e3) / 1e9


def decode_bytes(weight_bytes: int, cfg, elem: int, lengths: list[int], steps: int) -> int:
    """Bytes the decode steps must read: all weights once per step + K and V of positions in use."""
    per_pos = 2 * cfg.n_layer * cfg.n_embd * elem          # K and V of one position, all layers
    total = 0
    for j in range(steps):                                 # step j feeds position L + j, attends L + j + 1
        total += weight_bytes + per_pos * sum(L + j + 1 for L in lengths)
    return total


def machine_facts(device: torch.device, dtype: torch.dtype) -> dict:
    import transformers
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"gpu": gpu, "device": str(device), "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "cuda": torch.version.cuda, "python": platform.python_version(), "dtype": dtype_name(dtype),
            "copy_gbps": round(copy_gbps(device), 1)}


class _Timer:
    def __init__(self, device):
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.a, self.b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.a.record()
        else:
            self.t0 = time.perf_counter()

    def stop(self) -> float:
        if not self.cuda:
            return (time.perf_counter() - self.t0) * 1e3
        self.b.record()
        self.b.synchronize()
        return self.a.elapsed_time(self.b)


# ---- systems -----------------------------------------------------------------------------------
class _HFClock:
    """A pass-through logits processor: marks when each new token's logits are ready."""

    def __init__(self, device):
        self.cuda, self.marks = device.type == "cuda", []

    def __call__(self, input_ids, scores):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.marks.append(ev)
        else:
            self.marks.append(time.perf_counter())
        return scores


class HFRunner:
    def __init__(self, lm, device, static: bool):
        from transformers import GenerationConfig
        self.model, self.device, self.static = lm.model, device, static
        self.model.generation_config.eos_token_id = None    # every run makes the whole budget
        kw = dict(do_sample=False, eos_token_id=None, pad_token_id=0)
        if static:
            if device.type != "cuda":
                raise _Skip("needs CUDA (static cache + torch.compile mode reduce-overhead uses CUDA graphs)")
            kw["cache_implementation"] = "static"
            import transformers.generation as tg
            if not hasattr(tg, "CompileConfig"):             # transformers 4: compile forward ourselves
                self.model.forward = torch.compile(self.model.forward, mode="reduce-overhead", fullgraph=True)
        self.gen_kwargs = kw
        self.GenerationConfig = GenerationConfig

    def __call__(self, ids: torch.Tensor, new_tokens: int) -> Measure:
        from transformers import LogitsProcessorList
        cfg = self.GenerationConfig(max_new_tokens=new_tokens, **self.gen_kwargs)
        clock = _HFClock(self.device)
        start = _Timer(self.device)
        start0 = start.a if start.cuda else start.t0
        out = self.model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=cfg,
                                  logits_processor=LogitsProcessorList([clock]))
        total = start.stop()
        ms = (lambda a, b: a.elapsed_time(b)) if start.cuda else (lambda a, b: (b - a) * 1e3)
        marks = [start0] + clock.marks
        steps = [ms(a, b) for a, b in zip(marks[1:], marks[2:])]
        return Measure(ms(marks[0], marks[1]), steps, total, made=out.shape[1] - ids.shape[1])


class OursRunner:
    def __init__(self, lm, device, dtype, settings: BenchSettings):
        self.hf = lm.model
        self.fg = FastGenerator(lm, device=device, dtype=dtype, max_batch=max(settings.batches),
                                max_len=max(settings.prompt_lens) + settings.new_tokens,
                                steps_per_graph=settings.steps_per_graph)
        self.last: list[list[int]] = []

    def __call__(self, ids: torch.Tensor, new_tokens: int) -> Measure:
        self.last = self.fg.generate(ids.tolist(), new_tokens, ignore_eos=True)
        t = self.fg.last_timing
        notes = [f"{self.fg.steps_per_graph} decode steps per CUDA graph replay; per-token time = replay time / steps"] \
            if self.fg.cuda_graphs else ["eager (no CUDA graphs on this device)"]
        notes.append(f"decode attention: {self.fg.attention}")
        return Measure(t.ttft_ms, t.step_ms, t.total_ms, made=len(self.last[0]), notes=notes)

    @torch.no_grad()
    def top1_agreement(self, ids: torch.Tensor) -> float:
        """Share of our greedy tokens that the HF model (same dtype) ranks first given the same prefix."""
        ours = torch.tensor(self.last, device=ids.device)
        logits = self.hf(torch.cat([ids, ours], 1)).logits[:, ids.shape[1] - 1:-1]     # (B, N, V)
        return (logits.argmax(-1) == ours).float().mean().item()


def make_runner(system: str, lm, device, dtype, settings):
    if system == "dynashape":
        return OursRunner(lm, device, dtype, settings)
    return HFRunner(lm, device, static=system == "hf_static_compile")


# ---- the run -----------------------------------------------------------------------------------
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure_config(run, ids, settings, device, weight_bytes, cfg, elem) -> dict:
    """One warm-up call, then ``repeats`` timed calls -> one record."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    t0 = time.perf_counter()
    run(ids, settings.new_tokens)
    _sync(device)
    first_s = time.perf_counter() - t0
    ms = [run(ids, settings.new_tokens) for _ in range(max(1, settings.repeats))]
    steps = [s for m in ms for s in m.step_ms]
    total_ms = statistics.median(m.total_ms for m in ms)
    B, L, N = ids.shape[0], ids.shape[1], settings.new_tokens
    decode_ms = sum(steps) / len(ms)
    nbytes = decode_bytes(weight_bytes, cfg, elem, [L] * B, N - 1)
    q = statistics.quantiles(steps, n=10) if len(steps) > 1 else steps * 9
    rec = dict(batch=B, prompt_len=L, new_tokens=N, made_tokens=ms[-1].made,
               ttft_ms=statistics.median(m.ttft_ms for m in ms), tpot_ms_median=statistics.median(steps),
               tpot_ms_p90=q[8], tokens_per_s=B * N / (total_ms / 1e3),
               decode_tokens_per_s=B / (statistics.fmean(steps) / 1e3), gbps=nbytes / (decode_ms / 1e3) / 1e9,
               compile_s=max(first_s - total_ms / 1e3, 0.0), first_call_s=first_s,
               peak_mem_gb=torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None,
               notes=ms[-1].notes)
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in rec.items()}


def _prompts(settings, vocab: int, B: int, L: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(settings.seed * 1_000_003 + B * 1009 + L)
    return torch.randint(0, vocab, (B, L), generator=g)


def run_system(system, lm, device, dtype, settings, facts, wbytes, on_record=None) -> list[dict]:
    torch._dynamo.reset()                                   # each system compiles from scratch
    records, t_start = [], time.perf_counter()
    base = dict(system=system)
    try:
        run = make_runner(system, lm, device, dtype, settings)
    except _Skip as e:
        return [dict(base, batch=B, prompt_len=L, new_tokens=settings.new_tokens, skipped=str(e))
                for B in settings.batches for L in settings.prompt_lens]
    cfg, elem = lm.config, torch.empty((), dtype=dtype).element_size()
    for B in settings.batches:
        for L in sorted(settings.prompt_lens, reverse=True):  # longest first: caches sized once
            rec = dict(base, batch=B, prompt_len=L, new_tokens=settings.new_tokens)
            spent = time.perf_counter() - t_start
            if settings.budget_s and spent > settings.budget_s:
                records.append(dict(rec, skipped=f"time budget {settings.budget_s:.0f} s for this system spent"))
                continue
            ids = _prompts(settings, lm.config.vocab_size, B, L).to(device)
            try:
                rec.update(measure_config(run, ids, settings, device, wbytes, cfg, elem))
                rec["copy_share"] = round(rec["gbps"] / facts["copy_gbps"], 4)
                if isinstance(run, OursRunner):
                    rec["top1_agreement_vs_hf"] = round(run.top1_agreement(ids), 5)
                    rec["options"] = run.fg.options()
            except (DynashapeError, RuntimeError) as e:       # OOM or a failed compile: say so, go on
                rec["error"] = " ".join(str(e).split())[:300]
            records.append(rec)
            if on_record:
                on_record(records)
            print(f"  {system:18s} batch {B:3d} prompt {L:4d}: " + (
                f"ttft {rec['ttft_ms']:.3f} ms, tpot {rec['tpot_ms_median']:.4f} ms, compile {rec['compile_s']:.1f} s"
                if "tpot_ms_median" in rec else rec.get("error", "")), flush=True)
    return records


def run_bench(settings: BenchSettings, on_progress=None) -> dict:
    """Every system on every size; ``on_progress(result)`` sees the result after each record."""
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    lm = load_model(settings.model, dtype=dtype)
    lm.model.to(device)
    facts = machine_facts(device, dtype)
    wbytes = weight_bytes(lm.model)
    result = dict(facts, command=settings.command or " ".join(sys.argv), model=lm.info(),
                  weight_bytes=wbytes, settings=asdict(settings), runs=[],
                  created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    done: list[dict] = []
    for system in settings.systems:
        report = (lambda recs: on_progress(dict(result, runs=done + recs))) if on_progress else None
        done += run_system(system, lm, device, dtype, settings, facts, wbytes, report)
    result["runs"] = done
    return result


# ---- output ------------------------------------------------------------------------------------
def write_results(result: dict, json_path: str, png_path: str | None = None) -> None:
    """JSON (and the PNG plot when a path is given), each written to a temp file and renamed."""
    results.write_results(result, json_path, png_path, plot)


def plot(result: dict, path: str) -> None:
    """Per-token decode time by batch size, one line per system, one panel per prompt length."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = [r for r in result["runs"] if "tpot_ms_median" in r]
    lens = sorted({r["prompt_len"] for r in result["runs"]})
    fig, axes = plt.subplots(1, len(lens), figsize=(4.2 * len(lens), 3.6), squeeze=False, sharey=True)
    for ax, L in zip(axes[0], lens):
        for system in dict.fromkeys(r["system"] for r in result["runs"]):
            pts = sorted((r["batch"], r["tpot_ms_median"]) for r in runs if r["system"] == system and r["prompt_len"] == L)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=system)
        ax.set(xscale="log", yscale="log", xlabel="batch", title=f"prompt {L}, {result['settings']['new_tokens']} new")
        batches = sorted({r["batch"] for r in result["runs"]})
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.minorticks_off()
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("ms per token (median)")
    axes[0][0].legend()
    fig.suptitle(f"{result['model']['name']} {result['dtype']} on {result['gpu'] or result['cpu']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)


def format_table(result: dict) -> str:
    head = ("system", "batch", "prompt", "ttft_ms", "tpot_med", "tpot_p90", "tok/s", "GB/s", "copy%", "compile_s", "peak_GB")
    lines = [" ".join(f"{h:>10s}" if i else f"{h:18s}" for i, h in enumerate(head))]
    for r in result["runs"]:
        left = f"{r['system']:18s} {r['batch']:>10d} {r['prompt_len']:>10d}"
        if "tpot_ms_median" not in r:
            lines.append(f"{left}  {r.get('skipped') or r.get('error')}")
            continue
        peak = "-" if r["peak_mem_gb"] is None else f"{r['peak_mem_gb']:.2f}"
        lines.append(f"{left} {r['ttft_ms']:>10.3f} {r['tpot_ms_median']:>10.4f} {r['tpot_ms_p90']:>10.4f} "
                     f"{r['tokens_per_s']:>10.0f} {r['gbps']:>10.1f} {100 * r['copy_share']:>9.1f}% "
                     f"{r['compile_s']:>10.1f} {peak:>10s}")
    return "\n".join([f"copy bandwidth {result['copy_gbps']} GB/s; {result['dtype']}; {result['gpu'] or result['cpu']}",
                      *lines])


def profile_decode(settings: BenchSettings, batch: int, prompt_len: int) -> str:
    """Where one warmed-up request's time goes: kernels per token, kernel time vs wall, top kernels."""
    from torch.profiler import ProfilerActivity, profile
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    lm = load_model(settings.model, dtype=dtype)
    fg = FastGenerator(lm, device=device, dtype=dtype, max_batch=batch, max_len=prompt_len + settings.new_tokens,
                       steps_per_graph=settings.steps_per_graph)
    ids = _prompts(settings, lm.config.vocab_size, batch, prompt_len).tolist()
    t0 = time.perf_counter()
    fg.generate(ids, settings.new_tokens, ignore_eos=True)
    first = time.perf_counter() - t0
    fg.generate(ids, settings.new_tokens, ignore_eos=True)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        fg.generate(ids, settings.new_tokens, ignore_eos=True)
    t = fg.last_timing
    kernels = [e for e in prof.events() if e.device_type.name == "CUDA"]
    busy_ms = sum(e.time_range.elapsed_us() for e in kernels) / 1e3
    n = settings.new_tokens
    lines = [f"profile batch {batch} prompt {prompt_len} new {n}: first call {first:.1f} s, "
             f"ttft {t.ttft_ms:.3f} ms, tpot median {statistics.median(t.step_ms):.4f} ms, total {t.total_ms:.2f} ms",
             f"  device ops {len(kernels)} = {len(kernels) / n:.1f} per token; kernel time {busy_ms:.2f} ms "
             f"= {busy_ms / max(t.total_ms, 1e-9):.0%} of the request's wall time"]
    try:
        lines.append(prof.key_averages().table(sort_by="self_device_time_total", row_limit=14, max_name_column_width=70))
    except Exception as e:  # the profiler's table keys moved between torch versions
        lines.append(f"  (no kernel table: {e})")
    return "\n".join(lines)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in str(text).split(",") if x.strip())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dynashape.bench", description=__doc__.splitlines()[0])
    d = BenchSettings()
    p.add_argument("--model", default=d.model)
    p.add_argument("--dtype", default=d.dtype)
    p.add_argument("--device", default=d.device)
    p.add_argument("--batches", type=_ints, default=d.batches)
    p.add_argument("--prompt-lens", type=_ints, default=d.prompt_lens)
    p.add_argument("--new-tokens", type=int, default=d.new_tokens)
    p.add_argument("--systems", type=lambda s: tuple(s.split(",")), default=d.systems)
    p.add_argument("--repeats", type=int, default=d.repeats)
    p.add_argument("--budget-s", type=float, default=d.budget_s)
    p.add_argument("--steps-per-graph", type=int, default=d.steps_per_graph)
    p.add_argument("--out", default=d.out)
    p.add_argument("--profile", type=_ints, default=None, metavar="BATCH,PROMPT",
                   help="profile one dynashape request of this size instead of benchmarking")
    a = p.parse_args(argv)
    argv_text = " ".join(sys.argv[1:] if argv is None else argv)
    try:
        s = BenchSettings(model=a.model, dtype=a.dtype, device=a.device, batches=a.batches, prompt_lens=a.prompt_lens,
                          new_tokens=a.new_tokens, systems=a.systems, repeats=a.repeats, budget_s=a.budget_s,
                          steps_per_graph=a.steps_per_graph, out=a.out,
                          command=f"python -m dynashape.bench {argv_text}".strip())
        if a.profile:
            print(profile_decode(s, *a.profile))
            return 0
        # partial JSON after every record: a run stopped by a time limit still leaves its numbers
        result = run_bench(s, on_progress=lambda r: write_results(r, s.out + ".json"))
    except DynashapeError as e:
        print(f"error: {e.one_line()}", file=sys.stderr)
        return e.exit_code
    write_results(result, s.out + ".json", s.out + ".png")
    print(format_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
