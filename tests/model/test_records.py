"""The packed form's one join (zcounter.model.records): ``grow`` and ``join`` against
the reference ``pncounter.merge``/``join_record`` on generated states, and what they
report (the records that grew, with what was held)."""

from __future__ import annotations

from histories import LAWS, records, states
from hypothesis import given
from hypothesis import strategies as st

from zcounter.model import pncounter
from zcounter.model.page import REC_INTS
from zcounter.model.records import SlotTable, flatten, grow, join, pack, unpack_flat


def by_index(state: pncounter.State, table: SlotTable) -> dict[int, pncounter.Record]:
    return {table.intern(name): rec for name, rec in state.items()}


def by_name(flat: list[int], table: SlotTable) -> dict[str, pncounter.Record]:
    it = iter(flat)
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
    """Packed records (in slot order, as ``unpack_flat`` gives them) joined with any
    records, in any order of the incoming slots, are ``pncounter.merge`` of the two."""
    table = SlotTable(data.draw(st.permutations(sorted(set(held) | set(incoming)))))
    flat = flatten(by_index(held, table))
    assert list(unpack_flat(pack(by_index(held, table)))) == flat  # the packed order
    order = data.draw(st.permutations(list(by_index(incoming, table).items())))
    before = list(flat)
    result = join(flat, order)
    assert flat == before  # held is not changed
    merged = pncounter.merge(held, incoming)
    if merged == dict(held):
        assert result is None
        return
    assert result is not None
    new, grown = result
    assert by_name(new, table) == merged
    slots = new[0::REC_INTS]
    assert slots == sorted(slots)
    # What grew: exactly the slots whose record changed, in incoming order, with the
    # record held before (None for a slot not held) and the joined one.
    changed = [s for s, _ in order if held.get(table.names[s]) != merged[table.names[s]]]
    assert [s for s, _, _ in grown] == changed
    for s, old, rec in grown:
        assert old == held.get(table.names[s])
        assert rec == merged[table.names[s]]
