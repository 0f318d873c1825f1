"""The CLI's commands: settings from parsed args -> library call -> printed result.

Kept apart from ``main.py`` so that parsing stays thin and the library stays free of printing.
"""
from __future__ import annotations

import shlex
import sys
import time

from ..errors import DynashapeError, PlanError
from ..planning.shapes import ShapePlan
from .output import Progress, int_list, print_json

STATUS_MARK = {"OK": "OK      ", "ADJUSTED": "ADJUSTED", "REFUSED": "REFUSED "}


# ---- planning -------------------------------------------------------------------------------------

def plan_kwargs(args) -> dict:
    from ..backends import resolve_device

    return dict(model=args.model, seq=args.seq, batch=args.batch, device=resolve_device(args.device), dtype=args.dtype,
                backend=args.backend, attn=args.attn, example_len=args.example_len, example_batch=args.example_batch,
                kernels=args.kernels, pdl=args.pdl, fused_prefill=args.fused_prefill,
                prefill_bucket=args.prefill_bucket, steps_per_graph=args.steps_per_graph,
                graph_batches=tuple(int_list(args.graph_batches, "--graph-batches") or ()) or None)


def format_plan(plan: ShapePlan) -> str:
    m, r = plan.model, plan.runtime
    lines = [f"model     {m['name']}  (GPT-2, {m['n_layer']} layers, n_embd {m['n_embd']}, "
             f"n_positions {m['n_positions']}, vocab {m['vocab_size']})",
             f"versions  torch {plan.versions.get('torch')}, transformers {plan.versions.get('transformers')}",
             "", "findings"]
    width = max(len(f.rule) for f in plan.findings)
    for f in plan.findings:
        fix = f"  [fix: {f.fix}]" if f.fix and f.status != "OK" else ""
        lines.append(f"  {STATUS_MARK.get(f.status, f.status)}  {f.rule:<{width}}  {f.message}{fix}")
    lines += ["", f"plan      {r.kind} engine, backend {r.backend}, device {r.device}, dtype {plan.dtype}"]
    for dim in ("batch", "seq"):
        s, g = plan.serve[dim], plan.graph[dim]
        pads = ", ".join(f"{a}->{b}" for a, b in sorted(plan.pad_to.get(dim, {}).items())) or "none"
        graph = f"{g.min}" if g.static else f"{g.min}..{g.max}" + (f" (opt {g.opt})" if g.opt else "")
        lines.append(f"  {dim:<5}  serves {s.min}..{s.max:<6} graph {graph:<20} example {plan.examples[dim]:<5} "
                     f"padded {pads}")
    for name, specs in plan.graphs.items():
        lines.append(f"  graph  {name:<8} " + ", ".join(f"{i.name}({', '.join(i.dims)})" for i in specs))
    if r.kind == "generation":
        graphs = ", ".join(map(str, r.cuda_graph_batches)) or "none (eager steps)"
        lines += [f"  cache  {r.cache_slots} slots x {r.cache_len} positions; prefill bucket {r.prefill_bucket}; "
                  f"decode {r.kernels} layers, {r.attention} attention, prefill {r.prefill} layers, vocab padded to a "
                  f"multiple of {r.vocab_pad}",
                  f"  CUDA graphs for batch {graphs}; {r.steps_per_graph} steps per replay"]
    return "\n".join(lines)


def cmd_doctor(args) -> int:
    from .. import api

    if args.workload:
        return _doctor_workload(args)
    if args.seq is None:
        raise DynashapeError("doctor needs --seq (or --workload FILE to plan from logged traffic).",
                             "add --seq MIN:MAX, e.g. --seq 1:1024.")
    plan = api.plan(**plan_kwargs(args))
    result = _try_export(args, plan) if args.try_export and plan.ok else {}
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
        err = DynashapeError("the export failed: " + result["detail"], result["fix"])
        print(f"error: {err.one_line()}", file=sys.stderr)
        return 1
    if not args.json:
        print(f"\nverdict   serves --seq {plan.serve['seq'].text()} --batch {plan.serve['batch'].text()} "
              "(padding where shown).")
    return 0


def _doctor_workload(args) -> int:
    """doctor --workload: today's plan (the flags given) and one fitted to the logged traffic."""
    from ..backends import resolve_device
    from ..serve.workload import format_report, plan_for_workload

    device = args.device if str(args.device).startswith("cuda") else resolve_device(args.device)  # no GPU needed
    report = plan_for_workload(args.model, args.workload, seq=args.seq, batch=args.batch, device=device,
                               dtype=args.dtype, backend=args.backend)
    if args.json:
        print_json(report)
    else:
        print(format_report(report))
    return 0


def _try_export(args, plan: ShapePlan) -> dict:
    """Export the plan's graphs (the forward graph, or prefill and decode) to prove them."""
    from ..graphs import check_program, export_generation, export_plan, program_sizes
    from ..models import family_for, load_model, parse_dtype

    lm = load_model(args.model, plan.attn_implementation, parse_dtype(plan.dtype))
    t0 = time.perf_counter()
    try:
        if plan.runtime.kind == "generation":
            model = family_for(lm.config.model_type).Model.from_hf(lm.model)
            k, v = model.new_cache(plan.runtime.cache_slots, plan.runtime.cache_len)
            for graph in plan.graphs:
                export_generation(model, plan, graph, k, v)
            return {"ok": True, "seconds": time.perf_counter() - t0, "fix": "",
                    "detail": "prefill and decode exported with " + ", ".join(
                        f"{d} {r.min}..{r.max}" for d, r in plan.graph.items())}
        res = export_plan(lm.model, plan)
    except DynashapeError as e:
        return {"ok": False, "seconds": time.perf_counter() - t0, "detail": e.message, "fix": e.fix}
    except Exception as e:  # torch's own error: translated
        from ..planning.diagnose import as_export_error

        err = as_export_error(e, input_names=[s.name for s in plan.inputs], plan=plan)
        return {"ok": False, "seconds": time.perf_counter() - t0, "detail": err.message, "fix": err.fix}
    bad = [c for c in check_program(res.program, plan) if c.status == "REFUSED"]
    ranges = ", ".join(f"{k} {v[0]}..{v[1]}" if isinstance(v, tuple) else f"{k} {v} (static)"
                       for k, v in program_sizes(res.program, plan).items())
    return {"ok": not bad, "seconds": res.seconds, "fix": bad[0].fix if bad else "",
            "detail": bad[0].message if bad else f"graph ranges {ranges}" + (" (after one retry)" if res.retried else "")}


# ---- compile / verify ------------------------------------------------------------------------------

def cmd_compile(args) -> int:
    from .. import api
    from ..engine import Engine

    progress = Progress(quiet=args.json)
    kw = plan_kwargs(args)
    engine = api.compile(**kw, out=args.out, force=args.force, progress=progress)
    plan, backend, device = engine.plan, engine.backend, engine.settings.device
    del engine                          # the reload below must not hold a second copy of weights and cache
    if not args.json:
        for f in plan.findings:
            if f.status == "ADJUSTED":
                print(f"adjusted  {f.message}")
    t0 = time.perf_counter()
    loaded = Engine.load(args.out)
    reload_s = time.perf_counter() - t0
    result = {"command": "dynashape " + shlex.join(args.argv), "engine": args.out, "backend": backend, "device": device,
              "dtype": plan.dtype,
              "serves": {"seq": plan.serve["seq"].text(), "batch": plan.serve["batch"].text()},
              "graphs": list(plan.graphs), "steps": {w: round(s, 3) for w, s in progress.steps},
              "reload_s": round(reload_s, 3), "load_s": loaded.meta.get("load_s")}
    if args.json:
        print_json(result)
        return 0
    print(f"engine    {args.out}: {plan.runtime.kind} engine ({', '.join(plan.graphs)}), backend {backend}, "
          f"device {device}, dtype {plan.dtype}")
    print(f"serves    --seq {plan.serve['seq'].text()} --batch {plan.serve['batch'].text()}")
    print(f"reload    {reload_s:.2f} s in this process, without compiling (weights "
          f"{loaded.meta['load_s']['weights']:.2f} s, graphs {loaded.meta['load_s']['graphs']:.2f} s)")
    return 0


def cmd_verify(args) -> int:
    from ..engine import Engine
    from ..verification import VerifySettings, verify_engine

    progress = Progress(quiet=args.json)
    with progress(f"load {args.engine}"):
        engine = Engine.load(args.engine)
    settings = VerifySettings(lengths=int_list(args.lengths, "--lengths"), batches=int_list(args.batches, "--batches"),
                              seed=args.seed, decode_steps=args.decode_steps)

    def show(r):
        if not args.json:
            pad = f" (ran as {r.graph_batch}x{r.graph_seq})" if (r.graph_batch, r.graph_seq) != (r.batch, r.seq) else ""
            what = {"prefill": "seq", "decode": "pos", "greedy": "prompt"}[r.check]
            print(f"  {r.check:<7} batch {r.batch:>3} {what:<6} {r.seq:>5}{pad:<20} max|err| {r.max_abs_err:.2e} "
                  f"(tol {r.tol:.0e})  top1 {r.top1:6.1%}  {'ok' if r.ok else 'FAIL'}")

    if not args.json:
        print(f"verify    {args.engine} ({engine.backend}, {engine.settings.dtype}) against the eager HF model")
    with progress("verify"):
        report = verify_engine(engine, settings, on_result=show, name=str(args.engine))
    if args.json:
        print_json(report.to_json())
    else:
        for check in ("prefill", "decode", "greedy"):
            rows = report.of(check)
            if rows:
                print(f"result    {check}: {sum(r.ok for r in rows)}/{len(rows)} ok")
        print(f"          (max|err| <= {report.rtol:g} x max(1, max|logit|), top-1 >= {report.min_top1:.1%}; ties "
              "within that tolerance count as agreeing" + ("; fp32 greedy tokens must equal Hugging Face generate)"
                                                          if report.dtype == "float32" else ")"))
    if not report.ok:
        f = report.failures[0]
        print(f"error: the engine disagrees with the eager model ({f.check}, batch {f.batch}, seq {f.seq}, max|err| "
              f"{f.max_abs_err:.2e}). Fix: rebuild with --backend eager to compare, and report it.", file=sys.stderr)
        return 1
    return 0


# ---- generate / demo / bench / serve ---------------------------------------------------------------

def cmd_generate(args) -> int:
    from .generate import run_generate

    return run_generate(args)


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args)


def cmd_bench(args) -> int:
    from .bench import run_bench_command

    return run_bench_command(args)


def cmd_serve(args) -> int:
    from .serve import run_serve

    return run_serve(args)
