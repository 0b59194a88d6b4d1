"""CRDT laws for the G-Counter, checked by Hypothesis (merge is a join)."""

from __future__ import annotations

import pytest
from hypothesis import given, note
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from zcounter.crdt import MAX_COUNT, GCounter, make_slot, merge_all, slot_node

slot_keys = st.builds(make_slot, st.integers(1, 5),
                      st.sampled_from(["a" * 12, "0123456789ab", "fedcba987654"]))
states = st.dictionaries(slot_keys, st.integers(0, 10**12), max_size=6)


def merged(*parts: dict[str, int]) -> dict[str, int]:
    return merge_all(parts).slots()


@given(states, states)
def test_merge_commutative(a, b):
    assert merged(a, b) == merged(b, a)


@given(states, states, states)
def test_merge_associative(a, b, c):
    left = GCounter(a)
    left.merge(merged(b, c))
    right = GCounter(merged(a, b))
    right.merge(c)
    assert left == right


@given(states)
def test_merge_idempotent(a):
    c = GCounter(a)
    assert c.merge(a) == {}
    assert c.slots() == merged(a)


@given(states, states)
def test_merge_is_monotonic_and_an_upper_bound(a, b):
    c = GCounter(a)
    before = c.value
    c.merge(b)
    assert c.value >= before
    assert c.dominates(a) and c.dominates(b)
    assert c.value == sum(c.slots().values())


@given(states, st.permutations(range(4)), st.lists(states, min_size=4, max_size=4))
def test_any_delivery_order_converges(base, order, updates):
    """Replicas receiving the same states in any order end equal (strong convergence)."""
    one, two = GCounter(base), GCounter(base)
    for u in updates:
        one.merge(u)
    for i in order:
        two.merge(updates[i])
    assert one == two and one.digest() == two.digest()


@given(states, st.integers(1, 2**32))
def test_increment_raises_value_by_exactly_by(a, by):
    c = GCounter(a)
    before = c.value
    c.increment(make_slot(9, "0" * 12), by)
    assert c.value == before + by


def test_overflow_is_refused_without_change():
    c = GCounter({make_slot(1, "a" * 12): MAX_COUNT - 1})
    with pytest.raises(OverflowError):
        c.increment(make_slot(2, "a" * 12), 2)
    with pytest.raises(OverflowError):
        c.merge({make_slot(2, "a" * 12): 2})
    assert c.value == MAX_COUNT - 1
    c.increment(make_slot(2, "a" * 12), 1)
    assert c.value == MAX_COUNT


def test_increment_must_be_positive():
    with pytest.raises(ValueError):
        GCounter().increment(make_slot(1, "a" * 12), 0)


def test_digest_differs_for_same_sum_different_slots():
    x, y = make_slot(1, "a" * 12), make_slot(2, "a" * 12)
    assert GCounter({x: 5, y: 3}).digest() != GCounter({x: 3, y: 5}).digest()


def test_slot_names():
    assert slot_node(make_slot(12, "0123456789ab")) == 12
    for bad in ["", "1", "0.0123456789ab", "1.0123456789AB", "1.0123", "x.0123456789ab"]:
        assert slot_node(bad) is None


class Replicas(RuleBasedStateMachine):
    """Replicas increment and gossip in any pattern; after a full exchange they all
    equal the model: the sum of every increment ever made."""

    replicas = Bundle("replicas")

    def __init__(self) -> None:
        super().__init__()
        self.model = 0
        self.all: list[tuple[str, GCounter]] = []

    @rule(target=replicas, node=st.integers(1, 9))
    def new_replica(self, node):
        slot = make_slot(node, f"{len(self.all):012x}")
        replica = GCounter()
        self.all.append((slot, replica))
        return (slot, replica)

    @rule(r=replicas, by=st.integers(1, 1000))
    def increment(self, r, by):
        slot, replica = r
        replica.increment(slot, by)
        self.model += by

    @rule(src=replicas, dst=replicas)
    def gossip(self, src, dst):
        before = dst[1].value
        dst[1].merge(src[1].slots())
        assert dst[1].value >= before

    @invariant()
    def full_exchange_equals_model(self):
        union = merge_all(r.slots() for _, r in self.all)
        note(f"union={union!r} model={self.model}")
        assert union.value == self.model


TestReplicas = Replicas.TestCase
