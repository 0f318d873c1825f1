"""``python -m dynashape.bench``: the generation benchmark (the same as ``dynashape bench``), and
``--profile BATCH,PROMPT`` for where one request's decode time goes."""
from __future__ import annotations

import sys

from ..errors import DynashapeError, UsageParser
from .generate import BenchSettings, run_bench, write_results
from .report import format_table, write_profile


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in str(text).split(",") if x.strip())


def main(argv: list[str] | None = None) -> int:
    d = BenchSettings()
    p = UsageParser(prog="python -m dynashape.bench", description="generation benchmark")
    p.add_argument("--target", default=d.target, help="engine directory or model")
    for flag in ("dtype", "device", "backend", "out"):
        p.add_argument(f"--{flag}", default=getattr(d, flag))
    p.add_argument("--batches", type=_ints, default=d.batches)
    p.add_argument("--prompt-lens", type=_ints, default=d.prompt_lens)
    p.add_argument("--new-tokens", type=int, default=d.new_tokens)
    p.add_argument("--systems", type=lambda t: tuple(t.split(",")), default=d.systems)
    p.add_argument("--repeats", type=int, default=d.repeats)
    p.add_argument("--budget-s", type=float, default=d.budget_s)
    p.add_argument("--profile", type=_ints, default=None, metavar="BATCH,PROMPT",
                   help="profile one dynashape request of this size instead of benchmarking (printed, and "
                        "written to OUT.profile.txt)")
    a = p.parse_args(argv)
    text = " ".join(sys.argv[1:] if argv is None else argv)
    try:
        s = BenchSettings(target=a.target, dtype=a.dtype, device=a.device, backend=a.backend, batches=a.batches,
                          prompt_lens=a.prompt_lens, new_tokens=a.new_tokens, systems=a.systems, repeats=a.repeats,
                          budget_s=a.budget_s, out=a.out, command=f"python -m dynashape.bench {text}".strip())
        if a.profile:
            print(write_profile(s, a.profile))
            return 0
        result = run_bench(s, on_progress=lambda r: write_results(r, s.out + ".json"))
    except DynashapeError as e:
        print(f"error: {e.one_line()}", file=sys.stderr)
        return e.exit_code
    write_results(result, s.out + ".json", s.out + ".png")
    print(format_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
