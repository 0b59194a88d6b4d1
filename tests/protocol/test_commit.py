"""The batch-and-commit policy, driven directly (no thread, no disk, no clock)."""

from __future__ import annotations

from zcounter.protocol.commit import DEFER_S, CommitPolicy, Step
from zcounter.protocol.outputs import Persist


def test_persist_merge_newer_states_win_and_sync_sticks() -> None:
    first = Persist({"a": b"1", "b": b"1"}, [(0, "s0")], [("r1", "a", {})], ["r0"], sync=True)
    first.merge(Persist({"a": b"2"}, [(1, "s1")], [("r2", "a", {})], ["r9"]))
    assert first.states == {"a": b"2", "b": b"1"} and first.slots == [(0, "s0"), (1, "s1")]
    assert [r[0] for r in first.rids] == ["r1", "r2"] and first.forget == ["r0", "r9"]
    assert first.sync


def test_messages_wait_for_their_commit_and_every_earlier_one() -> None:
    policy = CommitPolicy()
    one = Persist({"a": b"1"}, sync=True)
    assert policy.submit(one, ["m1"], 0.0) == Step([], one)  # type: ignore[list-item]
    assert policy.submit(None, ["m2"], 0.0) == Step([])  # waits behind the commit
    assert policy.submit(Persist({"a": b"2"}, sync=True), ["m3"], 0.0) == Step([])
    step = policy.completed()
    assert step.send == ["m1"] and step.commit is not None and step.commit.states == {"a": b"2"}
    assert policy.completed() == Step(["m2", "m3"])  # type: ignore[list-item]
    assert policy.idle


def test_unacknowledged_changes_are_deferred_then_written_first() -> None:
    policy = CommitPolicy()
    assert policy.submit(Persist({"a": b"old", "b": b"1"}), ["x"], 1.0).send == ["x"]
    assert policy.deadline() == 1.0 + DEFER_S and policy.idle
    assert policy.tick(1.0 + DEFER_S / 2) == Step([])
    step = policy.submit(Persist({"a": b"new"}, sync=True), ["y"], 1.01)
    assert step.commit is not None and step.commit.states == {"a": b"new", "b": b"1"}
    assert step.commit.sync and policy.deferred is None
    assert policy.completed().send == ["y"]
    # Alone, it is written once DEFER_S has passed.
    policy.submit(Persist({"c": b"1"}), [], 2.0)
    step = policy.tick(2.0 + DEFER_S)
    assert step.commit is not None and not step.commit.sync


def test_messages_without_changes_wait_for_deferred_changes() -> None:
    """A reply may reveal the deferred state: rule 1 writes it before the reply goes."""
    policy = CommitPolicy()
    policy.submit(Persist({"a": b"1"}), [], 0.0)
    step = policy.submit(None, ["reply"], 0.01)
    assert step.send == [] and step.commit is not None and step.commit.states == {"a": b"1"}
    assert policy.completed().send == ["reply"]


def test_commit_now_takes_the_deferred_changes_along() -> None:
    policy = CommitPolicy()
    policy.submit(Persist({"a": b"old"}), [], 0.0)
    written = policy.commit_now(Persist({"a": b"new", "b": b"1"}, sync=True), ["r"])
    assert written.states == {"a": b"new", "b": b"1"} and not policy.idle
    assert policy.completed() == Step(["r"])  # type: ignore[list-item]
    assert policy.flush() == Step([])
