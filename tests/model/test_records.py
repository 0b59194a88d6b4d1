"""The keyspace's one join (zcounter.model.records): ``grow`` and ``join`` against the
reference ``pncounter.join_record`` and ``pncounter.merge`` on generated states, and the
packed state, hash delta and live delta ``join`` reports."""

from __future__ import annotations

from histories import LAWS, records, states, timed_records, timed_states
from hypothesis import given
from hypothesis import strategies as st

from zcounter.model import pncounter
from zcounter.model.expiry import META
from zcounter.model.hashtree import key_digest, segment_of
from zcounter.model.page import REC_INTS
from zcounter.model.records import (
    SlotTable,
    grow,
    header,
    join,
    meta_of,
    pack_state,
    unpack_flat,
)


def by_index(state: pncounter.State, table: SlotTable) -> dict[int, pncounter.Record]:
    return {table.intern(name): rec for name, rec in state.items() if name != META}


def by_name(packed: bytes, table: SlotTable) -> dict[str, pncounter.Record]:
    it = iter(unpack_flat(packed))
    out = {table.names[s]: pncounter.normal(p, n, bp, bn, b)
           for s, p, n, bp, bn, b in zip(it, it, it, it, it, it, strict=True)}
    if meta_of(packed) != (0, 0, 0):
        out[META] = meta_of(packed)
    return out


def five(rec: pncounter.Record) -> tuple[int, ...]:
    return (*rec[:4], pncounter.birth(rec))


@LAWS
@given(st.one_of(records(), timed_records()), st.one_of(records(), timed_records()))
def test_grow_is_join_record_when_it_grows(held, rec):
    joined = five(pncounter.join_record(held, rec))
    assert grow(five(held), rec) == (None if joined == five(held) else joined)
    assert grow(list(five(held)), rec) == grow(five(held), rec)  # a hot entry's list


@LAWS
@given(st.one_of(states, timed_states()), st.one_of(states, timed_states()), st.data())
def test_join_is_the_reference_merge(held, incoming, data):
    """A packed state joined with any records, in any order of the incoming slots and
    any slot numbering, is ``pncounter.merge`` of the two, with the header (hash, live)
    of that state packed afresh, and reports what the tree and the live count move by."""
    table = SlotTable(data.draw(st.permutations(sorted((set(held) | set(incoming)) - {META}))))
    old = pack_state("k", by_index(held, table), table.name_bytes, pncounter.meta_of(held))
    order = data.draw(st.permutations(list(by_index(incoming, table).items())))
    result = join("k", old, order, table.name_bytes, incoming.get(META))
    merged = pncounter.merge(held, incoming)
    if merged == dict(held):
        assert result is None
        return
    assert result is not None
    new, segment, delta, live_delta = result
    assert by_name(new, table) == merged
    slots = list(unpack_flat(new)[0::REC_INTS])
    assert slots == sorted(slots)  # records stay in slot order
    assert new == pack_state("k", by_index(merged, table), table.name_bytes,
                             pncounter.meta_of(merged))
    assert segment == segment_of(key_digest(b"k"))
    assert delta == header(old)[0] ^ header(new)[0]
    # The live flag is existence at the floor F (no deadline applied: no wall time).
    assert live_delta == (pncounter.exists({**merged, META: (*pncounter.meta_of(merged)[:2], 0)}, 0)
                          - pncounter.exists({**held, META: (*pncounter.meta_of(held)[:2], 0)}, 0))
