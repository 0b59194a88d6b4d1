"""RSS per key of three slots, building KEYS keys in one process with the Keyspace alone
(no node), for the code at PATH (a checkout): compares the packed layout of two versions
in the same run (WRITEUP.md section 15.6).

Usage: .venv/bin/python docs/measurements/key_bytes.py PATH [KEYS]

Results (200,000 keys, this 2-core machine, 2026-12-08, same minute):
  before issue 21 (9-byte header, 36-byte records)   331 B/key
  issue 21 (33-byte header, 44-byte records)         376 B/key   (+45 B, +14 %)
"""
import gc
import inspect
import sys

sys.path.insert(0, sys.argv[1])
from zcounter.model.keyspace import Keyspace


def rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024
    return 0


keys = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
ks = Keyspace()
slots = [ks.slots.intern(f"{i}.00000000000{i}") for i in (1, 2, 3)]
new = "now_ms" in inspect.signature(ks.add).parameters
gc.collect()
before = rss()
for s in slots:
    for i in range(keys):
        if new:
            ks.add(f"key:{i:08d}", s, 1, 1_700_000_000_000)
        else:
            ks.add(f"key:{i:08d}", s, 1)  # type: ignore[call-arg]
        if i % 1000 == 999:
            ks.flush()
    ks.flush()
gc.collect()
print(f"{sys.argv[1]}: {(rss() - before) / keys:.0f} B/key (3 slots)")
