"""A py-spy profile of node 1 under window-W load (WRITEUP.md section 7.5).

Usage: .venv/bin/python docs/measurements/profile_window.py W OUT.txt [KEYS]
(needs py-spy: pip install py-spy; OUT.txt is py-spy's raw collapsed-stack format,
summarised by summarise_profile.py).  With KEYS > 1, as in ``bin/bench --scale``: every
key is first written once at each of the three nodes (three slots per key), then node 1
takes increments of keys drawn uniformly; the same load on one key is measured just
before, for the ratio.
"""
import os, subprocess, sys, tempfile
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests")); sys.path.insert(0, HERE)
from pathlib import Path
from harness import running_cluster
import load
w = int(sys.argv[1]); out = sys.argv[2]; keys = int(sys.argv[3]) if len(sys.argv) > 3 else 1
with running_cluster(Path(tempfile.mkdtemp()) / "c", settings={}) as c:
    ep = c.config.nodes[1].router; pid = c.procs[1].pid
    if keys > 1:
        for i in (1, 2, 3):
            load.fill(c.config.nodes[i].router, keys, c.procs[i].pid)
        rate, us = load.run(ep, w, 4.0, 1, pid)
        print(f"window {w}, one key: {rate:,.0f}/s, node-1 CPU {us:.1f} us/op")
    load.run(ep, w, 1.0, keys, pid)
    spy = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "-r", "250", "--nonblocking", "--threads", "-f", "raw",
                            "-d", "8", "-p", str(pid), "-o", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rate, us = load.run(ep, w, 9.0, keys, pid)
    spy.wait()
    print(f"window {w}, {keys} keys: {rate:,.0f}/s, node-1 CPU {us:.1f} us/op (under py-spy)")
