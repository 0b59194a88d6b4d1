"""Open-loop latency of one version against another (WRITEUP.md section 7.2): a fresh
3-node cluster, the bench's open loop on node 1 (one key, no observers) for 5 s at
1,000/s, then at 5,000/s.

Usage: run it from each version's tree, alternately, e.g.
    cd OLD && PYTHONPATH=OLD .venv/bin/python docs/measurements/latency_ab.py
Prints p50, p99 and max at each rate."""
import os, sys, tempfile
sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests"))
from pathlib import Path
from harness import running_cluster
from zcounter.bench.keys import KeySpec
from zcounter.bench.load import open_loop
with running_cluster(Path(tempfile.mkdtemp()) / "c", settings={}) as c:
    eps = {i: c.config.nodes[i].router for i in (1, 2, 3)}
    open_loop(eps[1], 1000, 1.0, KeySpec(1), [], 0.0005)
    for rate in (1000, 5000):
        r = open_loop(eps[1], rate, 5.0, KeySpec(1), [], 0.0005)
        l = r["latency_s"]
        print(f"{rate}/s p50 {l['p50']*1e3:.2f} p99 {l['p99']*1e3:.2f} max {l['max']*1e3:.2f} ms")
