"""The XOR ("TicTac") hash tree (zcounter.model.hashtree) as the keyspace maintains it:
it reports exactly the buckets and segments holding keys whose states differ, and the
incrementally updated tree equals one rebuilt from scratch."""

from __future__ import annotations

from functools import reduce
from operator import xor

from histories import LAWS, amounts, slot_of, states
from hypothesis import given
from hypothesis import strategies as st

from zcounter.model.hashtree import (
    BUCKETS,
    SEGMENT_BITS,
    SEGMENTS_PER_BUCKET,
    HashTree,
    key_digest,
    record_hash,
    segment_of,
)
from zcounter.model.keyspace import Keyspace, pack_state


def segment(key: str) -> int:
    return segment_of(key_digest(key.encode()))


def bucket(key: str) -> int:
    return segment(key) // SEGMENTS_PER_BUCKET


#: Keys chosen so that differences can hide behind one another: three segments of one
#: bucket (101) holding three, two and two keys, and loners in other buckets.
SHARED = ("t8464", "t12268", "t16754", "t5", "t14787")
PAIR = ("t8836", "t8924")
POOL = SHARED + PAIR + ("default", "ключ", "🔑", "x" * 256)


def test_the_key_pool_has_the_collisions_the_tests_rely_on():
    assert len({segment(k) for k in SHARED[:3]}) == 1
    assert len({segment(k) for k in SHARED[3:]}) == 1
    assert segment(SHARED[0]) != segment(SHARED[3]) and bucket(SHARED[0]) == bucket(SHARED[3])
    assert segment(PAIR[0]) == segment(PAIR[1]) and bucket(PAIR[0]) == bucket(SHARED[0])
    assert len({segment(k) for k in SHARED + PAIR}) == 3
    assert len({bucket(k) for k in POOL}) == 5


# --------------------------------------------------------------------------- changes

keys = st.sampled_from(POOL)
changes = st.lists(st.one_of(
    st.tuples(st.just("merge"), keys, states),
    st.tuples(st.just("add"), keys, st.integers(0, 2), amounts),
    st.tuples(st.just("reset"), keys),
    st.tuples(st.just("flush")),
), max_size=12)


def apply(ks: Keyspace, steps: list[tuple], persisted: dict[str, bytes] | None = None) -> None:
    """Apply ``steps``, then end the batch; collect what a node would persist."""
    for step in steps:
        if step[0] == "merge":
            ks.merge(step[1], step[2])
        elif step[0] == "add":
            ks.add(step[1], ks.slots.intern(slot_of(step[2])), step[3], 0)
        elif step[0] == "reset":
            ks.reset(step[1], 0)
        else:
            flushed = ks.flush()
            if persisted is not None:
                persisted.update(flushed.changed)
    flushed = ks.flush()
    if persisted is not None:
        persisted.update(flushed.changed)


@LAWS
@given(changes, changes, changes)
def test_the_tree_reports_exactly_the_buckets_and_segments_that_differ(common, one, two):
    a, b = Keyspace(), Keyspace()
    apply(a, common)
    apply(b, common)
    apply(a, one)
    apply(b, two)
    differ = {k for k in POOL if a.state(k) != b.state(k)}
    buckets = sorted({bucket(k) for k in differ})
    assert a.tree.differing_buckets(b.tree.bucket_hashes()) == buckets
    assert b.tree.differing_buckets(a.tree.bucket_hashes()) == buckets
    for bk in {bucket(k) for k in POOL}:
        expected = sorted({segment(k) for k in differ if bucket(k) == bk})
        assert a.tree.differing_segments(bk, b.tree.segment_hashes(bk)) == expected
        assert b.tree.differing_segments(bk, a.tree.segment_hashes(bk)) == expected
    assert (a.tree == b.tree) == (a.tree.root == b.tree.root) == (not differ)


@LAWS
@given(changes, st.permutations(range(3)))
def test_the_incremental_tree_equals_one_rebuilt_from_storage(steps, order):
    """What a node persists (``Flushed.changed`` and ``new_slots``) rebuilds the same
    tree with ``Keyspace.load``, whatever the local slot indices."""
    ks = Keyspace()
    persisted: dict[str, bytes] = {}
    apply(ks, steps, persisted)
    names = ks.slots.names
    reloaded = Keyspace()
    reloaded.load(names, persisted.items())
    assert reloaded.tree == ks.tree
    assert reloaded.tree.bucket_hashes() == ks.tree.bucket_hashes()
    assert reloaded.tree.root == ks.tree.root
    assert reloaded.live == ks.live and len(reloaded) == len(ks)
    # Indices are local to a node: another slot order packs differently, hashes the same.
    permuted = [names[i] for i in order if i < len(names)] + names[3:]
    index = {name: i for i, name in enumerate(permuted)}
    rows = [(key, pack_state(key, {index[s]: r for s, r in ks.state(key).items()},
                             [n.encode() for n in permuted]))
            for key in persisted]
    other = Keyspace()
    other.load(permuted, rows)
    assert other.tree == ks.tree and other.tree.root == ks.tree.root
    for key in persisted:
        assert other.state(key) == ks.state(key)
        assert other.key_hash(key) == ks.key_hash(key)


@LAWS
@given(changes)
def test_hashes_are_xors_all_the_way_up(steps):
    ks = Keyspace()
    apply(ks, steps)
    tree = ks.tree
    for key in POOL:
        digest = key_digest(key.encode())
        expected = reduce(xor, (record_hash(digest, s.encode(), r)
                                for s, r in ks.state(key).items()), 0)
        assert ks.key_hash(key) == expected
    for seg in {segment(k) for k in POOL}:
        listed = ks.keys_in_segments([seg])
        assert sorted(listed) == sorted(k for k in POOL if segment(k) == seg and ks.state(k))
        assert tree.segments[seg] == reduce(xor, map(ks.key_hash, listed), 0)
    for bk in range(BUCKETS):
        assert tree.buckets[bk] == reduce(xor, tree.segment_hashes(bk), 0)
    assert tree.root == reduce(xor, tree.bucket_hashes(), 0)


def test_a_record_that_did_not_change_cancels_out():
    ks = Keyspace()
    mine = ks.slots.intern(slot_of(0))
    ks.add("k", mine, 5, 0)
    ks.flush()
    root = ks.tree.root
    ks.add("k", mine, 1, 0)
    ks.add("k", mine, -1, 0)  # a different record: the hash moves ...
    ks.flush()
    assert ks.tree.root != root
    ks.merge("k", {slot_of(0): (6, 1, 0, 0)})  # ... and an equal one leaves it
    ks.flush()
    other = Keyspace()
    other.merge("k", {slot_of(0): (6, 1, 0, 0)})
    other.flush()
    assert other.tree == ks.tree


def test_toggle_is_its_own_inverse_and_order_free():
    one, two = HashTree(), HashTree()
    for seg, h in [(0, 5), (65535, 7), (300, 9)]:
        one.toggle(seg, h)
    for seg, h in [(300, 9), (0, 5), (65535, 7)]:
        two.toggle(seg, h)
    assert one == two and one.root == two.root == 5 ^ 7 ^ 9
    assert one.buckets[0] == 5 and one.buckets[255] == 7 and one.buckets[1] == 9
    for seg, h in [(0, 5), (65535, 7), (300, 9)]:
        one.toggle(seg, h)
    assert one == HashTree() and one.root == 0 and not any(one.buckets)
    assert SEGMENT_BITS == 16 and len(one.segment_hashes(3)) == SEGMENTS_PER_BUCKET


def test_the_same_totals_in_other_slots_hash_differently():
    one, two = Keyspace(), Keyspace()
    one.merge("k", {slot_of(0): (5, 0, 0, 0), slot_of(1): (3, 0, 0, 0)})
    two.merge("k", {slot_of(0): (3, 0, 0, 0), slot_of(1): (5, 0, 0, 0)})
    one.flush()
    two.flush()
    assert one.value("k", 0) == two.value("k", 0) and one.tree.root != two.tree.root
