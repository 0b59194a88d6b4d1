"""Key streams: deterministic from the seed, in range, and shaped as named."""

from __future__ import annotations

from collections import Counter

import pytest

from zcounter.bench.keys import KeySpec, KeyStream


def test_one_key_is_always_k0() -> None:
    stream = KeyStream(KeySpec(1))
    assert {stream[i] for i in range(1000)} == {0}
    assert stream.key(12345) == "k0"


@pytest.mark.parametrize("dist", ["uniform", "zipf"])
def test_streams_repeat_from_the_seed_and_stay_in_range(dist: str) -> None:
    spec = KeySpec(50_000, dist, seed=7)
    a, b = KeyStream(spec), KeyStream(spec)
    assert list(a.table) == list(b.table)
    assert list(KeyStream(spec, salt=1).table) != list(a.table)
    assert min(a.table) >= 0 and max(a.table) < 50_000
    assert len(a.table) & (len(a.table) - 1) == 0  # a power of two: i & mask indexes it


def test_uniform_touches_most_keys_evenly() -> None:
    stream = KeyStream(KeySpec(10_000, "uniform", seed=3))
    counts = Counter(stream.table)
    assert len(counts) > 0.6 * 10_000
    assert counts.most_common(1)[0][1] < 20


def test_zipf_is_skewed_towards_low_ranks() -> None:
    n = 100_000
    stream = KeyStream(KeySpec(n, "zipf", seed=3))
    counts = Counter(stream.table)
    size = len(stream.table)
    # s = 1.1 over 100,000 keys: rank 0 takes 1 / H(n, 1.1) of the draws, about 10 %.
    h = sum((r + 1) ** -1.1 for r in range(n))
    assert counts[0] / size == pytest.approx(1 / h, rel=0.1)
    assert counts[0] > counts[1] > counts[10] > counts.get(1000, 0)


def test_bad_specs_are_refused() -> None:
    with pytest.raises(ValueError):
        KeySpec(0)
    with pytest.raises(ValueError):
        KeySpec(10, "pareto")
