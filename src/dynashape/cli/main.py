"""Command line: parse -> settings dataclass -> library call -> print. Nothing else lives here.

Every user mistake ends in one line ``error: <what is wrong>. Fix: <what to do>`` and a non-zero
exit; a traceback is shown only for our own bugs, and only with DYNASHAPE_DEBUG=1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from ..errors import DynashapeError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (no usage dump) and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse hook
        print(f"error: {message}. Fix: see `{self.prog} --help`.", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _add_plan_args(p: argparse.ArgumentParser, seq_required: bool = True) -> None:
    p.add_argument("model", help="random:<preset> (tiny, distilgpt2, gpt2, gpt2-medium/large/xl), a local "
                   "save_pretrained directory, or a hub id")
    p.add_argument("--seq", required=seq_required, default=None, help="sequence lengths MIN:MAX[:OPT], e.g. 1:1024")
    p.add_argument("--batch", default="1", help="batch sizes MIN:MAX[:OPT] or N (default 1)")
    p.add_argument("--example-len", type=int, default=None, help="export example length (the planner checks it)")
    p.add_argument("--example-batch", type=int, default=None, help="export example batch size")
    p.add_argument("--attn", default="sdpa", help="attention implementation: sdpa (default) or eager")
    p.add_argument("--dtype", default="float32", help="float32 (default), float16 or bfloat16")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="dynashape", description="Compile GPT-2-family models with dynamic shapes that just work.")
    ap.add_argument("--version", action="store_true", help="print the version and exit")
    sub = ap.add_subparsers(dest="command", parser_class=_Parser)

    p = sub.add_parser("doctor", help="the plan and every finding, before any compile")
    _add_plan_args(p)
    p.add_argument("--try", dest="try_export", action="store_true", help="also export, to prove the plan")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")

    p = sub.add_parser("compile", help="plan, export and compile an engine directory")
    _add_plan_args(p)
    p.add_argument("--backend", default="inductor", help="eager, inductor (default), aoti, onnx, tensorrt")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("-o", "--out", required=True, help="engine directory to write")
    p.add_argument("--force", action="store_true", help="replace an existing engine directory")

    p = sub.add_parser("verify", help="sweep lengths and batch sizes against the eager model")
    p.add_argument("engine", help="engine directory")
    p.add_argument("--lengths", default=None, help="comma-separated lengths (default: the boundary sweep)")
    p.add_argument("--batches", default=None, help="comma-separated batch sizes (default: the boundary sweep)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("generate", help="generate tokens through an engine or a model")
    p.add_argument("target", help="engine directory, or a model (random:gpt2, directory, hub id)")
    p.add_argument("--prompt-ids", action="append", default=None, help="comma-separated token ids; repeat for a batch")
    p.add_argument("--prompt", action="append", default=None, help="text prompt (needs a tokenizer); repeatable")
    p.add_argument("--max-new-tokens", type=int, default=20)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ignore-eos", action="store_true", help="do not stop at the end-of-text token")
    p.add_argument("--stream", action="store_true", help="print tokens as they come")
    p.add_argument("--runtime", default="lean", help="for a model: lean (static KV cache, default) or nocache")
    p.add_argument("--device", default=None, help="cuda when there is a GPU, else cpu")
    p.add_argument("--dtype", default=None, help="float32 on cpu, float16 on cuda by default")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("demo", help="doctor, compile, verify and generate on the embedded default")
    p.add_argument("--model", default=None, help="default: gpt2 if in the local HF cache, else random:gpt2")
    p.add_argument("--out", default="engines/demo", help="engine directory (replaced)")
    p.add_argument("--backend", default="inductor")

    p = sub.add_parser("bench", help="benchmarks: generation (default) or --backends a,b,c forward latency")
    p.add_argument("model", nargs="?", default="random:gpt2")
    p.add_argument("--backends", default=None, help="compare backends' forward latency, e.g. eager,inductor,aoti,onnx")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--batches", default=None, help="comma-separated batch sizes")
    p.add_argument("--prompt-lens", default=None, help="comma-separated prompt lengths (generation bench)")
    p.add_argument("--lengths", default=None, help="comma-separated sequence lengths (backend bench)")
    p.add_argument("--new-tokens", type=int, default=None)
    p.add_argument("--systems", default=None, help="generation bench systems: hf_eager,hf_static_compile,dynashape")
    p.add_argument("--out", default="bench/results/bench", help="path prefix for the .json and .png")
    return ap


def int_list(text: str | None, flag: str) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise DynashapeError(f"{flag} {text!r} is not a comma-separated list of whole numbers.",
                             f"write e.g. {flag} 1,2,64.") from None
    if not values:
        raise DynashapeError(f"{flag} is empty.", f"write e.g. {flag} 1,2,64.")
    return values


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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


def print_json(data) -> None:
    print(json.dumps(data, indent=2))
