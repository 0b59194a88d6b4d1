"""The oracle's checks on their own, and proof that together they have teeth: a core
with a broken merge or a broken reset fails the simulation on most seeds."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping

import pytest

from zcounter.model.keyspace import Keyspace
from zcounter.model.pncounter import Record
from zcounter.protocol.messages import Level
from zcounter.sim import SimResult, run_seed
from zcounter.sim.history import App, Op
from zcounter.sim.oracle import (
    SimFailure,
    check_chain,
    check_counts,
    check_final,
    check_grows,
    check_includes,
    check_reset_observed,
    expected_states,
    required_for,
    unknown_value,
    value_of_updates,
)

A, B = "1.aaaaaaaaaaaa", "2.bbbbbbbbbbbb"


def _add(op: int, slot: str, amount: int, boundary: int, key: str = "k") -> App:
    rec: Record = (boundary, 0, 0, 0) if amount > 0 else (0, boundary, 0, 0)
    return App(op, int(slot[0]), slot, key, amount, {slot: rec}, 0)


def _reset(op: int, written: dict[str, Record], key: str = "k") -> App:
    return App(op, 1, A, key, 0, written, 0)


# --------------------------------------------------------------------------- as it runs


def test_check_grows_names_the_field_that_went_down() -> None:
    assert check_grows({A: (5, 1, 0, 0)}, {A: (5, 2, 0, 0), B: (1, 0, 0, 0)}) is None
    assert "bp went down from 3 to 0" in str(check_grows({A: (5, 0, 3, 0)}, {A: (6, 0, 0, 0)}))
    assert "went down" in str(check_grows({A: (5, 0, 0, 0)}, {}))


def test_unknown_value_and_chain() -> None:
    known = {("k", A, 0): {5, 7}, ("k", A, 2): {5}}
    assert unknown_value("k", {A: (7, 0, 5, 0)}, known) is None
    assert "not the result of any update" in str(unknown_value("k", {A: (12, 0, 0, 0)}, known))
    assert "not the result of any reset" in str(unknown_value("k", {A: (7, 0, 7, 0)}, known))
    assert check_chain(5, +2, 7) is None and check_chain(0, -3, 3) is None
    assert check_chain(5, +2, 9) is not None


def test_a_reset_writes_its_observed_totals_as_bases() -> None:
    known = {("k", A, 0): {5}}
    assert check_reset_observed("k", {A: (5, 0, 5, 0)}, known) is None
    assert "bases are not its totals" in str(check_reset_observed("k", {A: (5, 0, 0, 0)}, known))
    assert "no update produced" in str(check_reset_observed("k", {A: (6, 0, 6, 0)}, known))


def test_reads_must_include_writes_at_intersecting_levels() -> None:
    # 3 nodes: local(1) + all(3) > 3, majority(2) + majority(2) > 3, all(3) + local(1) > 3.
    required = {1: {"k": {A: (1, 0, 0, 0)}}, 2: {"k": {A: (2, 0, 0, 0)}},
                3: {"k": {B: (4, 0, 0, 0)}}}
    assert required_for(1, 3, required, ["k"]) == {"k": {B: (4, 0, 0, 0)}}
    assert required_for(2, 3, required, ["k"]) == {"k": {A: (2, 0, 0, 0), B: (4, 0, 0, 0)}}
    assert required_for(3, 3, required, ["k", "x"]) == {"k": {A: (2, 0, 0, 0),
                                                              B: (4, 0, 0, 0)}}
    want = required_for(2, 3, required, ["k"])
    assert check_includes(want, {"k": {A: (2, 0, 0, 0), B: (4, 1, 0, 0)}}, "read") is None
    assert "below 4" in str(check_includes(want, {"k": {A: (9, 0, 0, 0)}}, "read"))
    assert "no state" in str(check_includes(want, {}, "read"))


def test_check_counts() -> None:
    states = {"a": {A: (5, 2, 1, 0)}, "b": {}}
    assert check_counts(["a", "b"], [2, 0], states) is None
    assert check_counts(["a"], [5], states) is not None
    assert check_counts(["a", "b"], [2], states) is not None


# --------------------------------------------------------------------------- final


def test_value_of_updates_counts_exactly_what_no_reset_observed() -> None:
    # A: +5, +2; B: +3, +4.  A reset at node 1 saw A at 7 and B at 0 (a partition); then
    # A adds 1.  Every node must end at 1 + 3 + 4 = 8: B's updates were never observed.
    apps = [_add(0, A, 5, 5), _add(1, A, 2, 7), _add(2, B, 3, 3), _add(3, B, 4, 7),
            _reset(4, {A: (7, 0, 7, 0)}), _add(5, A, 1, 8)]
    final = expected_states(apps)["k"]
    assert final == {A: (8, 0, 7, 0), B: (7, 0, 0, 0)}
    assert value_of_updates("k", apps, final) == 8
    # Two concurrent resets merge to the union of what they observed.
    apps.append(App(6, 2, B, "k", 0, {B: (3, 0, 3, 0)}, 0))
    assert value_of_updates("k", apps, expected_states(apps)["k"]) == 5
    # A base inside an update means a reset observed half of it: impossible.
    with pytest.raises(SimFailure, match="observed part of an update"):
        value_of_updates("k", [*apps[:2], _reset(7, {A: (6, 0, 6, 0)})], {A: (7, 0, 6, 0)})


def _op(index: int, outcome: str, apps: list[App]) -> Op:
    op = Op(index, 0, apps[0].node if apps else 1, "add", ("k",), Level.LOCAL, 100, 0,
            amount=1, rid=f"c0-{index}", outcome=outcome)
    op.apps = apps
    return op


def test_check_final_judges_each_field_against_the_ledger() -> None:
    apps = [_add(0, A, 5, 5), _add(1, B, 3, 3)]
    ops = [_op(0, "ok", apps[:1]), _op(1, "unknown", apps[1:])]
    final = {"k": {A: (5, 0, 0, 0), B: (3, 0, 0, 0)}}
    known = {("k", A, 0): {5}, ("k", B, 0): {3}}
    stats: Counter[str] = Counter()

    def judge(states: dict[int, dict[str, dict[str, Record]]], floors: dict = {}) -> None:  # noqa: B006
        check_final(states, dict.fromkeys(states, 7),
                    {n: {"k": 8} for n in states}, ops, apps, floors, known, stats)

    judge({1: final, 2: final})
    with pytest.raises(SimFailure, match="different states"):
        judge({1: final, 2: {"k": {A: (5, 0, 0, 0)}}})
    lost = {"k": {A: (5, 0, 0, 0)}}
    with pytest.raises(SimFailure, match="no wipe or power loss"):
        judge({1: lost})
    # The same loss is excused when a wipe removed every copy of B's update.
    ops[1].outcome = "ok"
    with pytest.raises(SimFailure, match="counts 'k' as 8"):
        judge({1: lost}, {("k", B, 0): 0})
    ops[0].outcome = "fail"
    with pytest.raises(SimFailure, match="refused, yet applied"):
        judge({1: final})


# --------------------------------------------------------------------------- teeth


def _sum_merge(self: Keyspace, key: str, state: dict[str, Record]) -> bool:
    if not state:
        return False
    records = (self._hot.get(key) or self._touch(key)).records
    for name, rec in state.items():
        mine = records.setdefault(self.slots.intern(name), [0, 0, 0, 0])
        for i in range(4):
            mine[i] += rec[i]
    return True


def _overwrite_merge(self: Keyspace, key: str, state: dict[str, Record]) -> bool:
    # "max" broken into "last writer wins": a stale message lowers a record.
    grew = False
    records = (self._hot.get(key) or self._touch(key)).records if state else {}
    for name, rec in state.items():
        s = self.slots.intern(name)
        if records.get(s) != list(rec):
            records[s] = list(rec)
            grew = True
    return grew


def _known_slots_merge(self: Keyspace, key: str, state: dict[str, Record]) -> bool:
    # Never learns a slot it does not hold yet (once it holds any): nothing shrinks and
    # nothing is invented, so only convergence and the final oracle can catch it.
    current = self.state(key)
    return _MERGE(self, key, {s: r for s, r in state.items() if not current or s in current})


def _reset_by_decrement(self: Keyspace, key: str, now_ms: int) -> dict[str, Record]:
    # Riak's advice ("increment by -value") instead of an observed reset: concurrent
    # resets subtract twice, and the counts it writes are no update's.
    value = self.value(key, now_ms)
    if key not in self or not value:
        return {}
    hot = self._touch(key)
    slot = min(hot.records)
    rec = hot.records[slot]
    rec[1 if value > 0 else 0] += abs(value)
    hot.local.add(slot)
    return {self.slots.names[slot]: (rec[0], rec[1], rec[0], rec[1])}


_MERGE = Keyspace.merge


def merging_with(merge: Callable[[Keyspace, str, dict[str, Record]], bool]
                 ) -> Callable[[Keyspace, Mapping[str, dict[str, Record]]], int]:
    """A ``Keyspace.merge_many`` (the core's receive path) that joins with ``merge``."""
    def merge_many(self: Keyspace, states: Mapping[str, dict[str, Record]]) -> int:
        return sum(merge(self, key, state) for key, state in states.items() if state)
    return merge_many


def _explain(results: list[SimResult]) -> str:
    return "\n".join(f"seed {r.seed}: {r.ok} {r.failure}" for r in results)


@pytest.mark.parametrize(("method", "broken", "must_fail"), [
    ("merge", _sum_merge, 8), ("merge", _overwrite_merge, 5),
    ("merge", _known_slots_merge, 8), ("reset", _reset_by_decrement, 4)],
    ids=["sum-merge", "overwrite-merge", "known-slots-merge", "reset-by-decrement"])
def test_the_oracle_catches_a_broken_core(monkeypatch: pytest.MonkeyPatch, method: str,
                                          broken: object, must_fail: int) -> None:
    monkeypatch.setattr(Keyspace, method, broken)
    if method == "merge":
        monkeypatch.setattr(Keyspace, "merge_many", merging_with(broken))  # type: ignore[arg-type]
    # Measured on seeds 0-9 (400 steps): sum 9 caught, overwrite 6 (it needs stale
    # messages to arrive late), known-slots 9, reset-by-decrement 5 (4 of the seeds'
    # mixes draw no resets at all).
    results = [run_seed(seed, 3, 400) for seed in range(10)]
    failed = [r for r in results if not r.ok]
    assert len(failed) >= must_fail, f"the simulator missed a broken {method}:\n" + _explain(
        results)
    assert all("replay" not in (r.failure or "") for r in failed)
    assert "bin/sim --seed" in failed[0].replay
