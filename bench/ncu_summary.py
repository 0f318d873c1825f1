"""Summarise ncu --csv output of bench/ncu_step.py: per kernel (name, grid, block) the count and each
metric's mean per launch, slowest total first.

``python3 bench/ncu_summary.py STEP.csv OUT.json --command "the ncu command that wrote STEP.csv"``;
``bash bench/gpu_session.sh ncu`` runs both for gpt2 at batch 1 and 64 and gpt2-xl at batch 1.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict


def summarise(path: str) -> list[dict]:
    rows = list(csv.DictReader(line for line in open(path) if line.startswith('"')))
    metrics: dict[tuple, dict] = defaultdict(lambda: defaultdict(float))
    launches: dict[tuple, set] = defaultdict(set)
    for r in rows:
        key = (r["Kernel Name"][:40], r.get("Grid Size", ""), r.get("Block Size", ""))
        metrics[key][r["Metric Name"] + " [" + r["Metric Unit"] + "]"] += float(r["Metric Value"].replace(",", "") or 0)
        launches[key].add(r["ID"])
    out = [dict(kernel=k[0], grid=k[1], block=k[2], count=len(launches[k]),
                **{name: round(v / len(launches[k]), 3) for name, v in m.items()}) for k, m in metrics.items()]
    time = lambda d: next((v for k, v in d.items() if k.startswith("gpu__time_duration")), 0)  # noqa: E731
    return sorted(out, key=lambda d: -d["count"] * time(d))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("out")
    ap.add_argument("--command", required=True, help="the ncu command line that wrote the CSV")
    a = ap.parse_args()
    kernels = summarise(a.csv)
    with open(a.out, "w") as f:
        json.dump({"command": a.command, "summarised_by": "python3 bench/ncu_summary.py " + " ".join(sys.argv[1:]),
                   "note": "ncu runs the kernels one at a time (no PDL overlap, caches flushed between them): each "
                           "kernel's own time, DRAM bytes, registers, occupancy limit and waves.",
                   "kernels": kernels}, f, indent=1)
    for d in kernels:
        print(json.dumps(d))


if __name__ == "__main__":
    main()
