"""Quick closed-loop load: window W increments on node 1 of a fresh 3-node cluster.

Usage: .venv/bin/python docs/measurements/load.py W [seconds] [keys]
prints ops/s and node 1's CPU per op, twice (a development tool for before/after
comparisons of one change, WRITEUP.md section 7.4; bin/bench is the benchmark).
"""
import os, sys, time, tempfile, random, subprocess
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests"))
from pathlib import Path
import orjson, zmq
from harness import running_cluster

def cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")

def run(endpoint, window, seconds, keys, pid):
    ctx = zmq.Context(); s = ctx.socket(zmq.DEALER); s.linger = 0; s.connect(endpoint)
    keyl = [f"k{i}" for i in range(keys)]
    rng = random.Random(1)
    bodies = [orjson.dumps({"op": "increment", "id": i, "key": keyl[i % keys] if keys > 1 else "default"}) for i in range(4096)]
    sent = done = 0
    c0 = cpu(pid); t0 = time.perf_counter(); end = t0 + seconds
    while time.perf_counter() < end:
        while sent - done < window:
            s.send(bodies[sent % 4096]); sent += 1
        if s.poll(1000):
            while True:
                try: s.recv(zmq.NOBLOCK); done += 1
                except zmq.Again: break
    while done < sent and s.poll(2000):
        s.recv(); done += 1
    dt = time.perf_counter() - t0; c1 = cpu(pid)
    s.close(); ctx.term()
    return done / dt, (c1 - c0) / done * 1e6

if __name__ == "__main__":
    w = int(sys.argv[1]); secs = float(sys.argv[2]) if len(sys.argv) > 2 else 5; keys = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    with running_cluster(Path(tempfile.mkdtemp()) / "c", settings={}) as c:
        ep = c.config.nodes[1].router
        run(ep, w, 1.0, keys, c.procs[1].pid)
        for _ in range(2):
            rate, us = run(ep, w, secs, keys, c.procs[1].pid)
            print(f"window {w} keys {keys}: {rate:,.0f} ops/s, node-1 CPU {us:.1f} us/op", flush=True)
