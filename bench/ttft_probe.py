"""Where the time to first token goes: host work before the prefill graph launch, the graph, the rest.

``PYTHONPATH=src python3 bench/ttft_probe.py ENGINE --prompt-lens 7,512 --out RESULT.json`` (GPU).
For each prompt length: ``generate(prompt, 2)`` repeated; per call the generator's TTFT (device
marks: request start -> first token), the host time from the call to the prefill graph's launch and
to its return, then the prefill graph replayed alone (CUDA events): TTFT minus the graph is overhead.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

sys.path.insert(0, "src")
sys.path.insert(0, "bench")
import dynashape  # noqa: E402
from decode_ab import median_ms  # noqa: E402
from dynashape.runtime.graphs import GraphSet  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("engine")
    ap.add_argument("--prompt-lens", default="7,512")
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    engine = dynashape.load(a.engine)
    marks: dict[str, float] = {}
    prefill = GraphSet.prefill

    def timed_prefill(self, reqs, T):
        marks["enter"] = time.perf_counter()
        out = prefill(self, reqs, T)
        marks["launched"] = time.perf_counter()
        return out
    GraphSet.prefill = timed_prefill
    res = {"command": "PYTHONPATH=src python3 bench/ttft_probe.py " + " ".join(sys.argv[1:]),
           "gpu": torch.cuda.get_device_name(), "plan_runtime": engine.plan.runtime.__dict__ if hasattr(
               engine.plan.runtime, "__dict__") else str(engine.plan.runtime), "cases": []}
    g = torch.Generator().manual_seed(0)
    for L in (int(x) for x in a.prompt_lens.split(",")):
        prompt = torch.randint(0, 50000, (L,), generator=g).tolist()
        rows = []
        for _ in range(a.calls):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            engine.generate([prompt], 2, ignore_eos=True)
            t = engine.generator.last_timing
            rows.append((t.ttft_ms, (marks["enter"] - t0) * 1e3, (marks["launched"] - t0) * 1e3))
        graphs = engine.generator.graphs
        entry = next(e for key, e in graphs.entries.items() if key[0] == "prefill" and key[2] == graphs.prefill_len(L))
        med = lambda i: round(statistics.median(r[i] for r in rows), 4)  # noqa: E731
        case = dict(prompt_len=L, padded_to=graphs.prefill_len(L), ttft_ms=med(0), host_to_prefill_ms=med(1),
                    host_to_launched_ms=med(2), prefill_graph_ms=round(median_ms(entry.run, 20), 4))
        print(case, flush=True)
        res["cases"].append(case)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1, default=str)


if __name__ == "__main__":
    main()
