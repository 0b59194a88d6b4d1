"""Quick closed-loop load: window W increments on node 1 of a fresh 3-node cluster.

Usage: .venv/bin/python docs/measurements/load.py W [seconds] [keys]
prints ops/s and node 1's CPU per op, twice (a development tool for before/after
comparisons of one change, WRITEUP.md section 7.4; bin/bench is the benchmark).
With KEYS > 1 the keys are drawn uniformly from k0..k{KEYS-1} (65,536 requests,
repeated); ``fill`` writes each key once at a node, in order.
"""
import os, sys, time, tempfile, random
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests"))
from pathlib import Path
import orjson, zmq
from harness import running_cluster

def cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")

def _bodies(keys, count, in_order=False):
    rng = random.Random(1)
    def key(i):
        if keys == 1:
            return "default"
        return f"k{i % keys if in_order else rng.randrange(keys)}"
    return [orjson.dumps({"op": "increment", "id": i, "key": key(i)}) for i in range(count)]

def run(endpoint, window, seconds, keys, pid, bodies=None):
    """Closed loop for ``seconds`` (or until ``bodies`` are all sent): (ops/s, us of
    node CPU per op)."""
    ctx = zmq.Context(); s = ctx.socket(zmq.DEALER); s.linger = 0; s.connect(endpoint)
    once = bodies is not None
    bodies = bodies or _bodies(keys, 65536)
    n = len(bodies)
    sent = done = 0
    c0 = cpu(pid); t0 = time.perf_counter(); end = t0 + seconds
    while time.perf_counter() < end and not (once and sent == n):
        while sent - done < window and not (once and sent == n):
            s.send(bodies[sent % n]); sent += 1
        if s.poll(1000):
            while True:
                try: s.recv(zmq.NOBLOCK); done += 1
                except zmq.Again: break
    while done < sent and s.poll(2000):
        s.recv(); done += 1
    dt = time.perf_counter() - t0; c1 = cpu(pid)
    s.close(); ctx.term()
    return done / dt, (c1 - c0) / done * 1e6

def fill(endpoint, keys, pid, limit_s=120):
    """Write each of the ``keys`` keys once, in order."""
    return run(endpoint, 256, limit_s, keys, pid, _bodies(keys, keys, in_order=True))

if __name__ == "__main__":
    w = int(sys.argv[1]); secs = float(sys.argv[2]) if len(sys.argv) > 2 else 5; keys = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    with running_cluster(Path(tempfile.mkdtemp()) / "c", settings={}) as c:
        ep = c.config.nodes[1].router
        run(ep, w, 1.0, keys, c.procs[1].pid)
        for _ in range(2):
            rate, us = run(ep, w, secs, keys, c.procs[1].pid)
            print(f"window {w} keys {keys}: {rate:,.0f} ops/s, node-1 CPU {us:.1f} us/op", flush=True)
