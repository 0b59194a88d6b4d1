"""Pages of states (zcounter.model.page) and the keyspace's two ends of them:
``Keyspace.page`` (what a repair answers) and ``Keyspace.merge_page`` (what the
repaired node stores), against the by-name path they replace."""

from __future__ import annotations

import pytest
from histories import LAWS, slot_of
from hypothesis import given
from hypothesis import strategies as st
from test_keyspace import KEYS, contents, export, keyspace

from zcounter.model import keyspace as keyspace_module
from zcounter.model.keyspace import Keyspace
from zcounter.model.page import StatePage
from zcounter.model.pncounter import MAX_TOTAL

A, B = slot_of(0), slot_of(1)


def test_a_page_is_a_mapping_of_states_by_slot_name():
    page = StatePage.of({"k": {B: (3, 1, 2, 0), A: (1, 0, 0, 0)}, "e": {}})
    assert page.slots == tuple(sorted((A, B)))
    # The meta (none: zeros), then (slot, p, n, bp, bn, b) per record.
    assert page.records["k"] == [0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 1, 2, 0, 0]
    assert dict(page) == {"k": {A: (1, 0, 0, 0), B: (3, 1, 2, 0)}, "e": {}}
    assert page.get("missing") is None and len(page) == 2 and "k" in page
    assert page.used_slots() == {A, B}


@LAWS
@given(contents, st.booleans(), st.booleans())
def test_a_page_holds_exactly_the_keyspace_states(held, flushed, renumber):
    """Read from packed keys and from keys changed in the open batch; with a long slot
    table (``renumber``) the page names only the slots it uses."""
    ks = keyspace(held, flush=flushed)
    limit = keyspace_module.PAGE_SLOTS_DIRECT
    keyspace_module.PAGE_SLOTS_DIRECT = 0 if renumber else limit
    try:
        page = ks.page([*KEYS, "never-written"])
    finally:
        keyspace_module.PAGE_SLOTS_DIRECT = limit
    assert dict(page) == export(ks)
    if renumber:
        assert set(page.slots) == page.used_slots()
    for flat in page.records.values():  # the invariant the codec checks
        indexes = flat[3::6]
        assert indexes == sorted(set(indexes)) and max(indexes) < len(page.slots)


@LAWS
@given(contents, contents, st.booleans())
def test_merge_page_stores_what_merge_many_would(held, incoming, flushed):
    """Keys the node lacks go the flat path, the others the by-name one: states, tree,
    live count, what the batch reports and how many keys grew are the same."""
    fast, slow = keyspace(held, flush=flushed), keyspace(held, flush=flushed)
    grown = fast.merge_page(StatePage.of(incoming))
    assert grown == slow.merge_many(incoming)
    out_fast, out_slow = fast.flush(), slow.flush()
    assert set(out_fast.changed) == set(out_slow.changed)
    assert {n for _, n in out_fast.new_slots} == {n for _, n in out_slow.new_slots}
    assert export(fast) == export(slow)
    for key in KEYS:
        assert fast.key_hash(key) == slow.key_hash(key)
        assert fast.exists(key, 0) == slow.exists(key, 0)
    assert fast.tree == slow.tree and fast.live == slow.live and len(fast) == len(slow)
    assert sorted(fast.keys_in_segments(range(1 << 16))) == sorted(
        slow.keys_in_segments(range(1 << 16)))


def test_a_page_crosses_between_keyspaces_with_different_slot_indices():
    """Slot indices are local to a node: the receiver interns the page's names."""
    src, dst = Keyspace(), Keyspace()
    src.merge("a", {B: (2, 0, 0, 0), A: (1, 0, 0, 0)})
    src.flush()
    dst.merge("b", {slot_of(2): (5, 0, 0, 0)})
    dst.flush()
    assert dst.merge_page(src.page(["a"])) == 1
    dst.flush()
    assert dst.state("a") == src.state("a") and dst.key_hash("a") == src.key_hash("a")
    assert dst.slots.names[0] == slot_of(2)


def test_merge_page_joins_every_key_whatever_its_sums():
    ks = Keyspace()
    ks.merge("a", {A: (MAX_TOTAL - 1, 0, 0, 0)})
    ks.flush()
    page = StatePage.of({"a": {B: (2, 0, 0, 0)}, "new": {A: (1, 0, 0, 0)}})
    assert ks.merge_page(page) == 2
    assert ks.value("new", 0) == 1 and ks.value("a", 0) == MAX_TOTAL  # saturated
    assert set(ks.flush().changed) == {"a", "new"}


@pytest.mark.parametrize("count", [1, 3])
def test_record_count(count):
    ks = Keyspace()
    ks.merge("k", {slot_of(i): (1, 0, 0, 0) for i in range(count)})
    assert ks.record_count("k") == count  # open batch
    ks.flush()
    assert ks.record_count("k") == count and ks.record_count("other") == 0
