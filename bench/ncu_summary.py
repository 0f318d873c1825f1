"""Summarise ncu --csv output of bench/ncu_step.py: per kernel name, count, us, GB/s, registers, occupancy."""
from __future__ import annotations

import csv
import json
import sys
from collections import defaultdict


def main() -> None:
    rows = list(csv.DictReader(line for line in open(sys.argv[1]) if line.startswith('"')))
    by: dict[tuple, dict] = defaultdict(lambda: defaultdict(float))
    for r in rows:
        key = (r["Kernel Name"][:40], r.get("Grid Size", ""), r.get("Block Size", ""))
        by[key][r["Metric Name"] + " [" + r["Metric Unit"] + "]"] += float(r["Metric Value"].replace(",", "") or 0)
    n_ids = defaultdict(set)
    for r in rows:
        n_ids[(r["Kernel Name"][:40], r.get("Grid Size", ""), r.get("Block Size", ""))].add(r["ID"])
    out = []
    for key, m in by.items():
        n = len(n_ids[key])
        out.append(dict(kernel=key[0], grid=key[1], block=key[2], count=n, **{k: round(v / n, 3) for k, v in m.items()}))
    out.sort(key=lambda d: -d["count"] * next((v for k, v in d.items() if k.startswith("gpu__time_duration")), 0))
    json.dump(out, open(sys.argv[2], "w"), indent=1)
    for d in out:
        print(json.dumps(d))


if __name__ == "__main__":
    main()
