"""Process start to first token: what a serving process pays before it can answer.

``python3 bench/load_probe.py ENGINE --prompt-len 512 --out RESULT.json`` starts a fresh Python process
(the parent measures the wall clock from launch), which imports dynashape, loads the engine, captures
its CUDA graphs and generates one token for one prompt of that length; the child reports its own
split: import, load (weights and graphs), ready (cache allocated, graphs captured), first token, and
which Triton cache entries the engine did not carry (``compiled_at_load``: the kernels this process
had to compile). The child starts with an empty Triton cache of its own, as on a fresh machine
(``--keep-cache``: this machine's).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, sys, time
from pathlib import Path
t0 = time.perf_counter()
import torch, dynashape
from dynashape.backends.eager import TRITON_DIR, triton_cache_dir
t_import = time.perf_counter()
engine = dynashape.load(sys.argv[1])
t_load = time.perf_counter()
gen = engine.generator
if engine.device.type == "cuda":
    torch.cuda.synchronize()
t_ready = time.perf_counter()
L = int(sys.argv[2])
out = engine.generate([[(i * 7919) % 50000 for i in range(L)]], 1, ignore_eos=True)
t_first = time.perf_counter()
print("FIRST_TOKEN", flush=True)
carried = Path(sys.argv[1], TRITON_DIR)
carried = {p.name for p in carried.iterdir()} if carried.is_dir() else set()
compiled = sorted({p.name for p in triton_cache_dir().iterdir()} - carried) if triton_cache_dir().is_dir() else []
print(json.dumps({"import_s": t_import - t0, "load_s": t_load - t_import, "load_parts_s": engine.meta.get("load_s"),
                  "ready_s": t_ready - t_load, "first_token_s": t_first - t_ready, "tokens": out[0],
                  "backend": engine.backend, "kernels": engine.plan.runtime.kernels,
                  "triton_cache": str(triton_cache_dir()), "compiled_at_load": compiled}))
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("engine")
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--out", required=True)
    ap.add_argument("--keep-cache", action="store_true",
                    help="use this machine's Triton cache (default: an empty one of the child's own, as on a fresh machine)")
    a = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in ("src", os.environ.get("PYTHONPATH")) if p))
    cache = None if a.keep_cache else tempfile.TemporaryDirectory(prefix="load-probe-triton-")
    if cache is not None:
        env["TRITON_CACHE_DIR"] = cache.name
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, a.engine, str(a.prompt_len)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = None
    lines = []
    for line in proc.stdout:
        if line.startswith("FIRST_TOKEN") and first is None:
            first = time.perf_counter() - t0
        lines.append(line)
    rc = proc.wait()
    if cache is not None:
        cache.cleanup()
    result = {"command": "python3 bench/load_probe.py " + " ".join(sys.argv[1:]), "engine": a.engine,
              "prompt_len": a.prompt_len, "returncode": rc, "start_to_first_token_s": first}
    if rc == 0:
        result.update(json.loads(lines[-1]))
    else:
        result["stderr"] = proc.stderr.read()[-2000:]
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k != "stderr"}))
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
