"""The storage model: exactly the committed batches; power loss keeps the fsynced prefix."""

from __future__ import annotations

import pytest

from zcounter.model.keyspace import Keyspace, pack
from zcounter.protocol.outputs import Persist
from zcounter.sim.disk import Disk
from zcounter.sim.oracle import SimFailure


def _persist(sync: bool, **kw: object) -> Persist:
    return Persist(sync=sync, **kw)  # type: ignore[arg-type]


def test_commit_applies_statements_in_storage_order() -> None:
    disk = Disk("0123456789ab")
    disk.commit(_persist(True, slots=[(0, "1.0123456789ab")],
                         states={"k": pack({0: (5, 0, 0, 0)})},
                         rids=[("r1", "k", {"1.0123456789ab": (5, 0, 0, 0)})]))
    # INSERT OR IGNORE: a known id keeps its first entry; forget runs after the inserts.
    disk.commit(_persist(False, rids=[("r1", "k", {}), ("r2", "k", {})], forget=["r2"]))
    assert disk.current.state("k") == {"1.0123456789ab": (5, 0, 0, 0)}
    assert disk.current.rid_entries() == [("r1", "k", {"1.0123456789ab": (5, 0, 0, 0)})]
    names, rows, rids = disk.load()
    keys = Keyspace()
    keys.load(names, rows)
    assert keys.state("k") == {"1.0123456789ab": (5, 0, 0, 0)} and len(rids) == 1


def test_power_loss_keeps_exactly_the_fsynced_prefix() -> None:
    disk = Disk("0123456789ab")
    slot = [(0, "1.0123456789ab")]
    disk.commit(_persist(True, slots=slot, states={"a": pack({0: (1, 0, 0, 0)})}))
    disk.commit(_persist(False, states={"a": pack({0: (2, 0, 0, 0)})}))
    disk.commit(_persist(False, states={"b": pack({0: (7, 0, 0, 0)})}))
    assert disk.durable.state("a") == {"1.0123456789ab": (1, 0, 0, 0)}
    disk.power_loss()
    assert disk.current.all_states() == {"a": {"1.0123456789ab": (1, 0, 0, 0)}}
    # A later fsync makes every earlier commit durable too (WAL semantics).
    disk.commit(_persist(False, states={"a": pack({0: (3, 0, 0, 0)})}))
    disk.commit(_persist(True, states={"b": pack({0: (4, 0, 0, 0)})}))
    disk.power_loss()
    assert disk.current.all_states() == {"a": {"1.0123456789ab": (3, 0, 0, 0)},
                                         "b": {"1.0123456789ab": (4, 0, 0, 0)}}


def test_a_slot_index_clash_is_a_failure() -> None:
    disk = Disk("0123456789ab")
    disk.commit(_persist(True, slots=[(0, "1.0123456789ab")]))
    disk.commit(_persist(True, slots=[(0, "1.0123456789ab")]))  # the same row: ignored
    with pytest.raises(SimFailure, match="slot table clash"):
        disk.commit(_persist(True, slots=[(0, "2.0123456789ab")]))
    with pytest.raises(SimFailure, match="slot table clash"):
        disk.commit(_persist(True, slots=[(5, "3.0123456789ab")]))
