"""The generation bench's outputs: a table, a plot, and a profile of one request's decode steps."""
from __future__ import annotations

import statistics


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
        floor = sorted((r["batch"], r["floor_ms"]) for r in runs if r["system"] == "dynashape" and r["prompt_len"] == L)
        if floor:
            ax.plot(*zip(*floor), linestyle=":", color="0.4", label="bandwidth floor")
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
    head = ("system", "batch", "prompt", "ttft_ms", "tpot_med", "tpot_p90", "tok/s", "GB/s", "floor%", "vs_hf", "compile_s")
    lines = [" ".join(f"{h:>10s}" if i else f"{h:18s}" for i, h in enumerate(head))]
    for r in result["runs"]:
        left = f"{r['system']:18s} {r['batch']:>10d} {r['prompt_len']:>10d}"
        if "tpot_ms_median" not in r:
            lines.append(f"{left}  {r.get('skipped') or r.get('error')}")
            continue
        vs = f"{r['speedup_vs_hf_static']:.2f}x" if "speedup_vs_hf_static" in r else "-"
        lines.append(f"{left} {r['ttft_ms']:>10.3f} {r['tpot_ms_median']:>10.4f} {r['tpot_ms_p90']:>10.4f} "
                     f"{r['tokens_per_s']:>10.0f} {r['gbps']:>10.1f} {100 * r['floor_share']:>9.1f}% {vs:>10s} "
                     f"{r['compile_s']:>10.1f}")
    e = result.get("engine", {})
    return "\n".join([f"copy bandwidth {result['copy_gbps']} GB/s; {result['dtype']}; {result['gpu'] or result['cpu']}; "
                      f"engine {e.get('backend')} ({e.get('source')}: build {e.get('build_s')} s, load "
                      f"{e.get('load_s', '-')} s, graphs ready {e.get('ready_s')} s)", *lines])


KERNEL_CLASSES = ("gemv", "_proj_kernel", "layer_norm", "_linear_kernel", "splitk_reduce", "split_kv", "combine",
                  "prefill_attention", "greedy_update", "embed", "gemm", "flash", "sort", "softmax", "argmax", "reduce",
                  "index", "copy", "elementwise")


def _profiled(engine, ids, new_tokens: int):
    """Kernels of one request: (name class -> ms, kernel count, the profiler)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if engine.device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        engine.generate(ids, new_tokens, ignore_eos=True)
    if engine.device.type == "cuda":
        torch.cuda.synchronize()
    classes: dict[str, float] = {}
    kernels = [e for e in prof.events() if e.device_type.name == "CUDA"]
    for e in kernels:
        name = e.name.split("(")[0].lower()
        key = next((k for k in KERNEL_CLASSES if k in name), "other")
        classes[key] = classes.get(key, 0.0) + e.time_range.elapsed_us() / 1e3
    return classes, len(kernels), prof


def profile_decode(engine, batch: int, prompt_len: int, new_tokens: int, seed: int = 0) -> str:
    """Where a warmed-up request's time goes: the prefill alone (one new token), then a whole request;
    the difference is the decode steps: kernels per step and time per kernel class."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, engine.plan.model["vocab_size"] - 1, (batch, prompt_len), generator=g).tolist()
    for n in (1, new_tokens, 1, new_tokens):
        engine.generate(ids, n, ignore_eos=True)
    pre, n_pre, _ = _profiled(engine, ids, 1)
    ttft = engine.generator.last_timing.ttft_ms
    whole, n_all, prof = _profiled(engine, ids, new_tokens)
    t = engine.generator.last_timing
    steps = max(new_tokens - 1, 1)
    dec = {k: whole[k] - pre.get(k, 0.0) for k in whole}
    def fmt(d: dict, n: int) -> str:
        return ", ".join(f"{k} {v / n * 1e3:.1f}" for k, v in sorted(d.items(), key=lambda kv: -kv[1]))
    lines = [f"profile batch {batch} prompt {prompt_len} new {new_tokens}: ttft {ttft:.3f} ms, tpot median "
             f"{statistics.median(t.step_ms):.4f} ms, total {t.total_ms:.2f} ms",
             f"  prefill: {n_pre} kernels, {sum(pre.values()):.3f} ms of kernel time; us per class: {fmt(pre, 1)}",
             f"  decode: {(n_all - n_pre) / steps:.1f} kernels per step, {sum(dec.values()) / steps * 1e3:.1f} us of "
             f"kernel time per step; us per step per class: {fmt(dec, steps)}"]
    try:
        lines.append(prof.key_averages().table(sort_by="self_device_time_total", row_limit=14, max_name_column_width=70))
    except Exception as e:  # the profiler's table keys moved between torch versions
        lines.append(f"  (no kernel table: {e})")
    return "\n".join(lines)


def write_profile(settings, sizes) -> str:
    """``profile_decode`` of the settings' engine (loaded, or compiled in memory) for ``sizes`` = (BATCH,
    PROMPT) -> OUT.profile.txt, with its command on the first line; returns the text."""
    from ..errors import GenerateError
    from .results import write_text
    from .setup import bench_setup

    sizes = list(sizes)
    if len(sizes) != 2 or min(sizes) < 1:
        raise GenerateError(f"--profile needs BATCH,PROMPT, two whole numbers of at least 1, got "
                            f"{','.join(map(str, sizes))}.", "use e.g. --profile 1,512.")
    batch, prompt_len = sizes
    text = profile_decode(bench_setup(settings)["engine"], batch, prompt_len, settings.new_tokens)
    write_text(settings.out + ".profile.txt", f"# {settings.command}\n{text}\n")
    return text
