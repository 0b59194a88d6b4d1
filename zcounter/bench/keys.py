"""Which key each request names: ``k0`` .. ``k{N-1}``, uniformly or by a Zipf law.

The scale section fills exactly these keys, so every key a request names exists there.
A :class:`KeyStream` draws a table of key indices once, up front, from its own seeded
generator (never the global one: the seed is printed and a run can be repeated), so the
hot path pays one array lookup per request: ``stream[i]`` for the i-th request.

* ``uniform``: a table of ``2**ceil(log2 N)`` draws (capped at 2**21), so a run of that
  many requests touches about 63 % of the keys, each about equally often;
* ``zipf``: rank r (0-based) is drawn with probability proportional to
  ``1 / (r + 1) ** s``, s = 1.1 by default (web caches and page views measure 0.6-1.2;
  above 1 a few hot keys take most requests: at a million keys the hottest takes ~8 %),
  by inverse-CDF sampling over the precomputed cumulative weights.
"""

from __future__ import annotations

import bisect
import itertools
import random
from array import array
from dataclasses import dataclass

DISTRIBUTIONS = ("uniform", "zipf")
ZIPF_EXPONENT = 1.1
#: Largest table of precomputed draws (16 MB of int64).
MAX_TABLE = 1 << 21
MIN_TABLE = 1 << 12


@dataclass(frozen=True)
class KeySpec:
    """How requests pick keys; small and picklable, so client processes rebuild the
    stream themselves (with their own ``salt``) instead of receiving a large table."""

    count: int = 1
    dist: str = "uniform"
    seed: int = 1
    zipf_exponent: float = ZIPF_EXPONENT

    def __post_init__(self) -> None:
        if self.count < 1 or self.dist not in DISTRIBUTIONS:
            raise ValueError(f"bad key spec {self}")

    @property
    def label(self) -> str:
        if self.count == 1:
            return "1 key"
        if self.dist == "zipf":
            return f"{self.count:,} keys, zipf s={self.zipf_exponent:g}"
        return f"{self.count:,} keys, uniform"

    def to_json(self) -> dict[str, object]:
        return {"count": self.count, "dist": self.dist, "seed": self.seed,
                "zipf_exponent": self.zipf_exponent if self.dist == "zipf" else None}


class KeyStream:
    """Precomputed key indices: ``stream[i]`` is the key index of request ``i``."""

    __slots__ = ("mask", "spec", "table")

    def __init__(self, spec: KeySpec, salt: int = 0) -> None:
        self.spec = spec
        n = spec.count
        if n == 1:
            self.table = array("q", [0])
            self.mask = 0
            return
        size = MIN_TABLE
        while size < n and size < MAX_TABLE:
            size <<= 1
        rng = random.Random(f"{spec.seed}/{salt}")
        draw = rng.random
        if spec.dist == "uniform":
            self.table = array("q", (int(draw() * n) for _ in range(size)))
        else:
            s = spec.zipf_exponent
            cumulative = array("d", itertools.accumulate((r + 1) ** -s for r in range(n)))
            total = cumulative[-1]
            last = n - 1
            pick = bisect.bisect_right
            self.table = array("q", (min(pick(cumulative, draw() * total), last)
                                     for _ in range(size)))
        self.mask = size - 1

    def __getitem__(self, i: int) -> int:
        return self.table[i & self.mask]

    def key(self, i: int) -> str:
        return f"k{self[i]}"


def key_name(index: int) -> str:
    return f"k{index}"
