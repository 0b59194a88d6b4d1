"""Memory of the keyspace alone (WRITEUP.md section 2.3): a million keys of three slots
built in one process, each key incremented once by each slot in batches of 256, as
``bin/bench --scale`` fills a cluster, without storage, sockets or threads.

Usage: .venv/bin/python docs/measurements/keyspace_rss.py
Prints RSS growth per key and RSS after each slot's pass."""
import os, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from zcounter.model.keyspace import Keyspace  # noqa: E402


def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"): return int(line.split()[1]) * 1024
N = 1_000_000
ks = Keyspace()
slots = ["1.aaaaaaaaaaaa", "2.bbbbbbbbbbbb", "3.cccccccccccc"]
for s in slots: ks.slots.intern(s)
r0 = rss()
for node, s in enumerate(slots):
    idx = ks.slots.index[s]
    for j in range(0, N, 256):
        for i in range(j, min(j + 256, N)):
            ks.add(f"k{i}", idx, 1)
        ks.flush()
    print(f"after phase {node + 1}: {(rss() - r0) / N:.0f} B/key, RSS {rss() / 2**20:.0f} MiB", flush=True)
