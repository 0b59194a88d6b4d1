"""Medians (and every round) of bench_versions.sh's results, one column per checkout.

    python docs/measurements/bench_versions_summary.py OUTDIR [NAME...]

Issue 20's run (2026-12-08, this 2-core machine, Python 3.13.0, 10 interleaved rounds;
v913 = 913b68c, before issue 19; base = f094339, before issue 20; final = after issue 20):

| figure | v913 | base | final |
| --- | --- | --- | --- |
| node 1 CPU us/increment, window 1 | 372 | 406 | 411 |
| node 1 CPU us/increment, window 16 | 43 | 53 | 48 |
| node 1 CPU us/increment, window 256 | 16 | 19 | 18 |
| one client, window 1, ops/s | 1,327 | 1,216 | 1,215 |
| one client, window 16, ops/s | 14,850 | 12,347 | 13,857 |
| one client, window 256, ops/s | 53,327 | 46,054 | 46,769 |
| one client per node, window 256, ops/s | 56,560 | 46,105 | 49,525 |
| latency p99 at 1,000/s, ms | 2 | 3 | 2 |
| convergence p99 at 1,000/s, ms | 4 | 5 | 6 |
| latency p99 at 5,000/s, ms | 6 | 8 | 8 |
| convergence p99 at 5,000/s, ms | 97 (45-286) | 105 (23-302) | 92 (11-437) |

Reading: issue 20's split (base -> final) moved no figure beyond the rounds' spread.
Issue 19 (v913 -> base) costs 9-23 % more node CPU per increment and 14-18 % less
throughput at window 256; convergence p99 at 5,000/s spreads over 45-286 ms for 913b68c
itself, so the rise from 26-31 to 116-184 ms once seen (WRITEUP 13.5) was that spread.
"""

from __future__ import annotations

import glob
import json
import statistics
import sys
from pathlib import Path
from typing import Any


def figures(z: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for w in ("w1", "w16", "w256"):
        out[f"node 1 CPU us/increment, window {w[1:]}"] = z["cpu_us_per_increment"][w]
    for w in ("w1", "w16", "w256"):
        out[f"one client, window {w[1:]}, ops/s"] = z["throughput"][w]["ops_per_s"]
    out["one client per node, window 256, ops/s"] = z["throughput"]["per_node"]["ops_per_s"]
    for rate in ("1000", "5000"):
        lat = z["latency"][f"r{rate}"]
        out[f"latency p99 at {rate}/s, ms"] = 1000 * lat["latency_s"]["p99"]
        out[f"convergence p99 at {rate}/s, ms"] = 1000 * lat["convergence_s"]["p99"]
    return out


def main() -> None:
    out = Path(sys.argv[1])
    names = sys.argv[2:] or sorted({p.name.rsplit("-", 1)[0] for p in out.glob("*.json")})
    table: dict[str, list[dict[str, float]]] = {}
    for name in names:
        paths = sorted(glob.glob(str(out / f"{name}-*.json")),
                       key=lambda p: int(p.rsplit("-", 1)[1].split(".")[0]))
        table[name] = [figures(json.loads(Path(p).read_text())["zcounter"]) for p in paths]
    rows = list(next(iter(table.values()))[0])
    print("| figure | " + " | ".join(f"{n} (median of {len(table[n])})" for n in names) + " |")
    print("| --- |" + " --- |" * len(names))
    for row in rows:
        cells = []
        for n in names:
            vals = [r[row] for r in table[n]]
            cells.append(f"{statistics.median(vals):,.0f} ({min(vals):,.0f}-{max(vals):,.0f})")
        print(f"| {row} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
