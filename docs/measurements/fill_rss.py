"""Node memory after filling KEYS keys of three slots (each key written once at each of
the three nodes of a fresh cluster, in order, window 256), as ``bin/bench --scale``
fills its cluster, without the rest of the bench (WRITEUP.md section 2.3).

Usage: .venv/bin/python docs/measurements/fill_rss.py KEYS
Prints each node's RSS and peak (VmHWM) right after the fill and 20 s later, and RSS
growth per key.  Compare versions or settings (e.g. ``MALLOC_ARENA_MAX``) in runs of
the same hour."""
import os, sys, time, tempfile
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(1, os.path.join(HERE, "..", "..", "tests")); sys.path.insert(1, HERE)
from pathlib import Path
from harness import running_cluster
import load
def mem(pid):
    out = {}
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(("VmRSS", "VmHWM")):
            k, v = line.split(":"); out[k] = int(v.split()[0]) / 1024
    return out
keys = int(sys.argv[1])
with running_cluster(Path(tempfile.mkdtemp()) / "c", settings={}) as c:
    pids = {i: c.procs[i].pid for i in (1, 2, 3)}
    m0 = {i: mem(p)["VmRSS"] for i, p in pids.items()}
    t = time.time()
    for i in (1, 2, 3):
        load.fill(c.config.nodes[i].router, keys, pids[i], limit_s=400)
    dt = time.time() - t
    print(f"fill {keys} x 3 in {dt:.0f} s")
    for label in ("after fill", "after 20 s"):
        print(label, {i: f"RSS {mem(p)['VmRSS']:.0f} HWM {mem(p)['VmHWM']:.0f} MiB, {(mem(p)['VmRSS'] - m0[i]) * 1048576 / keys:.0f} B/key" for i, p in pids.items()})
        if label == "after fill":
            time.sleep(20)
