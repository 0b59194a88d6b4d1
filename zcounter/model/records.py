"""A key's records, packed, and the one join of records the keyspace uses.

The packed form (:mod:`.keyspace` says why it is packed): a 9-byte header, the key's hash
(the XOR of its records' hashes, :mod:`.hashtree`) and a flag saying whether it is live,
then the records in slot order as ``(slot index u32, p, n, bp, bn u64)``, 36 bytes each.
Slot indices are local to a node (:class:`SlotTable`); the wire and the hash tree name
slots.

:func:`grow` is the one place the keyspace joins two records (the per-field maximum of
the reference, :func:`.pncounter.join_record`), and says whether the join grew anything.
Until issue 20 the join was written out by hand in four places of the keyspace, kept
equal only by tests.  Every merge into a key the node holds goes through it: into a
packed key through :func:`join` (``Keyspace._merge_packed``: a peer's delta, a repair
page), which also keeps the packed header right and says what the hash tree and the
count of live keys move by; into a key changed in the open batch record by record
(``Keyspace._join_hot``: its records are unpacked lists).  A key the node holds nothing
of needs no join (the join of nothing and a state is that state): it is only hashed and
packed (``Keyspace._adopt``, ``_adopt_flat``).  ``tests/model/test_records.py`` checks
:func:`grow` and :func:`join` against ``pncounter``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence

from .hashtree import RECORD_FIELDS, key_digest, record_hash, segment_of, xxh64
from .page import REC_INTS
from .pncounter import Record

REC = struct.Struct("<IQQQQ")
#: Header of a packed state: the key's hash (XOR of its records' hashes) and flags.
HEAD = struct.Struct("<QB")
HEAD_SIZE = HEAD.size
LIVE = 1
_RECORDS: dict[int, struct.Struct] = {}

def records_struct(count: int) -> struct.Struct:
    """``count`` packed records: one unpack for a key's records (``Keyspace.page``)."""
    fmt = _RECORDS.get(count)
    if fmt is None:
        fmt = _RECORDS[count] = struct.Struct("<" + "IQQQQ" * count)
    return fmt


class SlotTable:
    """Slot names <-> small local indices."""

    __slots__ = ("_added", "index", "name_bytes", "names")

    def __init__(self, names: Iterable[str] = ()) -> None:
        self.names: list[str] = []
        self.name_bytes: list[bytes] = []
        self.index: dict[str, int] = {}
        self._added: list[tuple[int, str]] = []
        for name in names:
            self.intern(name)
        self._added.clear()

    def intern(self, name: str) -> int:
        idx = self.index.get(name)
        if idx is None:
            idx = len(self.names)
            self.names.append(name)
            self.name_bytes.append(name.encode())
            self.index[name] = idx
            self._added.append((idx, name))
        return idx

    def take_added(self) -> list[tuple[int, str]]:
        """Slots interned since the last call (to persist with the batch)."""
        added, self._added = self._added, []
        return added

    def __len__(self) -> int:
        return len(self.names)


# --------------------------------------------------------------------------- the join


def grow(held: Sequence[int], rec: Sequence[int]) -> Record | None:
    """The join of ``rec`` into the record ``held`` (:func:`.pncounter.join_record`: the
    per-field maximum) if it grows ``held``, else None.  The one place the keyspace
    computes a join of two records: :func:`join` (packed records) and
    ``Keyspace._join_hot`` (a key changed in the open batch) call it."""
    p, n, bp, bn = rec
    mp, mn, mbp, mbn = held
    if p > mp or n > mn or bp > mbp or bn > mbn:
        return (p if p > mp else mp, n if n > mn else mn,
                bp if bp > mbp else mbp, bn if bn > mbn else mbn)
    return None


def join(key: str, old: bytes, incoming: Iterable[tuple[int, Sequence[int]]],
         name_bytes: Sequence[bytes]) -> tuple[bytes, int, int, int] | None:
    """The CRDT join of ``incoming`` records (slot index, record; each slot once) into
    ``old``, the packed state of ``key``: per slot, :func:`grow`, or the one record there
    is.  Returns ``(new packed state, key's segment, hash delta, live delta)``, or None when
    nothing grew; the new state's header holds its hash (``old``'s XOR the delta: the
    old hashes of the records that grew out, their new ones in, :mod:`.hashtree`) and
    whether it is live; the delta is what the hash tree must XOR in, the live delta
    what the count of live keys moves by.  ``name_bytes`` names the slot indices.

    Written for speed (a peer's delta runs it once per key): the records are one
    ``struct`` unpack, a slot's offset is found in one slice of the slot indices, the
    records are copied only once something grows, only grown records are hashed
    (:func:`.hashtree.record_hash` inlined), and the result is packed in one call
    (:func:`pack_flat`)."""
    flat = records_struct((len(old) - HEAD_SIZE) // REC.size).unpack_from(old, HEAD_SIZE)
    slots = flat[0::REC_INTS]
    fields = RECORD_FIELDS.pack
    new: list[int] | None = None
    added: list[tuple[int, ...]] | None = None  # records of slots not held
    digest = -1  # a key digest is 0..2**64-1: computed once something grows
    delta = 0
    for s, rec in incoming:
        if s in slots:
            i = slots.index(s) * REC_INTS + 1
            mine = flat[i:i + 4]
            joined = grow(mine, rec)
            if joined is None:
                continue
            if new is None:
                new = list(flat)
            if digest < 0:
                digest = key_digest(key.encode())
            new[i:i + 4] = joined
            slot = name_bytes[s]
            delta ^= xxh64(fields(*mine) + slot, digest) ^ xxh64(fields(*joined) + slot, digest)
        else:
            if digest < 0:
                digest = key_digest(key.encode())
            if added is None:
                added = []
            added.append((s, *rec))
            delta ^= xxh64(fields(*rec) + name_bytes[s], digest)
    if digest < 0:
        return None
    if new is None:
        new = list(flat)
    if added:  # rare: a slot's first record of this key; keep records in slot order
        records = sorted([tuple(new[i:i + REC_INTS]) for i in range(0, len(new), REC_INTS)]
                         + added)
        new = [x for rec in records for x in rec]
    key_hash, flags = HEAD.unpack_from(old)
    packed, live = pack_flat(new, key_hash ^ delta)
    return packed, segment_of(digest), delta, live - (flags & LIVE)


# --------------------------------------------------------------------------- packing


def pack(records: Mapping[int, Sequence[int]], key_hash: int = 0) -> bytes:
    """Records (by slot index) with their header; ``key_hash`` must be the key's hash
    (:func:`pack_state` computes it) wherever the result is loaded into a keyspace."""
    return pack_flat(flatten(records), key_hash)[0]


def flatten(records: Mapping[int, Sequence[int]]) -> list[int]:
    """Records as one flat list ``[slot, p, n, bp, bn, ...]``, in slot order."""
    flat: list[int] = []
    for s in sorted(records):
        flat += (s, *records[s])
    return flat


def pack_flat(flat: Sequence[int], key_hash: int) -> tuple[bytes, bool]:
    """Records as one flat list in slot order (:func:`flatten`), packed with their
    header in one ``struct`` call; and whether they are live.  Every packing of a
    key's state goes through here: :func:`pack`, :meth:`.Keyspace.flush` (once per
    increment under keys drawn uniformly) and the keyspace's packed merges."""
    live = False
    for i in range(0, len(flat), REC_INTS):
        if flat[i + 1] > flat[i + 3] or flat[i + 2] > flat[i + 4]:
            live = True
            break
    return (HEAD.pack(key_hash, LIVE if live else 0)
            + records_struct(len(flat) // REC_INTS).pack(*flat)), live


def pack_state(key: str, records: Mapping[int, Sequence[int]],
               slot_names: Sequence[bytes]) -> bytes:
    """:func:`pack` with the key's hash computed from its records."""
    digest = key_digest(key.encode())
    h = 0
    for s, rec in records.items():
        h ^= record_hash(digest, slot_names[s], rec)
    return pack(records, h)


def unpack(packed: bytes) -> dict[int, list[int]]:
    return {s: [p, n, bp, bn] for s, p, n, bp, bn
            in REC.iter_unpack(memoryview(packed)[HEAD_SIZE:])}


def unpack_flat(packed: bytes) -> tuple[int, ...]:
    """A packed state's records as one flat tuple ``(slot, p, n, bp, bn, ...)``."""
    return records_struct((len(packed) - HEAD_SIZE) // REC.size).unpack_from(packed, HEAD_SIZE)


def header(packed: bytes) -> tuple[int, bool]:
    """(key hash, live) from a packed state, without unpacking its records."""
    key_hash, flags = HEAD.unpack_from(packed)
    return key_hash, bool(flags & LIVE)


def value_of(records: Iterable[Sequence[int]]) -> int:
    """The exact (unsaturated) value of a key's records."""
    return sum(r[0] - r[2] - r[1] + r[3] for r in records)


def live_of(records: Iterable[Sequence[int]]) -> bool:
    return any(r[0] > r[2] or r[1] > r[3] for r in records)
