"""``dynashape generate``: prompts in, tokens out, through an engine or a model compiled in memory."""
from __future__ import annotations

import sys
import time

from ..errors import GenerateError
from .output import Progress, print_json


def _prompts(args, tokenizer) -> list[list[int]]:
    from ..runtime.nocache import parse_prompt_ids

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


def _streamer(args, tokenizer):
    """on_token(row, token) printing row 0's tokens as they come (text when there is a tokenizer)."""
    if not args.stream:
        return None
    first = [True]

    def on_token(row, tok):
        if row != 0:
            return
        piece = tokenizer.decode([tok]) if tokenizer is not None else ("" if first[0] else ",") + str(tok)
        first[0] = False
        sys.stdout.write(piece)
        sys.stdout.flush()
    return on_token


def _from_model(args, progress):
    """A model: compiled in memory into a generation engine sized for this request (``--runtime engine``)."""
    from .. import api
    from ..backends import default_dtype, resolve_device
    from ..models import load_model, parse_dtype

    if args.runtime not in ("engine", "nocache"):
        raise GenerateError(f"unknown --runtime {args.runtime!r}.", "use --runtime engine or --runtime nocache.")
    device = resolve_device(args.device)
    dtype = args.dtype or default_dtype(device)
    with progress(f"load {args.target}"):
        lm = load_model(args.target, dtype=parse_dtype(dtype))
    prompts = _prompts(args, lm.tokenizer)
    if args.runtime == "nocache":
        return lm, prompts, None
    n_pos = int(lm.config.n_positions)
    longest = max(len(p) for p in prompts)
    seq = f"1:{min(n_pos, max(longest + args.max_new_tokens, 2))}"
    engine = api.compile(args.target, seq=seq, batch=f"1:{len(prompts)}", backend=args.backend, device=device,
                         dtype=dtype, progress=progress, loaded=lm)
    return lm, prompts, engine


def run_generate(args) -> int:
    from ..engine.store import is_engine_dir
    from ..runtime.sampling import SamplingSettings

    sampling = SamplingSettings(args.temperature, args.top_k, args.top_p, args.seed)
    progress = Progress(quiet=True)          # stdout carries only the generated text
    if is_engine_dir(args.target):
        from ..engine import Engine

        with progress(f"load {args.target}"):
            engine = Engine.load(args.target, device=args.device if args.device not in (None, "auto") else None)
        if args.dtype is not None and args.dtype != engine.settings.dtype:
            raise GenerateError(f"--dtype {args.dtype} was asked for; engine {args.target} is built for "
                                f"{engine.settings.dtype}.", f"drop --dtype, or rebuild: {engine.rebuild_hint(dtype=args.dtype)}")
        tokenizer, prompts = engine.tokenizer, _prompts(args, engine.tokenizer)
        runtime = f"{engine.backend} engine" + (" (KV cache)" if engine.generates else " (no KV cache)")
    else:
        lm, prompts, engine = _from_model(args, progress)
        tokenizer = lm.tokenizer
        runtime = "Hugging Face model, no KV cache" if engine is None else f"{engine.backend} engine compiled in memory"
    t0 = time.perf_counter()
    with progress("generate"):
        if engine is None:
            out = _nocache(lm, prompts, args, sampling)
        else:
            out = engine.generate(prompts, args.max_new_tokens, sampling, ignore_eos=args.ignore_eos,
                                  on_token=_streamer(args, tokenizer))
    seconds = time.perf_counter() - t0
    if args.stream:
        print()
    rows = [{"prompt_ids": p, "new_ids": new, "text": tokenizer.decode(new) if tokenizer is not None else None}
            for p, new in zip(prompts, out)]
    n = sum(len(o) for o in out)
    if args.json:
        print_json({"target": args.target, "runtime": runtime, "outputs": rows, "new_tokens": n,
                    "seconds": round(seconds, 4), "tokens_per_s": round(n / seconds, 2) if seconds > 0 else None})
        return 0
    for row in rows[1 if args.stream else 0:]:  # streaming already printed row 0
        print(row["text"] if row["text"] is not None else ",".join(map(str, row["new_ids"])))
    return 0


def _nocache(lm, prompts, args, sampling):
    """The reference: the Hugging Face model, rerunning the growing sequence per token."""
    from ..backends import resolve_device
    from ..runtime.checks import check_prompt
    from ..runtime.nocache import generate_loop

    n_pos, vocab = int(lm.config.n_positions), int(lm.config.vocab_size)
    prompts = [check_prompt(p, args.max_new_tokens, i, vocab, n_pos, n_pos, lambda **k: "")
               for i, p in enumerate(prompts)]
    device = resolve_device(args.device)
    model = lm.model.to(device)
    eos = None if args.ignore_eos else lm.config.eos_token_id
    forward = lambda ids, mask: model(input_ids=ids, attention_mask=mask, use_cache=False).logits  # noqa: E731
    return generate_loop(forward, prompts, args.max_new_tokens, sampling, eos, device, _streamer(args, lm.tokenizer))
