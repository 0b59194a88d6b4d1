"""A page of states: many keys' records, with their slot names written once.

What a repair answer carries (:class:`~zcounter.protocol.messages.SyncStates`): up to
4,000 keys, each with a record per slot.  By name (``{key: {slot: [p, ...]}}``, as the
other messages carry states) a page of a million-key bootstrap repeats the same three
slot names three times per key, and both ends pay for it in Python: the answering node
built a dict per key and a list per record, the receiving node parsed them back into
dicts and tuples and checked every slot name.  Measured (py-spy ``--gil``, a wiped node
bootstrapping a million keys, WRITEUP.md section 3.5): reading states and encoding them
were 52 % and 45 % of the answering node's samples holding the GIL, and decoding them 39 %
of the receiving node's.  With this form the bootstrap took 18.1-22.4 s (three runs) instead
of 29.9.

Here a page carries its slot names once, and each key's records as one flat list of
integers, ``[F, S, D, i, p, n, bp, bn, b, i, p, ...]``: the key's meta (issue 21; zeros
when it has none), then its records (``i`` indexes :attr:`StatePage.slots`, strictly
increasing within a key; ``b`` the record's birth).  The answering node uses its own
slot table as the page's, so a key's list is its packed records unpacked by one ``struct`` call
(:meth:`.Keyspace.page`); the receiving node checks and stores a key it lacks without a
Python object per record (:meth:`.Keyspace.merge_page`).

A page is also a read-only ``Mapping`` of key -> {slot name: record}, decoded on access,
so code that only looks at a few keys (give-backs, the simulator's checks) reads it like
any other states.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from .expiry import DEFAULT_META, META
from .pncounter import Record, State, meta_of, normal

#: Integers per record in a page: slot index, p, n, bp, bn, b.
REC_INTS = 6
#: Integers of a key's meta (F, S, D), at the head of its flat list.
META_INTS = 3


@dataclass(frozen=True, slots=True)
class StatePage(Mapping[str, dict[str, Record]]):
    """States of many keys.  Invariants (the codec checks them on what a peer sent,
    :meth:`.Keyspace.page` builds them): every list holds whole records with slot
    indices strictly increasing and below ``len(slots)``, after the key's meta; every
    record is valid (``bp <= p``, ``bn <= n``, all in 0..2**63-1) and so is every meta
    (three integers in 0..2**63-1); slot names are distinct.  (No bound
    on a key's sums: pncounter's "Bounds".)"""

    slots: tuple[str, ...]
    records: dict[str, list[int]]

    @classmethod
    def of(cls, states: Mapping[str, State]) -> StatePage:
        """A page holding ``states`` (by slot name); slots indexed in sorted order."""
        names = sorted({slot for state in states.values() for slot in state
                        if slot != META})
        index = {name: i for i, name in enumerate(names)}
        records: dict[str, list[int]] = {}
        for key, state in states.items():
            flat: list[int] = list(meta_of(state))
            for name in sorted((s for s in state if s != META), key=index.__getitem__):
                rec = state[name]
                flat += (index[name], rec[0], rec[1], rec[2], rec[3],
                         rec[4] if len(rec) > 4 else 0)
            records[key] = flat
        return cls(tuple(names), records)

    def __getitem__(self, key: str) -> dict[str, Record]:
        flat = self.records[key]
        names = self.slots
        it = iter(flat)
        meta = (next(it), next(it), next(it))
        out: dict[str, Record] = {names[i]: normal(p, n, bp, bn, b)
                                  for i, p, n, bp, bn, b in zip(it, it, it, it, it, it,
                                                                strict=True)}
        if meta != DEFAULT_META:
            out[META] = meta
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def used_indexes(self) -> set[int]:
        """Indices into :attr:`slots` that some record uses (the table may hold more)."""
        used: set[int] = set()
        for flat in self.records.values():
            used.update(flat[META_INTS::REC_INTS])
        return used

    def used_slots(self) -> set[str]:
        """Names of the slots some record uses."""
        return {self.slots[i] for i in self.used_indexes()}
