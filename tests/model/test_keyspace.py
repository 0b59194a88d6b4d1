"""The packed keyspace (zcounter.model.keyspace): the merge laws per key, histories of
adds and resets against the event model, deltas (``Flushed.local``) against the
full-state merge, the bounds, and what a flush reports."""

from __future__ import annotations

import pytest
from histories import HISTORIES, INCARNATIONS, LAWS, Model, amounts, slot_of, states
from hypothesis import given, note
from hypothesis import strategies as st

from zcounter.model import pncounter
from zcounter.model.keyspace import HEAD_SIZE, Keyspace, SlotTable, header, pack, unpack
from zcounter.model.pncounter import MAX_TOTAL, Overflow, make_slot

KEYS = ("default", "k", "ключ", "🔑" * 64)  # the last one is 256 bytes of UTF-8
A, B = slot_of(0), slot_of(1)

#: A keyspace's content: key -> state.
contents = st.dictionaries(st.sampled_from(KEYS), states, max_size=4)


def keyspace(content: dict[str, dict], flush: bool = True) -> Keyspace:
    ks = Keyspace()
    for key, state in content.items():
        ks.merge(key, state)
    if flush:
        ks.flush()
    return ks


def export(ks: Keyspace) -> dict[str, dict]:
    """key -> state, of every key that holds a record."""
    keys = set(ks.iter_keys()) | {k for k in KEYS if k in ks}
    return {k: ks.state(k) for k in sorted(keys) if ks.state(k)}


def merged_into(dst: Keyspace, *sources: Keyspace) -> Keyspace:
    for src in sources:
        for key, state in export(src).items():
            dst.merge(key, state)
    dst.flush()
    return dst


def join(*contents_: dict[str, dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for content in contents_:
        for key, state in content.items():
            out[key] = pncounter.merge(out.get(key, {}), state)
    return {k: v for k, v in sorted(out.items()) if v}


# --------------------------------------------------------------------------- packing


@LAWS
@given(st.dictionaries(st.integers(0, 2**32 - 1), st.tuples(
    *[st.integers(0, MAX_TOTAL)] * 4), max_size=5))
def test_pack_round_trips(records):
    packed = pack(records, key_hash=12345)
    assert len(packed) == HEAD_SIZE + 44 * len(records)  # (slot, p, n, bp, bn, b)
    assert unpack(packed) == {s: [*r, 0] for s, r in records.items()}
    assert header(packed) == (12345, any(r[0] > r[2] or r[1] > r[3] for r in records.values()))


def test_slot_table_interns_once_and_reports_what_it_added():
    table = SlotTable([A])
    assert table.take_added() == []  # restored names are not new
    assert table.intern(B) == 1 and table.intern(B) == 1 and table.intern(A) == 0
    assert table.take_added() == [(1, B)] and table.take_added() == []
    assert len(table) == 2 and table.names == [A, B] and table.name_bytes[1] == B.encode()


# --------------------------------------------------------------------------- merge laws


@LAWS
@given(contents, contents)
def test_merge_is_commutative(a, b):
    assert export(merged_into(keyspace(a), keyspace(b))) == \
        export(merged_into(keyspace(b), keyspace(a))) == join(a, b)


@LAWS
@given(contents, contents, contents)
def test_merge_is_associative(a, b, c):
    left = merged_into(keyspace(a), merged_into(keyspace(b), keyspace(c)))
    right = merged_into(merged_into(keyspace(a), keyspace(b)), keyspace(c))
    assert export(left) == export(right) == join(a, b, c)
    assert left.tree == right.tree and left.tree.root == right.tree.root


@LAWS
@given(contents)
def test_merge_is_idempotent(a):
    ks = keyspace(a)
    before, root = export(ks), ks.tree.root
    assert not any(ks.merge(key, state) for key, state in a.items())  # nothing grew
    flushed = ks.flush()
    assert flushed.changed == {} and flushed.local == {} and flushed.new_slots == []
    assert export(ks) == before and ks.tree.root == root


@LAWS
@given(contents, contents)
def test_merge_is_an_upper_bound_and_says_whether_it_grew(a, b):
    ks = keyspace(a)
    grew = {key: ks.merge(key, state) for key, state in b.items()}
    for key, state in b.items():
        # Grew: the stored state changed (an all-zero record of a new slot counts too,
        # though ``dominates`` reads a missing slot as zeros).
        assert grew[key] == (pncounter.merge(a.get(key, {}), state) != a.get(key, {}))
        assert ks.dominates(key, state) and ks.dominates(key, a.get(key, {}))
    ks.flush()
    for key in set(a) | set(b):
        assert ks.value(key, 0) == pncounter.value(join(a, b).get(key, {}), 0)


# --------------------------------------------------------------------------- histories


def key_steps(nodes: int) -> st.SearchStrategy[tuple]:
    node, key = st.integers(0, nodes - 1), st.sampled_from(KEYS[:2])
    return st.one_of(
        st.tuples(st.just("add"), node, key, amounts),
        st.tuples(st.just("reset"), node, key),
        st.tuples(st.just("merge"), node, node),
        st.tuples(st.just("flush"), node),
    )


class Replicas:
    """``nodes`` keyspaces, each with its own slot, and an event model per key."""

    def __init__(self, nodes: int) -> None:
        self.spaces = [Keyspace() for _ in range(nodes)]
        self.slots = [ks.slots.intern(slot_of(i)) for i, ks in enumerate(self.spaces)]
        self.models = {key: Model.of(nodes) for key in KEYS}
        #: Every batch's delta (Flushed.local), in the order the batches ended.
        self.deltas: list[dict[str, dict]] = []

    def run(self, history: list[tuple]) -> None:
        for step in history:
            getattr(self, step[0])(*step[1:])
        for i in range(len(self.spaces)):
            self.flush(i)

    def add(self, i: int, key: str, amount: int) -> None:
        self.spaces[i].add(key, self.slots[i], amount, 0)
        self.models[key].add(i, amount)

    def reset(self, i: int, key: str) -> None:
        self.spaces[i].reset(key, 0)
        self.models[key].reset(i)

    def merge(self, src: int, dst: int) -> None:
        for key, state in export(self.spaces[src]).items():
            self.spaces[dst].merge(key, state)
        for model in self.models.values():
            model.merge(src, dst)

    def flush(self, i: int) -> None:
        flushed = self.spaces[i].flush()
        if flushed.local:
            self.deltas.append(flushed.local)


@HISTORIES
@given(st.lists(key_steps(3), max_size=30))
def test_every_history_matches_the_event_model_per_key(history):
    replicas = Replicas(3)
    replicas.run(history)
    for i, ks in enumerate(replicas.spaces):
        for key in KEYS:
            assert ks.value(key, 0) == replicas.models[key].value(i), (i, key)
        assert ks.live == sum(ks.exists(k, 0) for k in KEYS)
    union = join(*(export(ks) for ks in replicas.spaces))
    for key in KEYS:
        assert pncounter.value(union.get(key, {}), 0) == replicas.models[key].total()


@HISTORIES
@given(st.lists(key_steps(3), max_size=30), st.data())
def test_deltas_in_any_order_or_twice_equal_the_full_state_merge(history, data):
    """Each batch publishes only the records its node changed; a keyspace that receives
    every delta - reordered, some twice - holds exactly the join of all replicas."""
    replicas = Replicas(3)
    replicas.run(history)
    deltas = replicas.deltas
    again = data.draw(st.lists(st.sampled_from(range(len(deltas))), max_size=5)
                      if deltas else st.just([]))
    order = data.draw(st.permutations(list(range(len(deltas))) + again))
    note(f"deltas={deltas} order={order}")
    receiver = Keyspace()
    flush_every = data.draw(st.integers(1, 4))
    for n, i in enumerate(order):
        for key, state in deltas[i].items():
            receiver.merge(key, state)
        if n % flush_every == 0:
            assert receiver.flush().local == {}  # merged, not changed here: no delta
    receiver.flush()
    union = join(*(export(ks) for ks in replicas.spaces))
    assert export(receiver) == union
    for key in KEYS:
        assert receiver.value(key, 0) == replicas.models[key].total()
    # Same content, same tree, whatever the order the changes came in.
    full = keyspace(union)
    assert receiver.tree == full.tree and receiver.tree.root == full.tree.root


def test_worked_example_reset_against_a_concurrent_increment_both_ways():
    """Two replicas share 5 (from a); a resets while b adds 3; merged both ways, 3."""
    a, b = Keyspace(), Keyspace()
    sa, sb = a.slots.intern(A), b.slots.intern(B)
    a.add("k", sa, 5, 0)
    b.merge("k", a.state("k"))
    a.flush()
    b.flush()
    assert a.reset("k", 0) == {A: (5, 0, 5, 0)}  # the records written: what it observed
    b.add("k", sb, 3, 0)
    delta_a, delta_b = a.flush().local, b.flush().local
    assert delta_a == {"k": {A: (5, 0, 5, 0)}} and delta_b == {"k": {B: (3, 0, 0, 0)}}
    for x, delta in ((a, delta_b), (b, delta_a)):
        x.merge("k", delta["k"])
        x.flush()
    assert a.value("k", 0) == b.value("k", 0) == 3
    assert a.state("k") == b.state("k") == {A: (5, 0, 5, 0), B: (3, 0, 0, 0)}
    assert a.tree == b.tree


# --------------------------------------------------------------------------- steps, bounds


@LAWS
@given(states, amounts)
def test_add_agrees_with_the_pure_model(state, step):
    ks = keyspace({"k": state})
    slot = ks.slots.intern(A)
    expected = pncounter.add(state, A, step, 0)
    assert ks.add("k", slot, step, 0) == (*expected[A], 0)[:5]
    assert ks.state("k") == expected and ks.value("k", 0) == pncounter.value(expected, 0)


def test_a_zero_step_is_refused_like_the_pure_model():
    ks = Keyspace()
    with pytest.raises(ValueError):
        ks.add("k", ks.slots.intern(A), 0, 0)
    assert "k" not in ks or ks.state("k") == {}
    assert ks.flush().changed == {} and "k" not in ks


@pytest.mark.parametrize("sign", [1, -1])
def test_a_step_past_the_bound_raises_overflow_and_changes_nothing(sign):
    near = (MAX_TOTAL - 1, 0, 0, 0) if sign > 0 else (0, MAX_TOTAL - 1, 0, 0)
    ks = keyspace({"k": {B: near}})
    root, slot = ks.tree.root, ks.slots.intern(A)
    with pytest.raises(Overflow):
        ks.add("k", slot, 2 * sign, 0)
    assert ks.state("k") == {B: near}
    flushed = ks.flush()
    assert flushed.changed == {} and flushed.local == {} and ks.tree.root == root
    ks.add("k", slot, sign, 0)  # exactly to the bound is fine
    assert ks.value("k", 0) == sign * MAX_TOTAL
    with pytest.raises(Overflow):
        ks.add("k", slot, sign, 0)
    with pytest.raises(Overflow):  # a new key at once past the bound
        ks.add("new", slot, sign * (MAX_TOTAL + 1), 0)
    flushed = ks.flush()
    assert set(flushed.changed) == {"k"} and "new" not in ks


def test_a_merge_of_valid_records_is_never_refused_and_reads_saturate():
    """Legal concurrent steps can sum past 2**63-1 (pncounter's "Bounds"): merges take
    any valid records; the value reads saturated; steps past the live bound are refused;
    a reset makes the key take steps again."""
    ks = keyspace({"k": {A: (MAX_TOTAL - 5, 0, 0, 0)}})
    assert ks.merge("k", {B: (6, 0, 0, 0)})
    assert ks.merge("k", {slot_of(2): (MAX_TOTAL, 0, 0, 0)})
    assert ks.value("k", 0) == MAX_TOTAL  # exact: 2 * MAX_TOTAL + 1
    with pytest.raises(Overflow):
        ks.add("k", ks.slots.intern(B), 1, 0)
    assert ks.add("k", ks.slots.intern(B), -1, 0) == (6, 1, 0, 0, 0)  # the other way is open
    assert ks.value("k", 0) == MAX_TOTAL
    ks.reset("k", 0)
    assert ks.value("k", 0) == 0
    assert ks.add("k", ks.slots.intern(B), 7, 0) == (13, 1, 6, 1, 0)
    assert ks.value("k", 0) == 7
    ks.flush()
    assert ks.value("k", 0) == 7
    ks.merge("d", {A: (0, MAX_TOTAL, 0, 0), B: (0, 9, 0, 0)})
    assert ks.value("d", 0) == -MAX_TOTAL
    ks.flush()
    assert ks.value("d", 0) == -MAX_TOTAL
    assert ks.list_keys("d", None, 1000, 0)[0] == [("d", -MAX_TOTAL)]


def test_a_slot_at_its_own_bound_takes_no_more_steps_that_way():
    """A record never shrinks: a node whose own p is 2**63-1 cannot add to that key
    (pncounter's "Bounds", what stays), even after a reset; decrements still work."""
    ks = keyspace({"k": {A: (MAX_TOTAL, 0, 0, 0)}})
    ks.reset("k", 0)
    slot = ks.slots.intern(A)
    with pytest.raises(Overflow):
        ks.add("k", slot, 1, 0)
    assert ks.add("k", slot, -1, 0) == (MAX_TOTAL, 1, MAX_TOTAL, 0, 0)
    assert ks.add("k", ks.slots.intern(B), 1, 0) == (1, 0, 0, 0, 0)


# --------------------------------------------------------------------------- flush, reads


def test_flush_reports_what_changed_what_is_local_and_new_slots():
    ks = Keyspace()
    mine = ks.slots.intern(A)
    first = ks.flush()
    assert first.new_slots == [(0, A)] and first.changed == {}
    ks.add("x", mine, 2, 0)
    ks.add("x", mine, -1, 0)
    ks.merge("y", {B: (4, 0, 0, 0)})  # learned: persisted, not published
    ks.merge("x", {B: (1, 0, 0, 0)})
    out = ks.flush()
    assert set(out.changed) == {"x", "y"}
    assert out.local == {"x": {A: (2, 1, 0, 0)}}
    assert out.new_slots == [(1, B)]
    assert unpack(out.changed["x"]) == {0: [2, 1, 0, 0, 0], 1: [1, 0, 0, 0, 0]}
    assert not ks.dirty
    # A reset publishes every record it raised, its own slot's and others'.
    assert ks.reset("x", 0) == {A: (2, 1, 2, 1), B: (1, 0, 1, 0)}
    assert ks.dirty
    out = ks.flush()
    assert out.local == {"x": {A: (2, 1, 2, 1), B: (1, 0, 1, 0)}}
    assert ks.value("x", 0) == 0 and not ks.exists("x", 0) and ks.live == 1  # y only


def test_reset_of_an_unknown_key_writes_nothing():
    ks = Keyspace()
    assert ks.reset("nothing", 0) == {}
    assert ks.flush().changed == {} and len(ks) == 0 and ks.value("nothing", 0) == 0


def test_len_contains_and_a_key_never_written_reads_zero():
    ks = keyspace({"a": {A: (1, 0, 0, 0)}, "b": {A: (1, 0, 1, 0)}})
    assert len(ks) == 2 and "a" in ks and "b" in ks and "c" not in ks
    assert ks.value("c", 0) == 0 and ks.state("c") == {} and ks.key_hash("c") == 0
    ks.add("c", ks.slots.intern(B), 1, 0)
    assert len(ks) == 3 and "c" in ks  # a hot key counts before its flush


def test_list_keys_pages_live_keys_in_order():
    ks = Keyspace()
    slot = ks.slots.intern(A)
    names = [f"p{i:02d}" for i in range(25)] + ["q1", "ключ", "a"]
    for i, key in enumerate(names):
        ks.add(key, slot, i + 1, 0)
    ks.flush()
    ks.reset("p03", 0)
    ks.flush()
    page, more = ks.list_keys("p", None, 10, 0)
    assert more and [k for k, _ in page] == [f"p{i:02d}" for i in range(11) if i != 3]
    assert page[0] == ("p00", 1)
    rest, more = ks.list_keys("p", page[-1][0], 100, 0)
    assert not more and [k for k, _ in rest] == [f"p{i:02d}" for i in range(11, 25)]
    everything, more = ks.list_keys("", None, 1000, 0)
    assert not more and [k for k, _ in everything] == sorted(set(names) - {"p03"})
    # Keys written after the index was built are listed too.
    ks.add("p03", slot, 7, 0)
    ks.add("p99", slot, 1, 0)
    ks.flush()
    assert ks.list_keys("p9", None, 1000, 0)[0] == [("p99", 1)]
    assert ("p03", 7) in ks.list_keys("p0", None, 1000, 0)[0]
    # ``after`` before the prefix starts at the prefix; a limit of exactly the rest.
    assert ks.list_keys("q", "a", 1, 0) == ([("q1", 26)], False)


def test_merge_many_joins_every_key_whatever_its_sums():
    ks = Keyspace()
    ks.merge("a", {A: (MAX_TOTAL - 1, 0, 0, 0)})
    ks.flush()
    assert ks.merge_many({"b": {A: (1, 0, 0, 0)}, "a": {B: (2, 0, 0, 0)}}) == 2
    assert ks.merge_many({"b": {A: (1, 0, 0, 0)}}) == 0  # nothing grew
    assert ks.value("a", 0) == MAX_TOTAL and ks.value("b", 0) == 1
    assert set(ks.flush().changed) == {"a", "b"}


def _interned(content: dict[str, dict]) -> Keyspace:
    """``keyspace(content)`` whose slot table already holds every slot name the
    strategies draw, so merges into held keys take ``merge_many``'s packed path."""
    ks = Keyspace()
    for name in (A, B, slot_of(2)):
        ks.slots.intern(name)
    for node in range(1, 5):
        for incarnation in INCARNATIONS:
            ks.slots.intern(make_slot(node, incarnation))
    for key, state in content.items():
        ks.merge(key, state)
    ks.flush()
    return ks


@HISTORIES
@given(contents, st.lists(contents, min_size=1, max_size=3), st.sampled_from(KEYS))
def test_merge_many_into_held_keys_stores_what_merge_and_flush_would(held, batches, added):
    """Keys held and not changed in this batch are merged straight into their packed
    state (``Keyspace._merge_packed``): after several merges and an increment in one
    batch, the packed states, tree, live count and flush report are the general path's."""
    fast, slow = _interned(held), _interned(held)
    slow._merge_packed = lambda key, old, state: None  # type: ignore[method-assign]
    for incoming in batches:
        assert fast.merge_many(incoming) == slow.merge_many(incoming)
    slot = fast.slots.index[A]
    assert fast.add(added, slot, 3, 0) == slow.add(added, slot, 3, 0)
    assert fast.value(added, 0) == slow.value(added, 0)
    out_fast, out_slow = fast.flush(), slow.flush()
    assert out_fast.changed == out_slow.changed
    assert out_fast.local == out_slow.local
    assert fast._packed == slow._packed
    assert fast.tree == slow.tree and fast.tree.root == slow.tree.root
    assert fast.live == slow.live


def test_merge_many_into_a_held_key_past_the_old_bound_is_joined():
    """The packed path (``_merge_packed``) joins what 0.2 refused (sums past 2**63-1)."""
    ks = _interned({"a": {A: (MAX_TOTAL - 1, 0, 0, 0), B: (0, 5, 0, 0)},
                    "b": {A: (1, 0, 0, 0)}})
    assert ks.merge_many({"b": {A: (2, 0, 0, 0)}, "a": {B: (2, 5, 0, 0)}}) == 2
    assert ks.merge_many({"a": {B: (2, 6, 0, 0), slot_of(2): (0, MAX_TOTAL, 0, 0)}}) == 1
    assert ks.state("a") == {A: (MAX_TOTAL - 1, 0, 0, 0), B: (2, 6, 0, 0),
                             slot_of(2): (0, MAX_TOTAL, 0, 0)}
    assert ks.value("a", 0) == -5  # (MAX_TOTAL + 1) - (MAX_TOTAL + 6): exact here
    assert ks.merge_many({"a": {B: (2, 6, 1, 0)}}) == 1  # a base alone is growth
    assert ks.merge_many({"a": {B: (2, 6, 1, 0)}}) == 0
    ks.flush()
    assert ks.value("a", 0) == -6


def test_merge_many_into_held_keys_counts_keys_that_become_live_or_reset():
    ks = _interned({"r": {A: (3, 0, 3, 0)}, "l": {A: (3, 0, 0, 0), B: (1, 0, 0, 0)}})
    assert ks.live == 1 and not ks.exists("r", 0)
    assert ks.merge_many({"r": {B: (1, 0, 0, 0)}}) == 1  # a reset key written again
    assert ks.exists("r", 0) and ks.live == 2
    assert ks.merge_many({"l": {A: (3, 0, 3, 0), B: (1, 0, 1, 0)}}) == 1  # reset everywhere
    assert not ks.exists("l", 0) and ks.live == 1
    ks.flush()
    assert [k for k, _ in ks.list_keys("", None, 1000, 0)[0]] == ["r"]


@given(contents, contents, st.booleans())
def test_merge_many_into_absent_keys_stores_what_merge_and_flush_would(held, incoming,
                                                                         flushed):
    """merge_many packs keys it holds nothing of at once (the bootstrap's fast path): the
    packed states, tree, live count and flush report are those of the general path."""
    fast, slow = keyspace(held, flush=flushed), keyspace(held, flush=flushed)
    grown = fast.merge_many(incoming)
    slow_grown = 0
    for key, state in incoming.items():
        slow_grown += slow.merge(key, state)
    out_fast, out_slow = fast.flush(), slow.flush()
    assert grown == slow_grown
    assert out_fast.changed == out_slow.changed
    assert out_fast.new_slots == out_slow.new_slots
    assert fast._packed == slow._packed
    assert fast.tree == slow.tree and fast.tree.root == slow.tree.root
    assert fast.live == slow.live and len(fast) == len(slow)
    assert sorted(fast.keys_in_segments(range(1 << 16))) == sorted(
        slow.keys_in_segments(range(1 << 16)))
