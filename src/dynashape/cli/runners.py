"""Glue between the CLI and the library for generate: engine or model, device and dtype choice,
streaming output, and the result record the CLI prints (text or JSON).
"""
from __future__ import annotations

import sys
import time

import torch

from ..backends import default_dtype, resolve_device
from ..errors import GenerateError
from ..runtime.generate import GenerateSettings, Limits, generate


def _streamer(args, tokenizer):
    """on_token callback printing each row-0 token as it comes (text when there is a tokenizer)."""
    if not args.stream:
        return None

    first = [True]

    def on_token(step, tokens, active):
        if not bool(active[0]):
            return
        tok = int(tokens[0])
        piece = tokenizer.decode([tok]) if tokenizer is not None else (("" if first[0] else ",") + str(tok))
        first[0] = False
        sys.stdout.write(piece)
        sys.stdout.flush()

    return on_token


def _result(target, runtime, prompts, outputs, seconds, tokenizer) -> dict:
    rows = []
    for p, new in zip(prompts, outputs):
        rows.append({"prompt_ids": p, "new_ids": new,
                     "text": tokenizer.decode(new) if tokenizer is not None else None})
    n = sum(len(o) for o in outputs)
    return {"target": target, "runtime": runtime, "outputs": rows, "new_tokens": n,
            "seconds": round(seconds, 4), "tokens_per_s": round(n / seconds, 2) if seconds > 0 else None}


def generate_with_engine(args, settings: GenerateSettings, prompts_fn) -> dict:
    """No-cache generation through a compiled engine (each step runs the growing sequence)."""
    from ..engine.engine import Engine
    from ..models.load import dtype_name, parse_dtype

    engine = Engine.load(args.target, device=None if args.device in (None, "auto") else args.device)
    if args.dtype is not None and dtype_name(parse_dtype(args.dtype)) != engine.settings.dtype:
        raise GenerateError(f"--dtype {args.dtype} was asked for; engine {args.target} is built for "
                            f"{engine.settings.dtype}.", f"drop --dtype, or rebuild: {engine.rebuild_hint(dtype=args.dtype)}")
    prompts = prompts_fn(args, engine.tokenizer)
    plan = engine.plan
    eos = None if args.ignore_eos else plan.model.get("eos_token_id")
    settings = GenerateSettings(settings.max_new_tokens, settings.sampling, eos)
    sb, ss = plan.serve["batch"], plan.serve["seq"]
    wider_seq = f"{ss.min}:{plan.model['n_positions']}"
    limits = Limits(max_seq=ss.max, max_batch=sb.max, min_batch=sb.min, vocab_size=plan.model["vocab_size"],
                    where=f"the engine (--seq {ss.text()} --batch {sb.text()})",
                    fix=f"rebuild the engine with a longer range: {engine.rebuild_hint(seq=wider_seq)}",
                    batch_fix=f"pass {sb.min} to {sb.max} prompts, or rebuild: "
                              f"{engine.rebuild_hint(batch=f'{sb.min}:{max(sb.max, len(prompts))}')}")
    t0 = time.perf_counter()
    out = generate(lambda ids, mask: engine(ids, mask), prompts, settings, limits, engine.device,
                   on_token=_streamer(args, engine.tokenizer))
    if args.stream:
        print()
    return _result(args.target, f"engine:{engine.backend} (no KV cache)", prompts, out, time.perf_counter() - t0,
                   engine.tokenizer)


def generate_with_model(args, settings: GenerateSettings, prompts_fn) -> dict:
    """Generation straight from a model: the lean KV-cache runtime, or the no-cache loop over HF."""
    from ..models import load_model, parse_dtype

    device = resolve_device(args.device)
    dtype = parse_dtype(args.dtype or default_dtype(device))
    if args.runtime not in ("lean", "nocache"):
        raise GenerateError(f"unknown --runtime {args.runtime!r}.", "use --runtime lean or --runtime nocache.")
    lm = load_model(args.target, dtype=dtype)
    prompts = prompts_fn(args, lm.tokenizer)
    eos = None if args.ignore_eos else lm.config.eos_token_id
    settings = GenerateSettings(settings.max_new_tokens, settings.sampling, eos)
    n_pos = int(lm.config.n_positions)
    limits = Limits(max_seq=n_pos, max_batch=1 << 16, vocab_size=int(lm.config.vocab_size),
                    where=f"{args.target} (n_positions {n_pos})")
    on_token = _streamer(args, lm.tokenizer)
    t0 = time.perf_counter()
    if args.runtime == "lean":
        from ..runtime.fastgen import FastGenerator

        from ..runtime.generate import check_request

        check_request(prompts, settings, limits)
        longest = max(len(p) for p in prompts)
        gen = FastGenerator(lm, device=device, dtype=dtype, max_batch=len(prompts),
                            max_len=longest + settings.max_new_tokens)
        row0 = None if on_token is None else (lambda row, tok: row == 0 and on_token(None, [tok], [True]))
        out = gen.generate(prompts, settings.max_new_tokens, settings.sampling, eos_token_id=eos,
                           ignore_eos=args.ignore_eos, on_token=row0)
        runtime = f"lean KV-cache runtime on {device}"
    else:
        model = lm.model.to(device)

        def forward(ids, mask):
            with torch.no_grad():
                return model(input_ids=ids, attention_mask=mask, use_cache=False).logits

        out = generate(forward, prompts, settings, limits, device, on_token=on_token)
        runtime = f"Hugging Face model on {device} (no KV cache)"
    if args.stream:
        print()
    return _result(args.target, runtime, prompts, out, time.perf_counter() - t0, lm.tokenizer)


def run_bench_command(args) -> int:
    """``dynashape bench``: the generation benchmark, or forward latency per backend (--backends)."""
    from .main import int_list

    argv = " ".join(sys.argv[1:]) or "bench"
    if args.backends:
        from ..bench import backends as bb

        batches = int_list(args.batches, "--batches") or [1]
        s = bb.BackendBenchSettings(model=args.model, backends=tuple(args.backends.split(",")),
                                    device=resolve_device(args.device), dtype=args.dtype or "auto",
                                    batch=batches[0], lengths=tuple(int_list(args.lengths, "--lengths") or ()),
                                    out=args.out, command=f"dynashape {argv}")
        result = bb.run_backend_bench(s)
        bb.write_results(result, s.out + ".json", s.out + ".png")
        print(bb.format_table(result))
        return 0
    from ..bench import generate as bench

    kw = {}
    for key, flag in (("batches", "--batches"), ("prompt_lens", "--prompt-lens")):
        values = int_list(getattr(args, key), flag)
        if values:
            kw[key] = tuple(values)
    if args.new_tokens:
        kw["new_tokens"] = args.new_tokens
    if args.systems:
        kw["systems"] = tuple(args.systems.split(","))
    s = bench.BenchSettings(model=args.model, dtype=args.dtype or "float16", device=args.device or "auto",
                            out=args.out, command=f"dynashape {argv}", **kw)
    result = bench.run_bench(s, on_progress=lambda r: bench.write_results(r, s.out + ".json"))
    bench.write_results(result, s.out + ".json", s.out + ".png")
    print(bench.format_table(result))
    return 0
