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


def profile_decode(engine, batch: int, prompt_len: int, new_tokens: int, seed: int = 0) -> str:
    """Where one warmed-up request's time goes: kernels per token, kernel time vs wall, top kernels."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, engine.plan.model["vocab_size"] - 1, (batch, prompt_len), generator=g).tolist()
    for _ in range(2):
        engine.generate(ids, new_tokens, ignore_eos=True)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if engine.device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        engine.generate(ids, new_tokens, ignore_eos=True)
    t = engine.generator.last_timing
    kernels = [e for e in prof.events() if e.device_type.name == "CUDA"]
    busy_ms = sum(e.time_range.elapsed_us() for e in kernels) / 1e3
    classes: dict[str, float] = {}
    for e in kernels:
        name = e.name.split("(")[0]
        key = next((k for k in ("qkv_to_cache", "ln_linear", "linear_residual", "attention", "combine", "embed",
                                "gemm", "gemv", "sort", "softmax", "argmax", "index", "copy") if k in name.lower()), "other")
        classes[key] = classes.get(key, 0.0) + e.time_range.elapsed_us() / 1e3
    lines = [f"profile batch {batch} prompt {prompt_len} new {new_tokens}: ttft {t.ttft_ms:.3f} ms, tpot median "
             f"{statistics.median(t.step_ms):.4f} ms, total {t.total_ms:.2f} ms",
             f"  device kernels {len(kernels)} = {len(kernels) / new_tokens:.1f} per token; kernel time {busy_ms:.2f} ms "
             f"= {busy_ms / max(t.total_ms, 1e-9):.0%} of the request's device time",
             "  time per kernel class (ms, whole request): " + ", ".join(
                 f"{k} {v:.2f}" for k, v in sorted(classes.items(), key=lambda kv: -kv[1]))]
    try:
        lines.append(prof.key_averages().table(sort_by="self_device_time_total", row_limit=14, max_name_column_width=70))
    except Exception as e:  # the profiler's table keys moved between torch versions
        lines.append(f"  (no kernel table: {e})")
    return "\n".join(lines)
