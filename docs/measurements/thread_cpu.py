"""CPU per increment of every node and each of its threads, one key against keys drawn
uniformly (WRITEUP.md section 7.4): a fresh 3-node cluster; with KEYS > 1 every key is
first written once at each node (three slots per key, as ``bin/bench --scale`` does);
then node 1 takes window-W increments for 6 s on one key, then on keys uniform over
KEYS.

Usage: .venv/bin/python docs/measurements/thread_cpu.py KEYS [W]   (W defaults to 256)
Prints, per run: increments/s, node 1's CPU per increment, and for each node its CPU per
increment of node 1, split by thread (``main`` is the loop; the others are ZeroMQ's
I/O thread and the node's committer, checkpointer and segment threads, which Linux
names after the process).  Run the version before and after a change alternately: on
this shared machine a single pair of runs can differ by 20 %."""
import os, sys, tempfile
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(1, os.path.join(HERE, "..", "..", "tests")); sys.path.insert(1, HERE)
from pathlib import Path  # noqa: E402
from harness import running_cluster  # noqa: E402
import load  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def threads(pid: int) -> dict[str, float]:
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                s = f.read()
        except FileNotFoundError:
            continue
        name = "main" if int(tid) == pid else s[s.index("(") + 1:s.rindex(")")]
        parts = s.rsplit(")", 1)[1].split()
        out[f"{name}:{tid}"] = (int(parts[11]) + int(parts[12])) / TICK
    return out


keys = int(sys.argv[1]); w = int(sys.argv[2]) if len(sys.argv) > 2 else 256
with running_cluster(Path(tempfile.mkdtemp()) / "c", settings={}) as c:
    pids = {i: c.procs[i].pid for i in (1, 2, 3)}
    ep = c.config.nodes[1].router
    if keys > 1:
        for i in (1, 2, 3):
            load.fill(c.config.nodes[i].router, keys, pids[i])
    for k in (1, keys) if keys > 1 else (1,):
        load.run(ep, w, 1.0, k, pids[1])
        before = {i: threads(p) for i, p in pids.items()}
        rate, us = load.run(ep, w, 6.0, k, pids[1])
        after = {i: threads(p) for i, p in pids.items()}
        n = rate * 6.0
        print(f"keys {k}: {rate:,.0f}/s, node 1 {us:.1f} us/op")
        for i in pids:
            parts, total = [], 0.0
            for t, v in after[i].items():
                d = v - before[i].get(t, 0.0)
                total += d
                if d > 0.005:
                    parts.append(f"{t.split(':')[0]} {d / n * 1e6:.1f}")
            print(f"  node {i}: {total / n * 1e6:.1f} us per increment: " + ", ".join(parts))
