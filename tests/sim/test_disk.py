"""A simulated node's storage: the real log and recovery over simulated files, checked
against the model (exactly the committed batches; power loss keeps the fsynced prefix)."""

from __future__ import annotations

import pytest

from zcounter.model.keyspace import Keyspace, pack
from zcounter.protocol.outputs import Persist
from zcounter.sim.disk import Disk
from zcounter.sim.files import Crash
from zcounter.sim.oracle import SimFailure


def _persist(sync: bool, **kw: object) -> Persist:
    return Persist(sync=sync, **kw)  # type: ignore[arg-type]


def test_commit_applies_statements_in_storage_order() -> None:
    disk = Disk(1, "0123456789ab", 0)
    disk.commit(_persist(True, slots=[(0, "1.0123456789ab")],
                         states={"k": pack({0: (5, 0, 0, 0)})},
                         rids=[("r1", "k", {"1.0123456789ab": (5, 0, 0, 0)})]))
    # INSERT OR REPLACE: a known id takes its later entry (a core persists a known id
    # again only when a collection cleared its target); forget runs after the inserts.
    disk.commit(_persist(False, rids=[("r1", "k", {}), ("r2", "k", {})], forget=["r2"]))
    assert disk.current.state("k") == {"1.0123456789ab": (5, 0, 0, 0)}
    assert disk.current.rid_entries() == [("r1", "k", {})]


def test_what_a_restart_loads_is_what_was_committed() -> None:
    disk = Disk(1, "0123456789ab", 0)
    disk.commit(_persist(True, slots=[(0, "1.0123456789ab")],
                         states={"k": pack({0: (5, 0, 0, 0)})},
                         rids=[("r1", "k", {"1.0123456789ab": (5, 0, 0, 0)})]))
    disk.commit(_persist(False, rids=[("r2", "k", {})], forget=["r2"]))
    disk.crash(power=False)  # the real recovery must read back exactly the model
    keys = Keyspace()
    keys.load(disk.storage.load_slot_names(), disk.storage.load_states())
    assert keys.state("k") == {"1.0123456789ab": (5, 0, 0, 0)}
    assert len(disk.storage.load_rids()) == 1 and not disk.fresh


def test_power_loss_keeps_exactly_the_fsynced_prefix() -> None:
    disk = Disk(1, "0123456789ab", 0)
    slot = [(0, "1.0123456789ab")]
    disk.commit(_persist(True, slots=slot, states={"a": pack({0: (1, 0, 0, 0)})}))
    disk.commit(_persist(False, states={"a": pack({0: (2, 0, 0, 0)})}))
    disk.commit(_persist(False, states={"b": pack({0: (7, 0, 0, 0)})}))
    assert disk.durable.state("a") == {"1.0123456789ab": (1, 0, 0, 0)}
    disk.crash(power=True)
    assert disk.current.all_states() == {"a": {"1.0123456789ab": (1, 0, 0, 0)}}
    # A later fsync makes every earlier commit durable too (WAL semantics).
    disk.commit(_persist(False, states={"a": pack({0: (3, 0, 0, 0)})}))
    disk.commit(_persist(True, states={"b": pack({0: (4, 0, 0, 0)})}))
    disk.crash(power=True)
    assert disk.current.all_states() == {"a": {"1.0123456789ab": (3, 0, 0, 0)},
                                         "b": {"1.0123456789ab": (4, 0, 0, 0)}}


def test_a_slot_index_clash_is_a_failure() -> None:
    disk = Disk(1, "0123456789ab", 0)
    disk.commit(_persist(True, slots=[(0, "1.0123456789ab")]))
    disk.commit(_persist(True, slots=[(0, "1.0123456789ab")]))  # the same row: ignored
    with pytest.raises(SimFailure, match="slot table clash"):
        disk.commit(_persist(True, slots=[(0, "2.0123456789ab")]))
    with pytest.raises(SimFailure, match="slot table clash"):
        disk.commit(_persist(True, slots=[(5, "3.0123456789ab")]))


@pytest.mark.parametrize(("at", "torn", "recovered"), [
    (1, 0, False), (1, 10, False), (1, 10_000, True), (2, 0, True)])
def test_a_crash_inside_a_commit_is_decided_by_the_recovery(at: int, torn: int,
                                                             recovered: bool) -> None:
    """Operation 1 of a commit is its write (torn after ``torn`` bytes: a whole record
    is valid), operation 2 its fdatasync (the write is in the page cache)."""
    disk = Disk(1, "0123456789ab", 0)
    slot = [(0, "1.0123456789ab")]
    disk.commit(_persist(True, slots=slot, states={"a": pack({0: (1, 0, 0, 0)})}))
    disk.files.crash_at, disk.files.torn_bytes = disk.files.ops + at, torn
    doomed = _persist(True, states={"a": pack({0: (2, 0, 0, 0)})})
    with pytest.raises(Crash):
        disk.commit(doomed)
    assert disk.crash(power=False, in_flight=doomed) is recovered
    assert disk.current.state("a") == {"1.0123456789ab": (2 if recovered else 1, 0, 0, 0)}


def test_a_recovery_no_prefix_explains_is_a_failure() -> None:
    disk = Disk(1, "0123456789ab", 0)
    disk.commit(_persist(True, slots=[(0, "1.0123456789ab")],
                         states={"a": pack({0: (1, 0, 0, 0)})}))
    disk.current.states["a"] = pack({0: (9, 0, 0, 0)})  # the model claims more
    with pytest.raises(SimFailure, match="no prefix of its commits explains"):
        disk.crash(power=False)
