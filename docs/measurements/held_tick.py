"""Cost of held requests at the core (issue 19): N ``confirm`` requests of one key that
can never be met (nodes=4 of 3) held by node 1 of a three-node core, then five ticks.

Usage: .venv/bin/python docs/measurements/held_tick.py [N ...]
Prints, per N, the time to take them in (one batch) and the tick + take_outputs time
(median and max of five ticks, 0.2 s apart).  Caps are lifted for the measurement."""
import sys
import time

sys.path.insert(0, "tests/protocol")
sys.path.insert(0, "tests")
from corelink import core  # noqa: E402

from zcounter.config import Settings  # noqa: E402
from zcounter.protocol.messages import Add, Confirm  # noqa: E402

for n in [int(a) for a in sys.argv[1:]] or [2_000, 10_000, 20_000, 50_000]:
    c = core(1, settings=Settings(max_held_per_connection=10**7, max_held_per_node=10**7))
    c.handle_request("s", Add(0, "k", 1), 0.0)
    c.take_outputs()
    t = time.perf_counter()
    for i in range(n):
        c.handle_request("a", Confirm(i, "k", 4, 600_000), 0.0)
    c.take_outputs()
    taken = time.perf_counter() - t
    ticks = []
    for j in range(1, 6):
        t = time.perf_counter()
        c.tick(j * 0.2)
        c.take_outputs()
        ticks.append(time.perf_counter() - t)
    print(f"{n} held: taken in {taken:.2f} s; tick + outputs median "
          f"{sorted(ticks)[2] * 1000:.0f} ms, max {max(ticks) * 1000:.0f} ms")
