"""The node's statistics type (zcounter.protocol.stats)."""

from __future__ import annotations

import pytest
from corelink import Link

from zcounter.protocol.messages import Add, Reset
from zcounter.protocol.stats import NodeStats, exported


def test_a_misspelt_statistic_fails_instead_of_counting() -> None:
    stats = NodeStats()
    with pytest.raises(AttributeError):
        stats.incremenst += 1  # type: ignore[attr-defined]


def test_status_shows_every_statistic_by_name() -> None:
    link = Link.of(2)
    link.request(1, Add(1, "k", 2))
    link.request(1, Add(2, "k", -1))
    link.request(1, Reset(3, "k"))
    link.flush()
    stats = link.cores[1].status(link.now)["stats"]
    assert isinstance(stats, dict) and set(stats) == set(NodeStats().as_dict())
    assert (stats["increments"], stats["decrements"], stats["resets"]) == (1, 1, 1)


def test_exported_statistics_name_distinct_metrics() -> None:
    names = [name for _, name, _ in exported()]
    assert len(set(names)) == len(names) and all(n.startswith("zcounter_") for n in names)
