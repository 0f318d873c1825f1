"""The CLI's commands: settings from parsed args -> library call -> printed result.

Kept apart from cli.py so that parsing stays thin and the library stays free of printing.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from .main import int_list, print_json
from ..errors import DynashapeError, GenerateError, PlanError
from ..planning.shapes import ShapePlan, parse_range

STATUS_MARK = {"OK": "OK      ", "ADJUSTED": "ADJUSTED", "REFUSED": "REFUSED "}


# ---- planning -------------------------------------------------------------------------------------

def plan_from_args(args, info: dict | None = None) -> tuple[ShapePlan, dict]:
    from ..models import load_info, parse_dtype
    from ..models.load import dtype_name
    from ..planning.rules import PlanSettings, make_plan

    seq, batch = parse_range(args.seq, "seq"), parse_range(args.batch, "batch")
    dtype = dtype_name(parse_dtype(args.dtype))
    if args.attn not in ("sdpa", "eager"):
        raise PlanError(f"unknown attention implementation {args.attn!r}.", "use --attn sdpa or --attn eager.")
    info = info or load_info(args.model, args.attn)
    settings = PlanSettings(seq=seq, batch=batch, example_len=args.example_len,
                            example_batch=args.example_batch, attn=args.attn, dtype=dtype)
    return make_plan(info, settings), info


def format_plan(plan: ShapePlan) -> str:
    m = plan.model
    lines = [f"model     {m['name']}  (GPT-2, {m['n_layer']} layers, n_embd {m['n_embd']}, "
             f"n_positions {m['n_positions']}, vocab {m['vocab_size']})",
             f"versions  torch {plan.versions.get('torch')}, transformers {plan.versions.get('transformers')}",
             "", "findings"]
    width = max(len(f.rule) for f in plan.findings)
    for f in plan.findings:
        fix = f"  [fix: {f.fix}]" if f.fix and f.status != "OK" else ""
        lines.append(f"  {STATUS_MARK.get(f.status, f.status)}  {f.rule:<{width}}  {f.message}{fix}")
    lines += ["", "plan"]
    for dim in ("batch", "seq"):
        s, g = plan.serve[dim], plan.graph[dim]
        pads = ", ".join(f"{a}->{b}" for a, b in sorted(plan.pad_to.get(dim, {}).items())) or "none"
        graph = f"{g.min}" if g.static else f"{g.min}..{g.max}" + (f" (opt {g.opt})" if g.opt else "")
        lines.append(f"  {dim:<5}  serves {s.min}..{s.max:<6} graph {graph:<20} example {plan.examples[dim]:<5} "
                     f"padded {pads}")
    ins = ", ".join(f"{i.name}({', '.join(i.dims)})" for i in plan.inputs)
    lines.append(f"  inputs {ins}; use_cache=False; attention {plan.attn_implementation}; dtype {plan.dtype}")
    return "\n".join(lines)


def cmd_doctor(args) -> int:
    plan, _ = plan_from_args(args)
    result = {}
    if args.try_export and plan.ok:
        result = _try_export(args, plan)
    if args.json:
        print_json(dict(plan.to_json(), **({"try": result} if result else {})))
    else:
        print(format_plan(plan))
        if result:
            print(f"\nexport    {'OK' if result['ok'] else 'FAILED'} in {result['seconds']:.1f} s: {result['detail']}")
    if not plan.ok:
        r = plan.refused[0]
        print(f"error: {PlanError(f'cannot serve this request: {r.message}', r.fix).one_line()}", file=sys.stderr)
        return 1
    if result and not result["ok"]:
        err = DynashapeError(f"the export failed: {result['detail']}", result["fix"])
        print(f"error: {err.one_line()}", file=sys.stderr)
        return 1
    if not args.json:
        print(f"\nverdict   serves --seq {plan.serve['seq'].text()} --batch {plan.serve['batch'].text()} "
              "(padding where shown).")
    return 0


def _try_export(args, plan: ShapePlan) -> dict:
    from ..graphs import check_program, export_plan, program_sizes
    from ..models import load_model, parse_dtype

    lm = load_model(args.model, plan.attn_implementation, parse_dtype(args.dtype))
    t0 = time.perf_counter()
    try:
        res = export_plan(lm.model, plan)
    except DynashapeError as e:
        return {"ok": False, "seconds": time.perf_counter() - t0, "detail": e.message, "fix": e.fix}
    checks = check_program(res.program, plan)
    bad = [c for c in checks if c.status == "REFUSED"]
    ranges = ", ".join(f"{k} {v[0]}..{v[1]}" if isinstance(v, tuple) else f"{k} {v} (static)"
                       for k, v in program_sizes(res.program, plan).items())
    return {"ok": not bad, "seconds": res.seconds, "fix": bad[0].fix if bad else "",
            "detail": bad[0].message if bad else f"graph ranges {ranges}" + (" (after one retry)" if res.retried else "")}


def _require_ok(plan: ShapePlan) -> None:
    if not plan.ok:
        r = plan.refused[0]
        raise PlanError(r.message, r.fix)


# ---- compile / verify ------------------------------------------------------------------------------

def cmd_compile(args) -> int:
    from ..backends import CompileSettings, get_backend, resolve_device
    from ..engine.engine import build_engine, check_target
    from ..models import load_model, parse_dtype

    plan, _ = plan_from_args(args)
    _require_ok(plan)
    settings = CompileSettings(backend=args.backend, device=resolve_device(args.device), dtype=plan.dtype)
    get_backend(settings.backend)            # unknown backend: fail before loading anything
    check_target(Path(args.out), args.force)  # existing output: fail before the expensive work
    for f in plan.findings:
        if f.status == "ADJUSTED":
            print(f"adjusted  {f.message}")
    lm = load_model(args.model, plan.attn_implementation, parse_dtype(plan.dtype))
    before = len(plan.findings)
    engine = build_engine(lm, plan, settings, out=args.out)
    for f in plan.findings[before:]:  # e.g. an export retried with run-time asserts
        print(f"{f.status.lower():<9} {f.message}")
    engine.save(args.out, force=args.force)
    print(f"engine    {args.out}  backend {settings.backend}, device {settings.device}, dtype {plan.dtype}; "
          f"export {engine.meta['export_s']:.1f} s, compile {engine.meta['compile_s']:.1f} s")
    print(f"serves    --seq {plan.serve['seq'].text()} --batch {plan.serve['batch'].text()}")
    if settings.backend in ("aoti", "onnx"):  # deployable: loading must not compile again
        from ..engine.engine import Engine

        t0 = time.perf_counter()
        loaded = Engine.load(args.out)
        print(f"reload    {time.perf_counter() - t0:.2f} s for the whole engine directory, {loaded.meta['load_s']:.3f} s "
              f"of it the {settings.backend} artifact, without compiling (compile took {engine.meta['compile_s']:.1f} s)")
    return 0


def cmd_verify(args) -> int:
    from ..engine.engine import Engine
    from ..verify import VerifySettings, verify_engine

    engine = Engine.load(args.engine)
    settings = VerifySettings(lengths=int_list(args.lengths, "--lengths"),
                              batches=int_list(args.batches, "--batches"), seed=args.seed)

    def show(r):
        if not args.json:
            pad = f" (ran as {r.graph_batch}x{r.graph_seq})" if (r.graph_batch, r.graph_seq) != (r.batch, r.seq) else ""
            print(f"  batch {r.batch:>3} seq {r.seq:>5}{pad:<22} max|err| {r.max_abs_err:.2e} (tol {r.tol:.0e})  "
                  f"top1 {r.top1:6.1%}  {'ok' if r.ok else 'FAIL'}")

    if not args.json:
        print(f"verify    {args.engine} ({engine.backend}, {engine.settings.dtype}) against the eager HF model")
    report = verify_engine(engine, settings, on_result=show, name=str(args.engine))
    if args.json:
        print_json(report.to_json())
    else:
        print(f"result    {len(report.results) - len(report.failures)}/{len(report.results)} sizes within "
              f"max|err| <= {report.rtol:g} x max(1, max|logit|) and top-1 >= {report.min_top1:.1%} "
              "(ties within that tolerance count as agreeing)")
    if not report.ok:
        f = report.failures[0]
        print(f"error: engine disagrees with the eager model at batch {f.batch}, seq {f.seq} "
              f"(max|err| {f.max_abs_err:.2e}). Fix: rebuild with --backend eager to compare, and report it.",
              file=sys.stderr)
        return 1
    return 0


# ---- generate ------------------------------------------------------------------------------------

def _prompts(args, tokenizer) -> list[list[int]]:
    from ..runtime.generate import parse_prompt_ids

    if args.prompt_ids and args.prompt:
        raise GenerateError("both --prompt and --prompt-ids were given.", "pass one of them.")
    if args.prompt_ids:
        return [parse_prompt_ids(p) for p in args.prompt_ids]
    if args.prompt:
        if tokenizer is None:
            raise GenerateError("--prompt needs a tokenizer, and this model has none.",
                                "pass token ids with --prompt-ids 464,3290,318.")
        return [tokenizer.encode(p) for p in args.prompt]
    raise GenerateError("no prompt given.", "pass --prompt-ids 464,3290,318 (or --prompt TEXT with a tokenizer).")


def cmd_generate(args) -> int:
    from ..runtime.generate import GenerateSettings
    from ..runtime.sampling import SamplingSettings

    sampling = SamplingSettings(args.temperature, args.top_k, args.top_p, args.seed)
    settings = GenerateSettings(args.max_new_tokens, sampling)
    if (Path(args.target) / "engine.json").exists() or (Path(args.target).is_dir()
                                                         and not (Path(args.target) / "config.json").exists()):
        from .runners import generate_with_engine

        result = generate_with_engine(args, settings, _prompts)
    else:
        from .runners import generate_with_model

        result = generate_with_model(args, settings, _prompts)
    if args.json:
        print_json(result)
    else:  # streaming already printed row 0
        for row in result["outputs"][1 if args.stream else 0:]:
            print(row["text"] if row.get("text") is not None else ",".join(map(str, row["new_ids"])))
    return 0


# ---- demo / bench ---------------------------------------------------------------------------------

def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args)


def cmd_bench(args) -> int:
    from .runners import run_bench_command

    return run_bench_command(args)
