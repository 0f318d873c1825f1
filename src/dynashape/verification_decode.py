"""verify's generation checks: teacher-forced decode steps to the last cache position, and greedy
tokens against Hugging Face (see ``verify.py`` for the whole story)."""
from __future__ import annotations

import time

import torch

from .runtime.state import right_pad
from .verification import SizeResult, compare


def _decode_rows(engine, steps: int) -> list[int]:
    """Prompt lengths at the range's boundaries; the longest ends its steps on the last cache position."""
    ss = engine.plan.serve["seq"]
    longest = max(ss.min, ss.max - steps)
    rows = [longest, ss.min, min(ss.min + 1, longest), min(7, longest), max(ss.min, longest // 2)]
    return list(dict.fromkeys(rows))


def check_decode(engine, ref, settings, gen: torch.Generator, rtol: float, min_top1: float) -> list[SizeResult]:
    """Prefill rows of boundary lengths together, then feed the reference's tokens step by step."""
    ss, vocab = engine.plan.serve["seq"], engine.plan.model["vocab_size"]
    steps = max(1, min(settings.decode_steps, ss.max - ss.min))
    lengths = _decode_rows(engine, steps)
    out, batch = [], engine.generator.max_batch
    for start in range(0, len(lengths), batch):
        group = lengths[start:start + batch]
        seqs = [torch.randint(0, vocab, (n + steps,), generator=gen).tolist() for n in group]
        ids, mask, _ = right_pad(seqs)
        with torch.no_grad():
            want = ref(input_ids=ids.to(engine.device), attention_mask=mask.to(engine.device), use_cache=False).logits
            engine.generator.prefill_logits([s[:n] for s, n in zip(seqs, group)])
            pos = torch.tensor(group)
            B = len(group)
            for _ in range(steps):
                t0 = time.perf_counter()
                got = engine.generator.decode_logits(ids[torch.arange(B), pos], pos)
                sizes = (B, int(pos.max()), engine.plan.graph_size("batch", B), int(pos.max()))
                out.append(compare("decode", got, want[torch.arange(B), pos], rtol, min_top1,
                                   time.perf_counter() - t0, sizes))
                pos = pos + 1
    return out


def check_greedy(engine, ref, settings, gen: torch.Generator, rtol: float, min_top1: float) -> list[SizeResult]:
    """Greedy tokens through ``engine.generate`` (the captured graphs) against the reference."""
    ss, vocab = engine.plan.serve["seq"], engine.plan.model["vocab_size"]
    n = max(1, min(settings.greedy_tokens, ss.max - ss.min))
    lengths = list(dict.fromkeys([ss.min, min(ss.max - n, max(ss.min, 13)), max(ss.min, ss.max - n)]))
    prompts = [torch.randint(0, vocab, (L,), generator=gen).tolist() for L in lengths]
    rows = min(len(prompts), engine.generator.max_batch)
    out = []
    for start in range(0, len(prompts), rows):
        group = prompts[start:start + rows]
        t0 = time.perf_counter()
        ours = engine.generate(group, n, ignore_eos=True)
        seconds = time.perf_counter() - t0
        for p, toks in zip(group, ours):
            out.append(_greedy_result(engine, ref, p, toks, rtol, min_top1, seconds))
    return out


def _greedy_result(engine, ref, prompt, toks, rtol, min_top1, seconds) -> SizeResult:
    dev = engine.device
    with torch.no_grad():
        full = torch.tensor([prompt + toks], device=dev)
        logits = ref(input_ids=full, use_cache=False).logits[0, len(prompt) - 1:-1].float().cpu()   # (n, V)
    chosen = torch.tensor(toks)
    tol = rtol * max(1.0, logits.abs().max().item())
    near = (logits.gather(-1, chosen[:, None])[:, 0] >= logits.max(-1).values - tol).float().mean().item()
    if engine.settings.dtype == "float32":    # fp32: exactly Hugging Face's greedy tokens
        ids = torch.tensor([prompt], device=dev)
        with torch.no_grad():
            hf = ref.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=len(toks),
                              min_new_tokens=len(toks), do_sample=False, eos_token_id=None,
                              pad_token_id=0)[0, len(prompt):].tolist()
        same = sum(a == b for a, b in zip(toks, hf)) / len(toks)
        ok = toks == hf
    else:
        same = (logits.argmax(-1) == chosen).float().mean().item()
        ok = near >= min_top1
    return SizeResult("greedy", 1, len(prompt), 1, len(prompt), 0.0, tol, same, near, bool(ok), seconds)
