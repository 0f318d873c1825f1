"""Command line: parse -> settings -> library call -> print. Nothing else lives here.

Every user mistake ends in one line ``error: <what is wrong>. Fix: <what to do>`` and a non-zero
exit; a traceback is shown only for our own bugs, and only with DYNASHAPE_DEBUG=1.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..errors import EXIT_USAGE, DynashapeError, UsageParser


def _add_plan_args(p: argparse.ArgumentParser, seq_required: bool = True) -> None:
    p.add_argument("model", help="random:<preset> (tiny, distilgpt2, gpt2, gpt2-medium/large/xl), a local "
                   "save_pretrained directory, or a hub id")
    p.add_argument("--seq", required=seq_required,
                   help="positions a sequence may reach (prompt + new tokens), MIN:MAX[:OPT]")
    p.add_argument("--batch", default="1", help="rows served at once, MIN:MAX[:OPT] or N (default 1)")
    p.add_argument("--backend", default="auto", help="auto (eager on cuda, inductor on cpu), eager, inductor, aoti "
                   "(generation engines) or onnx, tensorrt (no-cache forward engines)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--dtype", default="float32", help="float32 (default), float16 or bfloat16")
    p.add_argument("--example-len", type=int, default=None, help="export example length (the planner checks it)")
    p.add_argument("--example-batch", type=int, default=None, help="export example batch size")
    p.add_argument("--attn", default="sdpa", help="Hugging Face attention for forward graphs: sdpa (default) or eager")
    p.add_argument("--kernels", default="auto", help="decode layers: auto, fused (dynashape's Triton kernels) or torch")
    p.add_argument("--no-pdl", dest="pdl", action="store_false", help="fused kernels without programmatic "
                   "dependent launch (on by default where the GPU has it)")
    p.add_argument("--no-fused-prefill", dest="fused_prefill", action="store_false", help="with fused kernels, "
                   "run the prefill as PyTorch ops (the fused prefill is on by default)")
    p.add_argument("--graph-batches", default=None, help="batch sizes captured as CUDA graphs, e.g. 1,8,64")
    p.add_argument("--prefill-bucket", type=int, default=None, help="prompts are padded to a multiple of this")
    p.add_argument("--steps-per-graph", type=int, default=8, help="decode steps per CUDA graph replay")


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", type=int, default=20)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    ap = UsageParser(prog="dynashape", description="Compile GPT-2-family models with dynamic shapes that just work.")
    ap.add_argument("--version", action="store_true", help="print the version and exit")
    sub = ap.add_subparsers(dest="command", parser_class=UsageParser)

    p = sub.add_parser("doctor", help="the plan and every finding, before any compile")
    _add_plan_args(p, seq_required=False)
    p.add_argument("--workload", default=None, metavar="FILE", help="plan from traffic logged by serve "
                   "--log-requests: ranges, prefill bucket and CUDA-graph batch sizes, padding against today's plan")
    p.add_argument("--try", dest="try_export", action="store_true", help="also export the planned graphs, to prove it")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")

    p = sub.add_parser("compile", help="plan, compile and save an engine directory")
    _add_plan_args(p)
    p.add_argument("-o", "--out", required=True, help="engine directory to write")
    p.add_argument("--force", action="store_true", help="replace an existing engine directory")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = sub.add_parser("verify", help="prefill sweep, decode steps and greedy tokens against the eager model")
    p.add_argument("engine", help="engine directory")
    p.add_argument("--lengths", default=None, help="comma-separated lengths (default: the boundary sweep)")
    p.add_argument("--batches", default=None, help="comma-separated batch sizes (default: the boundary sweep)")
    p.add_argument("--decode-steps", type=int, default=24, help="teacher-forced decode steps to the last position")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("generate", help="generate tokens through an engine (or a model, compiled in memory)")
    p.add_argument("target", help="engine directory, or a model (random:gpt2, directory, hub id)")
    p.add_argument("--prompt-ids", action="append", default=None, help="comma-separated token ids; repeat for a batch")
    p.add_argument("--prompt", action="append", default=None, help="text prompt (needs a tokenizer); repeatable")
    _add_sampling_args(p)
    p.add_argument("--ignore-eos", action="store_true", help="do not stop at the end-of-text token")
    p.add_argument("--stream", action="store_true", help="print tokens as they come")
    p.add_argument("--runtime", default="engine", help="for a model: engine (compile in memory, default) or "
                   "nocache (the Hugging Face model, no KV cache: the reference)")
    p.add_argument("--backend", default="eager", help="for a model: the backend to compile in memory with")
    p.add_argument("--device", default=None, help="for a model: cuda when there is a GPU, else cpu")
    p.add_argument("--dtype", default=None, help="for a model: float32 on cpu, float16 on cuda by default")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("demo", help="doctor, compile, verify and generate on the embedded default")
    p.add_argument("--model", default=None, help="default: gpt2 if in the local HF cache, else random:gpt2")
    p.add_argument("--out", default="engines/demo", help="engine directory (replaced)")
    p.add_argument("--backend", default="inductor")

    p = sub.add_parser("bench", help="generation side by side (engine or model vs Hugging Face), or "
                       "--backends a,b forward latency")
    p.add_argument("target", nargs="?", default="random:gpt2", help="engine directory or model")
    p.add_argument("--backends", default=None, help="compare backends' forward latency, e.g. eager,inductor,onnx")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--batches", default=None, help="comma-separated batch sizes")
    p.add_argument("--prompt-lens", default=None, help="comma-separated prompt lengths (generation bench)")
    p.add_argument("--lengths", default=None, help="comma-separated sequence lengths (backend bench)")
    p.add_argument("--new-tokens", type=int, default=None)
    p.add_argument("--systems", default=None, help="generation bench systems: dynashape,hf_eager,hf_static_compile")
    p.add_argument("--profile", default=None, metavar="BATCH,PROMPT", help="instead of the bench: where one "
                   "request of this size spends its time (prefill, then kernels per decode step), to OUT.profile.txt")
    p.add_argument("--out", default="bench/results/bench", help="path prefix for the .json and .png")

    from .serve_args import add_serve_parser
    add_serve_parser(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)       # the command line, for results to name it
    if args.version:
        from .. import __version__

        print(f"dynashape {__version__}")
        return 0
    if not args.command:
        build_parser().print_help()
        return EXIT_USAGE
    from . import commands

    try:
        return int(getattr(commands, f"cmd_{args.command}")(args) or 0)
    except DynashapeError as e:
        print(f"error: {e.one_line()}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # output piped into `head`: stop quietly
        sys.stdout = open(os.devnull, "w")
        return 0
    except KeyboardInterrupt:
        print("error: interrupted. Fix: run the command again; nothing was half-written.", file=sys.stderr)
        return 130
    except Exception as e:  # our bug, not the user's: one line unless debugging
        if os.environ.get("DYNASHAPE_DEBUG"):
            raise
        first = (str(e).strip().splitlines() or [""])[0][:200]
        print(f"error: internal error {type(e).__name__}: {first}. Fix: rerun with DYNASHAPE_DEBUG=1 and "
              "report the traceback.", file=sys.stderr)
        return 3
