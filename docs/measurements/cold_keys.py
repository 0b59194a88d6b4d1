"""Per-key cost of the keyspace when every key of a batch is a different one, as under
keys drawn uniformly (WRITEUP.md sections 7.4 and 7.5): 40,000 keys of three slots, in
batches of 256.

- ``merge``: a peer's delta, one grown record per key, merged (``merge_many``) and
  flushed; once through the packed path and once through the general path (the hot
  entry), alternated.
- ``add``: one increment of each key, its value read for the reply, then the flush.

Usage: .venv/bin/python docs/measurements/cold_keys.py [REPEATS]   (default 7)
Prints the best of REPEATS for each, in us per key."""
import os, sys, time
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
from zcounter.model.keyspace import Keyspace  # noqa: E402

N = 40_000
SLOTS = ["1.aaaaaaaaaaaa", "2.bbbbbbbbbbbb", "3.cccccccccccc"]
REPEATS = int(sys.argv[1]) if len(sys.argv) > 1 else 7


def keyspace() -> Keyspace:
    ks = Keyspace()
    for i in range(N):
        ks.merge(f"k{i}", {s: (5, 1, 0, 0) for s in SLOTS})
    ks.flush()
    return ks


def merges(general: bool) -> float:
    ks = keyspace()
    if general:
        ks._merge_packed = lambda key, old, state: None  # type: ignore[method-assign]
    batches = [{f"k{i}": {SLOTS[1]: (6, 1, 0, 0)} for i in range(j, min(j + 256, N))}
               for j in range(0, N, 256)]
    t = time.perf_counter()
    for batch in batches:
        ks.merge_many(batch)
        ks.flush()
    return (time.perf_counter() - t) / N * 1e6


def adds() -> float:
    ks = keyspace()
    me = ks.slots.index[SLOTS[0]]
    keys = [f"k{i}" for i in range(N)]
    t = time.perf_counter()
    for j in range(0, N, 256):
        for key in keys[j:j + 256]:
            ks.add(key, me, 1)
            ks.value(key)
        ks.flush()
    return (time.perf_counter() - t) / N * 1e6


packed, general, add = [], [], []
for _ in range(REPEATS):
    packed.append(merges(False))
    general.append(merges(True))
    add.append(adds())
print(f"merge + flush, packed path:  {min(packed):.2f} us per key")
print(f"merge + flush, general path: {min(general):.2f} us per key")
print(f"add + value + flush:         {min(add):.2f} us per key")
