"""The PN-counter with observed reset (zcounter.model.pncounter): merge laws, the exact
semantics of observed reset against an event model, and the 2**63-1 bounds."""

from __future__ import annotations

import pytest
from histories import HISTORIES, LAWS, Model, histories, records, slot_of, states
from hypothesis import given, note
from hypothesis import strategies as st

from zcounter.model import pncounter
from zcounter.model.pncounter import (
    MAX_TOTAL,
    ZERO,
    Overflow,
    State,
    dominates,
    is_valid_record,
    join_record,
    make_slot,
    merge,
    merge_all,
    slot_node,
    totals,
)

# These laws are those of keys without expiry, as before issue 21: at wall time 0 every
# record is born at 0 and counts (tests/model/test_expiry.py has the laws with expiry).


def add(state: State, slot: str, amount: int) -> dict[str, pncounter.Record]:
    return pncounter.add(state, slot, amount, 0)


def reset(state: State) -> dict[str, pncounter.Record]:
    return pncounter.reset(state, 0)


def value(state: State) -> int:
    return pncounter.value(state, 0)


def is_live(state: State) -> bool:
    return pncounter.exists(state, 0)

A, B, C = slot_of(0), slot_of(1), slot_of(2)


# --------------------------------------------------------------------------- merge laws


@LAWS
@given(states, states)
def test_merge_is_commutative(a, b):
    assert merge(a, b) == merge(b, a)


@LAWS
@given(states, states, states)
def test_merge_is_associative(a, b, c):
    assert merge(merge(a, b), c) == merge(a, merge(b, c))


@LAWS
@given(states)
def test_merge_is_idempotent(a):
    assert merge(a, a) == a
    assert merge(merge(a, a), a) == a


@LAWS
@given(states, states)
def test_merge_is_the_least_upper_bound(a, b):
    m = merge(a, b)
    assert dominates(m, a) and dominates(m, b)
    # Least: every field is the larger of the two, nothing more.
    assert set(m) == set(a) | set(b)
    for slot, rec in m.items():
        assert rec == join_record(a.get(slot, ZERO), b.get(slot, ZERO))
        assert is_valid_record(rec)


@LAWS
@given(states, states)
def test_merge_leaves_its_inputs_alone(a, b):
    a_before, b_before = dict(a), dict(b)
    merge(a, b)
    assert a == a_before and b == b_before


@LAWS
@given(st.lists(states, max_size=5), st.data())
def test_merge_all_in_any_order_is_the_same(parts, data):
    order = data.draw(st.permutations(range(len(parts))))
    assert merge_all(parts) == merge_all(parts[i] for i in order)


# --------------------------------------------------------------------------- semantics


def run_history(nodes: int, history: list[tuple]) -> tuple[list[dict], Model]:
    """Apply ``history`` to ``nodes`` replicas of the CRDT and to the event model."""
    replicas: list[dict] = [{} for _ in range(nodes)]
    model = Model.of(nodes)
    for step in history:
        if step[0] == "add":
            _, i, amount = step
            replicas[i] = add(replicas[i], slot_of(i), amount)
            model.add(i, amount)
        elif step[0] == "reset":
            replicas[step[1]] = reset(replicas[step[1]])
            model.reset(step[1])
        else:
            _, src, dst = step
            replicas[dst] = merge(replicas[dst], replicas[src])
            model.merge(src, dst)
    return replicas, model


@HISTORIES
@given(histories(3, max_size=30))
def test_every_history_matches_the_event_model(history):
    """Each reset cancels exactly the adds its node had seen; everything else counts,
    at every replica and in the merge of all of them."""
    replicas, model = run_history(3, history)
    note(f"replicas={replicas}")
    for i, state in enumerate(replicas):
        assert value(state) == model.value(i)
        assert all(is_valid_record(r) for r in state.values())
    assert value(merge_all(replicas)) == model.total()


@LAWS
@given(histories(3), st.permutations(range(3)))
def test_the_final_merge_does_not_depend_on_the_order(history, order):
    replicas, model = run_history(3, history)
    assert merge_all(replicas[i] for i in order) == merge_all(replicas)
    assert value(merge_all(replicas[i] for i in order)) == model.total()


def test_worked_example_an_unobserved_concurrent_increment_survives_a_reset():
    """Replicas a and b both hold a's +5.  Then, concurrently, a resets and b adds 3
    (which a has not seen).  Merged either way, the count is 3 on both."""
    a = add({}, A, 5)
    b = merge({}, a)
    assert value(a) == value(b) == 5
    a = reset(a)  # observes a's +5 only
    b = add(b, B, 3)  # concurrent, unobserved by the reset
    assert value(a) == 0 and value(b) == 8
    assert value(merge(a, b)) == value(merge(b, a)) == 3
    assert merge(a, b) == {A: (5, 0, 5, 0), B: (3, 0, 0, 0)}


def test_worked_example_with_a_decrement_and_a_larger_unobserved_total():
    """The reset observed a's total up to 5; a's later +2 and -4 (same slot, after the
    reset's snapshot) survive: bases stay below the newer totals."""
    a = add({}, A, 5)
    b = merge({}, a)
    b = reset(b)  # b saw only a's first +5
    a = add(add(a, A, 2), A, -4)  # unseen by b's reset
    assert value(merge(a, b)) == value(merge(b, a)) == 2 - 4


def test_concurrent_resets_merge_to_the_union_of_what_they_observed():
    a = add({}, A, 5)
    b = add({}, B, 7)
    c = merge(merge({}, a), b)
    a, b = reset(a), reset(b)  # a observed a's +5, b observed b's +7
    assert value(merge_all([a, b, c])) == 0
    c = add(c, C, 1)
    assert value(merge_all([c, a, b])) == 1


def test_no_update_comes_back_after_a_reset_is_merged_with_old_states():
    old = add(add({}, A, 5), B, 3)
    cleared = reset(old)
    for stale in (old, add({}, A, 5), merge(old, old)):
        assert value(merge(cleared, stale)) == 0


@LAWS
@given(states, st.sampled_from([A, B, C]), st.integers(1, 2**32))
def test_add_changes_the_value_by_exactly_the_step(state, slot, step):
    assert value(add(state, slot, step)) == value(state) + step
    assert value(add(state, slot, -step)) == value(state) - step


def test_a_zero_step_is_refused():
    with pytest.raises(ValueError):
        add({}, A, 0)


@LAWS
@given(states)
def test_is_live_means_some_update_is_not_covered_by_a_reset(state):
    assert is_live(state) == any(p > bp or n > bn for p, n, bp, bn in state.values())
    assert not is_live(reset(state))
    assert value(reset(state)) == 0


# --------------------------------------------------------------------------- bounds


@pytest.mark.parametrize("sign", [1, -1])
def test_a_step_past_the_bound_raises_overflow_and_changes_nothing(sign):
    # Two slots: the bound is on the key's total, not on one slot.
    near = {A: (MAX_TOTAL - 10, 0, 0, 0), B: (0, 0, 0, 0)} if sign > 0 else \
           {A: (0, MAX_TOTAL - 10, 0, 0), B: (0, 0, 0, 0)}
    before = dict(near)
    with pytest.raises(Overflow):
        add(near, B, sign * 11)
    assert near == before
    at_bound = add(near, B, sign * 10)
    assert totals(at_bound) == ((MAX_TOTAL, 0) if sign > 0 else (0, MAX_TOTAL))
    with pytest.raises(Overflow):
        add(at_bound, C, sign)
    # The other direction is bounded separately: still room there.
    assert value(add(at_bound, C, -sign)) == value(at_bound) - sign


def test_a_reset_frees_room_under_the_bound():
    """Steps are bounded by live totals, which a reset brings to 0 (0.2 bounded lifetime
    totals: a key that once reached 2**63-1 refused increments forever, issue 19)."""
    full = reset({A: (MAX_TOTAL, 0, 0, 0)})
    assert value(full) == 0
    assert value(add(full, B, 1)) == 1
    with pytest.raises(Overflow):  # A's own record is at its bound: not A
        add(full, A, 1)


def test_reads_saturate():
    assert value({A: (MAX_TOTAL, 0, 0, 0), B: (5, 0, 0, 0)}) == MAX_TOTAL
    assert value({A: (0, MAX_TOTAL, 0, 0), B: (0, 5, 0, 0)}) == -MAX_TOTAL
    assert value({A: (MAX_TOTAL, 0, 0, 0), B: (5, 6, 0, 0)}) == MAX_TOTAL - 1


# --------------------------------------------------------------------------- records, slots


@LAWS
@given(records())
def test_generated_records_are_valid(rec):
    assert is_valid_record(rec) and is_valid_record(list(rec))


@pytest.mark.parametrize("rec", [
    (1, 0, 2, 0),  # bp > p
    (0, 1, 0, 2),  # bn > n
    (-1, 0, 0, 0),
    (MAX_TOTAL + 1, 0, 0, 0),
    (True, 0, 0, 0),  # bool is not an integer here
    (1.0, 0, 0, 0),
    (1, 0, 0),
    (1, 0, 0, 0, 0, 0),  # a fifth field (the birth, issue 21) is the last
    (1, 0, 0, 0, -1),  # a birth is in 0..2**63-1 like the totals
    (1, 0, 0, 0, MAX_TOTAL + 1),
    "1000",
    None,
])
def test_invalid_records(rec):
    assert not is_valid_record(rec)


def test_slot_names():
    assert slot_node(make_slot(12, "0123456789ab")) == 12
    assert slot_node(make_slot(999_999_999, "0123456789ab")) == 999_999_999
    for bad in ["", "1", "0.0123456789ab", "1.0123456789AB", "1.0123", "x.0123456789ab",
                "01.0123456789ab", "1000000000.0123456789ab", " 1.0123456789ab",
                "1.0123456789ab\n", "1.0123456789ab ", "1.0123456789abc"]:
        assert slot_node(bad) is None, bad
