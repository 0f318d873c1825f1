"""``dynashape demo``: the whole story on the embedded default, in a few minutes on a CPU.

1. the trap: plain torch.export of GPT-2 with a dynamic length from 1 fails, and why;
2. doctor: the plan dynashape makes for --seq 1:n_positions --batch 1:4 instead;
3. compile: export + backend, saved as an engine directory;
4. verify: the engine against the eager Hugging Face model over the whole range;
5. generate: greedy tokens through the engine, checked against Hugging Face ``generate``.
"""
from __future__ import annotations

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
    print(f"\n== {n}. {title} " + "=" * max(0, 60 - len(title)))
    return time.perf_counter()


def show_trap(lm, n_pos: int) -> None:
    """Plain torch.export with Dim(min=1) and a length-1 example, as most tutorials write it."""
    from torch.export import Dim

    from ..planning.diagnose import as_export_error
    from ..graphs import LogitsOnly

    ids = torch.tensor([[PROMPT[0] % int(lm.config.vocab_size)]])
    seq = Dim("seq", min=1, max=n_pos)
    print(f"plain torch.export: Dim('seq', min=1, max={n_pos}) with a length-1 example ...")
    try:
        torch.export.export(LogitsOnly(lm.model, ["input_ids"]), (ids,), dynamic_shapes=({1: seq},), strict=False)
        print("  export passed on this torch version (the trap is version dependent)")
    except Exception as exc:  # the point of the demo: translate whatever torch raised
        err = as_export_error(exc, input_names=["input_ids"])
        print(f"  torch raised {type(exc).__name__}; dynashape says:\n  {err.one_line()}")


def run_demo(args) -> int:
    from ..backends import CompileSettings
    from .commands import format_plan
    from ..engine.engine import Engine, build_engine
    from ..runtime.generate import GenerateSettings, Limits, generate
    from ..models import load_model
    from ..planning.rules import PlanSettings, make_plan
    from ..planning.shapes import parse_range
    from ..verify import VerifySettings, verify_engine

    start = time.perf_counter()
    name = pick_model(args.model)
    lm = load_model(name)
    n_pos = int(lm.config.n_positions)
    seq = f"1:{n_pos}"
    print(f"dynashape demo on {name}: compile GPT-2 for every length 1..{n_pos} and batch 1..4.")
    t = _step(1, "the trap")
    show_trap(lm, n_pos)
    print(f"  ({time.perf_counter() - t:.1f} s)")

    t = _step(2, f"doctor {name} --seq {seq} --batch {DEMO_BATCH}")
    plan = make_plan(lm.info(), PlanSettings(seq=parse_range(seq, "seq"), batch=parse_range(DEMO_BATCH, "batch")))
    print(format_plan(plan))

    t = _step(3, f"compile --backend {args.backend} -o {args.out}")
    engine = build_engine(lm, plan, CompileSettings(backend=args.backend), out=args.out)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    engine.save(out, force=out.exists())
    engine = Engine.load(out)
    print(f"export {engine.meta['export_s']:.1f} s, compile {engine.meta['compile_s']:.1f} s, "
          f"saved to {out} and loaded back in {engine.meta['load_s']:.1f} s")

    t = _step(4, f"verify {args.out}")
    lengths = sorted({n for n in (1, 2, 3, 16, 17, 128, 129, 512, n_pos - 1, n_pos) if 1 <= n <= n_pos})
    sizes = VerifySettings(lengths=lengths, batches=[1, 2, 4])
    report = verify_engine(engine, sizes, name=str(out))
    worst = max(report.results, key=lambda r: r.max_abs_err)
    padded = sum((r.graph_batch, r.graph_seq) != (r.batch, r.seq) for r in report.results)
    print(f"{len(report.results) - len(report.failures)}/{len(report.results)} (batch, length) points match the eager "
          f"model (worst max|err| {worst.max_abs_err:.1e} at {worst.batch}x{worst.seq}); {padded} of them were served "
          f"by padding (batch 1 -> 2, length 1 -> 2)  ({time.perf_counter() - t:.1f} s)")
    print(f"  (the full sweep: dynashape verify {args.out})")

    prompt = [t % plan.model["vocab_size"] for t in PROMPT]  # a small vocabulary (random:tiny) wraps the ids
    t = _step(5, f"generate {args.out} --prompt-ids {','.join(map(str, prompt))} --max-new-tokens 20")
    limits = Limits(max_seq=n_pos, max_batch=4, vocab_size=plan.model["vocab_size"])
    ours = generate(lambda i, m: engine(i, m), [prompt], GenerateSettings(20), limits)[0]
    ref = engine.reference_model()
    with torch.no_grad():
        hf = ref.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False,
                          pad_token_id=ref.config.eos_token_id)[0, len(prompt):].tolist()
    text = lm.tokenizer.decode(ours) if lm.tokenizer is not None else ",".join(map(str, ours))
    print(f"engine:        {text}")
    print(f"Hugging Face:  {'identical, token for token' if ours[:len(hf)] == hf else 'DIFFERENT: ' + str(hf)}")

    ok = report.ok and ours[:len(hf)] == hf  # HF stops at EOS; ours runs the full budget
    print(f"\n{'done' if ok else 'FAILED'} in {time.perf_counter() - start:.0f} s. Next: dynashape doctor MODEL --seq "
          "MIN:MAX --try; dynashape compile ...; dynashape verify DIR; dynashape generate DIR.")
    return 0 if ok else 1
