"""The oracle's reference for expiry (zcounter/sim/lives.py), against the spec's rules
and worked examples; and the no-resurrection check against states that do and do not
bring old counts back."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from zcounter.sim.lives import (
    META,
    check_collected_dead,
    check_no_resurrection,
    deadline,
    effective_floor,
    ended_lives,
    exists,
    expected_meta,
    fold,
    join,
    register_order,
    split,
    value,
)

A, B = "1.aaaaaaaaaaaa", "2.bbbbbbbbbbbb"

ints = st.integers(0, 50)
records = st.tuples(ints, ints, ints, ints, ints).map(
    lambda r: (r[0] + r[2], r[1] + r[3], r[2], r[3], r[4]))
metas = st.tuples(ints, ints, ints)
states = st.fixed_dictionaries({}, optional={A: records, B: records, META: metas})


def _norm(state: dict) -> dict:
    recs, meta = split(state)
    return {**recs, **({META: meta} if meta != (0, 0, 0) else {})}


@given(states, states)
def test_join_is_commutative(a: dict, b: dict) -> None:
    assert _norm(join(a, b)) == _norm(join(b, a))


@given(states, states, states)
def test_join_is_associative(a: dict, b: dict, c: dict) -> None:
    assert _norm(join(join(a, b), c)) == _norm(join(a, join(b, c)))


@given(states)
def test_join_is_idempotent(a: dict) -> None:
    assert _norm(join(a, a)) == _norm(a)


def test_register_order_later_wins_then_longer_then_no_deadline() -> None:
    assert register_order((0, 5, 100)) > register_order((0, 4, 10**9))
    assert register_order((0, 5, 100)) > register_order((0, 5, 99))
    assert register_order((0, 5, 0)) > register_order((0, 5, 10**12))  # PERSIST wins
    assert join({META: (0, 5, 100)}, {META: (7, 5, 0)})[META] == (7, 5, 0)


def test_a_passed_deadline_floors_the_old_life() -> None:
    # Node A counted 3 (born 0), the key expired at 100; at 150 A increments again:
    # rebased (bp = p = 3, born 150) then +1.
    old = {A: (3, 0, 0, 0), META: (0, 10, 100)}
    assert value(old, 99) == 3 and deadline(old, 99) == 100
    assert value(old, 100) == 0 and not exists(old, 100) and deadline(old, 100) == -2
    assert effective_floor((0, 10, 100), 100) == 100
    new = {A: (4, 0, 3, 0, 150), META: (0, 10, 100)}
    assert value(new, 150) == 1 and deadline(new, 150) == -1
    # A stale copy of the old life joined in later changes nothing.
    assert value(join(new, {A: (3, 0, 0, 0), B: (9, 0, 0, 0)}), 160) == 1
    # Rule R: overwriting the register after the deadline keeps the old life dead.
    assert fold((0, 10, 100), 150) == (100, 10, 100) and fold((0, 10, 100), 99) == (0, 10, 100)
    assert value({A: (3, 0, 0, 0), META: (100, 150, 0)}, 200) == 0


def test_expected_meta_is_the_last_writer() -> None:
    assert expected_meta([(0, 10, 100), (0, 12, 0), (100, 11, 500)]) == (100, 12, 0)
    assert expected_meta([]) == (0, 0, 0)


def test_ended_lives_by_the_time_the_next_register_was_written() -> None:
    # (S, D) set at 679 expiring at 1679; the next register written at 5758 by a node
    # that never held it: that life ended at 1679 (bin/sim --seed 12).
    assert ended_lives([((0, 679, 1679), 679), ((0, 5758, 6258), 5758)]) == 1679
    # A register stamped ahead of its writer's clock (S = S_old + 1) and replaced, by
    # that clock, before its deadline: nothing ended (bin/sim --seed 54).
    assert ended_lives([((0, 2163, 2136), 2086), ((0, 2164, 2152), 2102)]) == 0
    # A register's time is its first application's (later increments carry it too).
    assert ended_lives([((0, 10, 100), 10), ((0, 10, 100), 500), ((0, 20, 0), 50)]) == 0
    assert ended_lives([]) == 0


def test_no_resurrection_catches_a_stale_state_taken_in_after_collection() -> None:
    grave = {A: (3, 0, 0, 0), B: (2, 0, 0, 0), META: (0, 10, 100)}
    assert check_collected_dead(grave, 100) is None
    assert "collected while live" in str(check_collected_dead(grave, 99))
    # A stale copy from before the expiry (no meta): it reads 3 alone, 0 with its death.
    problem = check_no_resurrection(grave, {A: (3, 0, 0, 0)}, 200)
    assert problem is not None and "came back" in problem
    # A new life after collection: A starts at its high-water (3, 0) born 150.
    assert check_no_resurrection(grave, {A: (4, 0, 3, 0, 150)}, 200) is None
    # A reset-killed key: a fresh record starting at 0 would be swallowed (and flagged).
    reset = {A: (5, 0, 5, 0)}
    assert check_no_resurrection(reset, {A: (6, 0, 5, 0, 300)}, 400) is None
    assert check_no_resurrection(reset, {A: (1, 0, 0, 0, 300)}, 400) is not None
