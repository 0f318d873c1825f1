"""A/B of runtime options in one process (gpt2 fp16): FastGenerator variants side by side.

    PYTHONPATH=src python3 bench/ab_decode.py --out OUT/h200_decode_ab2_gpt2_fp16.json \
        --variants old,pad64,pad64_linear --b1-only pad64_linear [--wait-for FILE]

Variants (``VARIANTS``): ``kernel``/``matmul`` (decode attention, other options at their defaults),
``old`` (unpadded vocab, matmul projections), ``pad64`` (lm_head padded to 64 rows), ``pad64_linear``
(and the 4 projections through cuBLAS ``F.linear``).

1. Checks the attention op on the GPU against the matmul math on fresh random inputs (fp32, fp16).
2. Builds one FastGenerator per variant and checks its logits against the HF model in fp32 (same
   weights) on random prompts, then warms every size (compile + graph capture), then (after FILE
   exists, so a concurrent test run does not disturb the timing) times each size: one warm call,
   then ``--repeats`` timed calls, medians. Prints a table, the greedy tokens' agreement with the
   first variant, and writes JSON with the machine facts and each record's options.
"""
import argparse
import copy
import json
import os
import statistics
import sys
import time

import torch

from dynashape.bench.generate import BenchSettings, Measure, _prompts, machine_facts, measure_config
from dynashape.runtime.fastgen import FastGenerator, weight_bytes
from dynashape.models import load_model
from dynashape.models.gpt2 import decode_attention, decode_attention_op

SIZES = [(1, 512), (8, 512), (64, 512), (64, 7)]
VARIANTS = {
    "kernel": dict(attention="kernel"),
    "matmul": dict(attention="matmul"),
    "old": dict(attention="kernel", vocab_pad=1, projections="mm"),
    "pad64": dict(attention="kernel", vocab_pad=64, projections="mm"),
    "pad64_linear": dict(attention="kernel", vocab_pad=64, projections="linear"),
}


def check_kernel() -> list[str]:
    lines = []
    for dtype, tol in ((torch.float32, 1e-5), (torch.float16, 2e-3)):
        for B, H, D, L, S in ((1, 12, 64, 1025, 640), (8, 12, 64, 1025, 640), (64, 12, 64, 641, 640),
                              (5, 4, 16, 201, 64), (3, 12, 64, 300, 256)):
            g = torch.Generator(device="cuda").manual_seed(B * 1000 + S)
            k = torch.randn(B + 1, H, L, D, device="cuda", generator=g).to(dtype)
            v_t = torch.randn(B + 1, H, D, L, device="cuda", generator=g).to(dtype)
            q = torch.randn(B, 3 * H, D, device="cuda", generator=g).to(dtype)[:, H:2 * H]   # strided view
            lengths = torch.randint(1, S + 1, (B,), device="cuda", generator=g)
            lengths[0] = S
            mask = torch.arange(S, device="cuda")[None, :] < lengths[:, None]
            ref = decode_attention(q.double()[:, :, None], k[:B, :, :S].double(), v_t[:B, :, :, :S].double(),
                                   mask[:, None, None], 0.125)[:, :, 0]
            torch.cuda.synchronize()
            out = decode_attention_op(q, k, v_t, lengths, S, 0.125)
            err = ((out.double() - ref).norm() / ref.norm()).item()
            ok = bool(torch.isfinite(out).all()) and err < tol
            lines.append(f"kernel check {str(dtype):14s} B={B:2d} H={H} D={D} S={S}: rel err {err:.2e} "
                         f"{'ok' if ok else 'FAIL'}")
    return lines


@torch.no_grad()
def check_logits(fg, ref_model, vocab: int) -> str:
    """fp16 logits of the variant's model vs the HF model in fp32 (same weights), fresh random prompts."""
    g = torch.Generator().manual_seed(11)
    ids = torch.randint(0, vocab, (4, 48), generator=g).cuda()
    ref = ref_model(ids).logits.double()
    out = fg.model(ids)
    err = ((out.double() - ref).norm() / ref.norm()).item()
    top1 = (out.argmax(-1) == ref.argmax(-1)).float().mean().item()
    ok = out.shape == ref.shape and bool(torch.isfinite(out).all()) and err < 5e-3
    return f"logits vs HF fp32: shape {tuple(out.shape)}, rel err {err:.2e}, top-1 equal {top1:.2%} {'ok' if ok else 'FAIL'}"


class Runner:
    def __init__(self, lm, options: dict, max_batch: int, max_len: int):
        self.fg = FastGenerator(lm, device="cuda", dtype="float16", max_batch=max_batch, max_len=max_len,
                                **options)
        self.last = []

    def __call__(self, ids, new_tokens):
        self.last = self.fg.generate(ids.tolist(), new_tokens, ignore_eos=True)
        t = self.fg.last_timing
        return Measure(t.ttft_ms, t.step_ms, t.total_ms, made=len(self.last[0]))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--wait-for", default=None)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--variants", default="old,pad64,pad64_linear")
    ap.add_argument("--b1-only", default="", help="variants timed at batch 1 only (saves their batch>1 compile)")
    a = ap.parse_args()
    for name in ("cache_size_limit", "recompile_limit"):     # several models share the compiled code objects
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 64)
    b1_only = set(filter(None, a.b1_only.split(",")))
    checks = []
    say = lambda line: (checks.append(line), print(line, flush=True))  # noqa: E731
    try:
        for line in check_kernel():
            say(line)
    except Exception as e:                                   # keep going: the timing rows still come back
        say(f"kernel check FAILED: {type(e).__name__}: {str(e)[-2000:]}")
    settings = BenchSettings(new_tokens=128, repeats=a.repeats)
    lm = load_model("random:gpt2", dtype=torch.float16)
    cfg, dev = lm.config, torch.device("cuda")
    ref32 = copy.deepcopy(lm.model).float().cuda().eval()
    runners, first_s = {}, {}
    for v in a.variants.split(","):
        try:
            r = Runner(lm, VARIANTS[v], 64, 512 + 128)
            try:
                say(f"check {v}: {check_logits(r.fg, ref32, cfg.vocab_size)}")
            except Exception as e:                           # say so, still time the variant
                say(f"check {v} FAILED: {type(e).__name__}: {str(e)[-1000:]}")
            for B, L in SIZES:                               # compile, autotune, capture every graph
                if v in b1_only and B != 1:
                    continue
                t0 = time.perf_counter()
                r(_prompts(settings, cfg.vocab_size, B, L), settings.new_tokens)
                torch.cuda.synchronize()
                first_s[(v, B, L)] = time.perf_counter() - t0
                print(f"warm {v} B={B} L={L}: first call {first_s[(v, B, L)]:.1f} s", flush=True)
            runners[v] = r
        except Exception as e:
            print(f"variant {v} FAILED: {type(e).__name__}: {str(e)[-3000:]}", flush=True)
    t0 = time.time()
    while a.wait_for and not os.path.exists(a.wait_for) and time.time() - t0 < 240:
        time.sleep(1)
    facts = machine_facts(dev, torch.float16)
    wb = weight_bytes(next(iter(runners.values())).fg.model)
    runs, tokens = [], {}
    for (B, L) in SIZES:
        ids = _prompts(settings, cfg.vocab_size, B, L)
        for v, r in runners.items():
            if (v, B, L) not in first_s:
                continue
            rec = measure_config(r, ids, settings, dev, wb, cfg, 2)
            rec.update(system=f"dynashape_{v}", first_call_s=round(first_s[(v, B, L)], 2), options=r.fg.options())
            runs.append(rec)
            tokens[(v, B, L)] = r.last
    print(f"\n{'variant':13s} {'batch':>5s} {'prompt':>6s} {'tpot_ms':>8s} {'p90':>7s} {'ttft_ms':>8s} "
          f"{'tok/s':>9s} {'GB/s':>7s} {'first_s':>7s}")
    for r in runs:
        print(f"{r['system'][10:]:13s} {r['batch']:5d} {r['prompt_len']:6d} {r['tpot_ms_median']:8.4f} "
              f"{r['tpot_ms_p90']:7.4f} {r['ttft_ms']:8.3f} {r['decode_tokens_per_s']:9.0f} {r['gbps']:7.0f} "
              f"{r['first_call_s']:7.1f}")
    names = list(runners)
    for v in names[1:]:
        for (B, L) in SIZES:
            if (v, B, L) not in tokens or (names[0], B, L) not in tokens:
                continue
            a_, b_ = tokens[(names[0], B, L)], tokens[(v, B, L)]
            same = sum(x == y for ra, rb in zip(a_, b_) for x, y in zip(ra, rb)) / sum(map(len, a_))
            say(f"tokens equal {names[0]} vs {v} B={B} L={L}: {same:.2%} (fp16 ties may flip a row's suffix)")
    result = {**facts, "command": "PYTHONPATH=src python3 bench/ab_decode.py " + " ".join(sys.argv[1:]),
              "model": "random:gpt2", "new_tokens": 128, "repeats": a.repeats, "weight_bytes": wb, "checks": checks, "runs": runs}
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
