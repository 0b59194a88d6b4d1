"""Cost of ``Keyspace.add`` + ``flush`` per increment, for keys with default meta (issue
21's model change must keep this path fast).  Two loads: one key (100 increments share a
flush, as under a single-key load) and 100,000 keys drawn uniformly (one flush per 100
increments, almost every increment a key of its own).  Best of 5 runs, us per increment.

Run from the worktree: ``.venv/bin/python docs/measurements/ttl_hot_path.py``; works on
the keyspace before and after issue 21 (``now_ms`` passed only where it is taken)."""

from __future__ import annotations

import inspect
import random
import time

from zcounter.model.keyspace import Keyspace

TAKES_NOW = "now_ms" in inspect.signature(Keyspace.add).parameters
NOW = 1_700_000_000_000


def run(keys: list[str], increments: int, batch: int) -> float:
    ks = Keyspace()
    slot = ks.slots.intern("1.000000000001")
    rng = random.Random(7)
    draws = [keys[rng.randrange(len(keys))] for _ in range(increments)]
    add = ks.add
    start = time.perf_counter()
    for i in range(0, increments, batch):
        for key in draws[i:i + batch]:
            if TAKES_NOW:
                add(key, slot, 1, NOW + i)
            else:
                add(key, slot, 1)  # type: ignore[call-arg]
        ks.flush()
    return (time.perf_counter() - start) / increments * 1e6


def main() -> None:
    one = ["k"]
    many = [f"key:{i}" for i in range(100_000)]
    for name, keys, n in (("one key", one, 200_000), ("100,000 keys", many, 200_000)):
        best = min(run(keys, n, 100) for _ in range(5))
        print(f"{name}: {best:.2f} us per add+flush")


if __name__ == "__main__":
    main()
