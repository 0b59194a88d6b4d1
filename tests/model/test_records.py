"""The keyspace's one join (zcounter.model.records): ``grow`` and ``join`` against the
reference ``pncounter.join_record`` and ``pncounter.merge`` on generated states, and the
packed state, hash delta and live delta ``join`` reports."""

from __future__ import annotations

from histories import LAWS, records, states
from hypothesis import given
from hypothesis import strategies as st

from zcounter.model import pncounter
from zcounter.model.hashtree import key_digest, segment_of
from zcounter.model.page import REC_INTS
from zcounter.model.records import SlotTable, grow, header, join, pack_state, unpack_flat


def by_index(state: pncounter.State, table: SlotTable) -> dict[int, pncounter.Record]:
    return {table.intern(name): rec for name, rec in state.items()}


def by_name(packed: bytes, table: SlotTable) -> dict[str, pncounter.Record]:
    it = iter(unpack_flat(packed))
    return {table.names[s]: (p, n, bp, bn) for s, p, n, bp, bn in zip(it, it, it, it, it,
                                                                         strict=True)}


@LAWS
@given(records(), records())
def test_grow_is_join_record_when_it_grows(held, rec):
    joined = pncounter.join_record(held, rec)
    assert grow(held, rec) == (None if joined == held else joined)
    assert grow(list(held), rec) == grow(held, rec)  # a hot entry's list, or a tuple


@LAWS
@given(states, states, st.data())
def test_join_is_the_reference_merge(held, incoming, data):
    """A packed state joined with any records, in any order of the incoming slots and
    any slot numbering, is ``pncounter.merge`` of the two, with the header (hash, live)
    of that state packed afresh, and reports what the tree and the live count move by."""
    table = SlotTable(data.draw(st.permutations(sorted(set(held) | set(incoming)))))
    old = pack_state("k", by_index(held, table), table.name_bytes)
    order = data.draw(st.permutations(list(by_index(incoming, table).items())))
    result = join("k", old, order, table.name_bytes)
    merged = pncounter.merge(held, incoming)
    if merged == dict(held):
        assert result is None
        return
    assert result is not None
    new, segment, delta, live_delta = result
    assert by_name(new, table) == merged
    slots = list(unpack_flat(new)[0::REC_INTS])
    assert slots == sorted(slots)  # records stay in slot order
    assert new == pack_state("k", by_index(merged, table), table.name_bytes)
    assert segment == segment_of(key_digest(b"k"))
    assert delta == header(old)[0] ^ header(new)[0]
    assert live_delta == pncounter.is_live(merged) - pncounter.is_live(held)
