"""``dynashape demo``: the whole story on the embedded default, in a few minutes on a CPU.

1. the trap: plain torch.export of GPT-2 with a dynamic length from 1 fails, and why;
2. doctor: the plan dynashape makes for --seq 1:n_positions --batch 1:4 instead;
3. compile: prefill and decode graphs, saved as an engine directory, loaded back in a fresh process;
4. verify: the engine against the eager Hugging Face model: prefill sweep, decode steps, greedy tokens;
5. generate: greedy tokens through the engine's KV-cache loop, checked against Hugging Face ``generate``.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import torch

DEMO_BATCH = "1:4"
PROMPT = [464, 3290, 318]  # GPT-2 ids of "The dog is"


def pick_model(requested: str | None) -> str:
    """gpt2 when it is already in the local Hugging Face cache (no download), else random:gpt2."""
    if requested:
        return requested
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache("gpt2", "config.json"), str):
            return "gpt2"
    except Exception:  # no hub library or no cache: the embedded default
        pass
    return "random:gpt2"


def _step(n: int, title: str) -> float:
    print(f"\n== {n}. {title} " + "=" * max(0, 60 - len(title)), flush=True)
    return time.perf_counter()


def show_trap(lm, n_pos: int) -> None:
    """Plain torch.export with Dim(min=1) and a length-1 example, as most tutorials write it."""
    from torch.export import Dim

    from ..graphs import LogitsOnly
    from ..planning.diagnose import as_export_error

    ids = torch.tensor([[PROMPT[0] % int(lm.config.vocab_size)]])
    seq = Dim("seq", min=1, max=n_pos)
    print(f"plain torch.export: Dim('seq', min=1, max={n_pos}) with a length-1 example ...")
    try:
        torch.export.export(LogitsOnly(lm.model, ["input_ids"]), (ids,), dynamic_shapes=({1: seq},), strict=False)
        print("  export passed on this torch version (the trap is version dependent)")
    except Exception as exc:  # the point of the demo: translate whatever torch raised
        err = as_export_error(exc, input_names=["input_ids"])
        print(f"  torch raised {type(exc).__name__}; dynashape says:\n  {err.one_line()}")


def fresh_process_load(out: Path) -> str:
    """Load the engine in a new Python process and generate 4 tokens: what a serving process pays."""
    code = ("import time; t = time.perf_counter(); import dynashape; e = dynashape.load(%r); "
            "l = time.perf_counter() - t; e.generate([[1, 2, 3]], 4); "
            "print(f'{l:.1f} s to import and load, {time.perf_counter() - t:.1f} s to the first tokens')" % str(out))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else "FAILED: " + (proc.stderr.strip().splitlines() or ["?"])[-1]


def run_demo(args) -> int:
    from .. import api
    from ..models import load_model
    from ..verification import VerifySettings, verify_engine
    from .commands import format_plan
    from .output import Progress

    start = time.perf_counter()
    name = pick_model(args.model)
    lm = load_model(name)
    n_pos = int(lm.config.n_positions)
    seq = f"1:{n_pos}"
    print(f"dynashape demo on {name}: a generation engine for every length 1..{n_pos} and batch 1..4.")
    t = _step(1, "the trap")
    show_trap(lm, n_pos)
    print(f"  ({time.perf_counter() - t:.1f} s)")

    _step(2, f"doctor {name} --seq {seq} --batch {DEMO_BATCH} --backend {args.backend}")
    plan = api.plan(name, seq, DEMO_BATCH, backend=args.backend)
    print(format_plan(plan))

    _step(3, f"compile --backend {args.backend} -o {args.out}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    engine = api.compile(name, seq, DEMO_BATCH, backend=args.backend, out=out, force=out.exists(), progress=Progress(),
                         loaded=lm)
    print(f"a fresh process: {fresh_process_load(out)} (no compiling)")

    t = _step(4, f"verify {args.out}")
    lengths = sorted({n for n in (1, 2, 3, 16, 17, 128, 129, 512, n_pos - 1, n_pos) if 1 <= n <= n_pos})
    report = verify_engine(api.load(out), VerifySettings(lengths=lengths, batches=[1, 2, 4], decode_steps=8),
                           name=str(out))
    worst = max(report.results, key=lambda r: r.max_abs_err)
    counts = ", ".join(f"{c} {sum(r.ok for r in report.of(c))}/{len(report.of(c))}" for c in ("prefill", "decode", "greedy"))
    print(f"{len(report.results) - len(report.failures)}/{len(report.results)} points match the eager model "
          f"({counts}; worst max|err| {worst.max_abs_err:.1e})  ({time.perf_counter() - t:.1f} s)")
    print(f"  (the full sweep: dynashape verify {args.out})")

    prompt = [p % plan.model["vocab_size"] for p in PROMPT]  # a small vocabulary (random:tiny) wraps the ids
    _step(5, f"generate {args.out} --prompt-ids {','.join(map(str, prompt))} --max-new-tokens 20")
    ours = engine.generate([prompt], 20)[0]
    ref = engine.reference_model()
    with torch.no_grad():
        hf = ref.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False,
                          pad_token_id=ref.config.eos_token_id)[0, len(prompt):].tolist()
    text = lm.tokenizer.decode(ours) if lm.tokenizer is not None else ",".join(map(str, ours))
    print(f"engine:        {text}")
    print(f"Hugging Face:  {'identical, token for token' if ours == hf else 'DIFFERENT: ' + str(hf)}")

    ok = report.ok and ours == hf
    print(f"\n{'done' if ok else 'FAILED'} in {time.perf_counter() - start:.0f} s. Next: dynashape doctor MODEL --seq "
          "MIN:MAX; dynashape compile ...; dynashape verify DIR; dynashape generate DIR; dynashape serve DIR.")
    return 0 if ok else 1
