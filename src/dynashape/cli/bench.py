"""``dynashape bench``: the generation benchmark (an engine or a model against Hugging Face), or the
per-backend prefill latency (``--backends``)."""
from __future__ import annotations

from .output import int_list


def run_bench_command(args) -> int:
    argv = " ".join(args.argv) or "bench"
    if args.backends:
        from ..backends import resolve_device
        from ..bench import backends as bb

        batches = int_list(args.batches, "--batches") or [1]
        s = bb.BackendBenchSettings(model=args.target, backends=tuple(args.backends.split(",")),
                                    device=resolve_device(args.device), dtype=args.dtype or "auto",
                                    batch=batches[0], lengths=tuple(int_list(args.lengths, "--lengths") or ()),
                                    out=args.out, command=f"dynashape {argv}")
        result = bb.run_backend_bench(s)
        bb.write_results(result, s.out + ".json", s.out + ".png")
        print(bb.format_table(result))
        return 0
    from ..bench.generate import BenchSettings, run_bench, write_results
    from ..bench.report import format_table

    kw = {}
    for key, flag in (("batches", "--batches"), ("prompt_lens", "--prompt-lens")):
        values = int_list(getattr(args, key), flag)
        if values:
            kw[key] = tuple(values)
    if args.new_tokens is not None:
        kw["new_tokens"] = args.new_tokens
    if args.systems:
        kw["systems"] = tuple(args.systems.split(","))
    s = BenchSettings(target=args.target, dtype=args.dtype or "float16", device=args.device or "auto", out=args.out,
                      command=f"dynashape {argv}", **kw)
    if args.profile:
        from ..bench.report import write_profile

        print(write_profile(s, int_list(args.profile, "--profile")))
        return 0
    result = run_bench(s, on_progress=lambda r: write_results(r, s.out + ".json"))
    write_results(result, s.out + ".json", s.out + ".png")
    print(format_table(result))
    return 0
