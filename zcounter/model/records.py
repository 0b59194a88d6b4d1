"""A key's records, packed, and the one join of records the keyspace uses.

The packed form (:mod:`.keyspace` says why it is packed): a 33-byte header, the key's hash
(the XOR of its records' hashes and its meta's, :mod:`.hashtree`), flags, and the key's
meta ``(F, S, D)`` (issue 21, :mod:`.expiry`), then the records in slot order as
``(slot index u32, p, n, bp, bn, b u64)``, 44 bytes each.  Flags: bit 0 (``LIVE``) says
the key exists at its floor ``F`` (deadline not applied: that needs a wall time, which
a merge never takes; a read of a key with a deadline or a floor recomputes), bit 7
(``FORMAT``) marks this form.  A blob without it is 0.2's (9-byte header, 36-byte
records, no births, no meta): :func:`upgrade` converts it, which is how a 0.2 data
directory is read.  Slot indices are local to a node (:class:`SlotTable`); the wire and
the hash tree name slots.

:func:`grow` is the one place the keyspace joins two records (the per-field maximum of
the reference, :func:`.pncounter.join_record`, birth included), and says whether the
join grew anything.  Every merge into a key the node holds goes through it: into a
packed key through :func:`join` (``Keyspace._merge_packed``: a peer's delta, a repair
page), which also joins the meta, keeps the packed header right and says what the hash
tree and the count of live keys move by; into a key changed in the open batch record by
record (``Keyspace._join_hot``: its records are unpacked lists).  A key the node holds
nothing of needs no join (the join of nothing and a state is that state): it is only
hashed and packed (``Keyspace._adopt``, ``_adopt_flat``).  ``tests/model/test_records.py``
checks :func:`grow` and :func:`join` against ``pncounter``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence

from .expiry import DEFAULT_META, Meta, join_meta
from .hashtree import (
    BORN_FIELDS,
    RECORD_FIELDS,
    key_digest,
    meta_hash,
    record_hash,
    segment_of,
    xxh64,
)
from .page import REC_INTS

REC = struct.Struct("<IQQQQQ")
#: Header of a packed state: the key's hash, flags, and its meta (F, S, D).
HEAD = struct.Struct("<QBQQQ")
HEAD_SIZE = HEAD.size
LIVE = 1
#: Flag of this packed form (issue 21); a blob without it is 0.2's (:func:`upgrade`).
FORMAT = 0x80
#: 0.2's packed form: a 9-byte header (hash, flags), records of (slot, p, n, bp, bn).
OLD_HEAD = struct.Struct("<QB")
OLD_REC = struct.Struct("<IQQQQ")
_RECORDS: dict[int, struct.Struct] = {}

def records_struct(count: int) -> struct.Struct:
    """``count`` packed records: one unpack for a key's records (``Keyspace.page``)."""
    fmt = _RECORDS.get(count)
    if fmt is None:
        fmt = _RECORDS[count] = struct.Struct("<" + "IQQQQQ" * count)
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


def grow(held: Sequence[int], rec: Sequence[int]) -> tuple[int, int, int, int, int] | None:
    """The join of ``rec`` (4 or 5 fields) into the record ``held`` (5 fields;
    :func:`.pncounter.join_record`: the per-field maximum) if it grows ``held``, else
    None.  The one place the keyspace computes a join of two records: :func:`join`
    (packed records) and ``Keyspace._join_hot`` (a key changed in the open batch)."""
    p, n, bp, bn = rec[0], rec[1], rec[2], rec[3]
    b = rec[4] if len(rec) > 4 else 0
    mp, mn, mbp, mbn, mb = held
    if p > mp or n > mn or bp > mbp or bn > mbn or b > mb:
        return (p if p > mp else mp, n if n > mn else mn,
                bp if bp > mbp else mbp, bn if bn > mbn else mbn, b if b > mb else mb)
    return None


def hashed(rec: Sequence[int]) -> bytes:
    """A record's fields as hashed (:func:`.hashtree.record_hash`, without the slot)."""
    if rec[4]:
        return BORN_FIELDS.pack(rec[0], rec[1], rec[2], rec[3], rec[4])
    return RECORD_FIELDS.pack(rec[0], rec[1], rec[2], rec[3])


def join(key: str, old: bytes, incoming: Iterable[tuple[int, Sequence[int]]],
         name_bytes: Sequence[bytes], meta: Meta | None = None
         ) -> tuple[bytes, int, int, int] | None:
    """The CRDT join of ``incoming`` records (slot index, record; each slot once) and
    ``meta`` (None: none came) into ``old``, the packed state of ``key``: per slot,
    :func:`grow`, or the one record there is; the meta by :func:`.expiry.join_meta`.
    Returns ``(new packed state, key's segment, hash delta, live delta)``, or None when
    nothing grew; the new state's header holds its hash (``old``'s XOR the delta: the
    old hashes of what grew out, their new ones in, :mod:`.hashtree`) and whether it is
    live; the delta is what the hash tree must XOR in, the live delta what the count of
    live keys moves by.  ``name_bytes`` names the slot indices.

    Written for speed (a peer's delta runs it once per key): the records are one
    ``struct`` unpack, a slot's offset is found in one slice of the slot indices, the
    records are copied only once something grows, only grown records are hashed, and
    the result is packed in one call (:func:`pack_flat`)."""
    key_hash, flags, floor, set_ms, deadline = HEAD.unpack_from(old)
    held_meta = (floor, set_ms, deadline)
    flat = records_struct((len(old) - HEAD_SIZE) // REC.size).unpack_from(old, HEAD_SIZE)
    slots = flat[0::REC_INTS]
    new: list[int] | None = None
    added: list[tuple[int, ...]] | None = None  # records of slots not held
    digest = -1  # a key digest is 0..2**64-1: computed once something grows
    delta = 0
    new_meta = held_meta
    if meta is not None:
        new_meta = join_meta(held_meta, meta)
        if new_meta != held_meta:
            digest = key_digest(key.encode())
            delta = meta_hash(digest, held_meta) ^ meta_hash(digest, new_meta)
    for s, rec in incoming:
        if s in slots:
            i = slots.index(s) * REC_INTS + 1
            mine = flat[i:i + 5]
            joined = grow(mine, rec)
            if joined is None:
                continue
            if new is None:
                new = list(flat)
            if digest < 0:
                digest = key_digest(key.encode())
            new[i:i + 5] = joined
            slot = name_bytes[s]
            delta ^= xxh64(hashed(mine) + slot, digest) ^ xxh64(hashed(joined) + slot, digest)
        else:
            if digest < 0:
                digest = key_digest(key.encode())
            if added is None:
                added = []
            full = (rec[0], rec[1], rec[2], rec[3], rec[4] if len(rec) > 4 else 0)
            added.append((s, *full))
            delta ^= xxh64(hashed(full) + name_bytes[s], digest)
    if digest < 0:
        return None
    if new is None:
        new = list(flat)
    if added:  # rare: a slot's first record of this key; keep records in slot order
        records = sorted([tuple(new[i:i + REC_INTS]) for i in range(0, len(new), REC_INTS)]
                         + added)
        new = [x for rec in records for x in rec]
    packed, live = pack_flat(new, key_hash ^ delta, new_meta)
    return packed, segment_of(digest), delta, live - (flags & LIVE)


# --------------------------------------------------------------------------- packing


def pack(records: Mapping[int, Sequence[int]], key_hash: int = 0,
         meta: Meta = DEFAULT_META) -> bytes:
    """Records (by slot index, 5 fields) with their header; ``key_hash`` must be the
    key's hash (:func:`pack_state` computes it) wherever the result is loaded into a
    keyspace."""
    return pack_flat(flatten(records), key_hash, meta)[0]


def flatten(records: Mapping[int, Sequence[int]]) -> list[int]:
    """Records as one flat list ``[slot, p, n, bp, bn, b, ...]``, in slot order (a
    record of 4 fields is born at 0)."""
    flat: list[int] = []
    for s in sorted(records):
        r = records[s]
        flat += (s, r[0], r[1], r[2], r[3], r[4] if len(r) > 4 else 0)
    return flat


def pack_flat(flat: Sequence[int], key_hash: int, meta: Meta = DEFAULT_META
              ) -> tuple[bytes, bool]:
    """Records as one flat list in slot order (:func:`flatten`), packed with their
    header in one ``struct`` call; and whether the key exists at its floor (``LIVE``).
    Every packing of a key's state goes through here: :func:`pack`,
    :meth:`.Keyspace.flush` (once per increment under keys drawn uniformly) and the
    keyspace's packed merges."""
    floor = meta[0]
    live = False
    for i in range(0, len(flat), REC_INTS):
        if (flat[i + 1] > flat[i + 3] or flat[i + 2] > flat[i + 4]) and flat[i + 5] >= floor:
            live = True
            break
    return (HEAD.pack(key_hash, (LIVE | FORMAT) if live else FORMAT, *meta)
            + records_struct(len(flat) // REC_INTS).pack(*flat)), live


def pack_state(key: str, records: Mapping[int, Sequence[int]],
               slot_names: Sequence[bytes], meta: Meta = DEFAULT_META) -> bytes:
    """:func:`pack` with the key's hash computed from its records and meta."""
    digest = key_digest(key.encode())
    h = meta_hash(digest, meta)
    for s, rec in records.items():
        h ^= record_hash(digest, slot_names[s], rec)
    return pack(records, h, meta)


def is_old_form(blob: bytes) -> bool:
    """Whether ``blob`` is a packed state in 0.2's form (no ``FORMAT`` flag, a 9-byte
    header and whole 36-byte records)."""
    return (len(blob) >= OLD_HEAD.size and not blob[8] & FORMAT
            and (len(blob) - OLD_HEAD.size) % OLD_REC.size == 0)


def upgrade(blob: bytes) -> bytes:
    """A packed state in this form: 0.2's (no ``FORMAT`` flag) converted, births 0 and
    default meta, so its hash is unchanged (:mod:`.hashtree`); this form as it is."""
    if len(blob) >= HEAD_SIZE and blob[8] & FORMAT:
        return blob
    key_hash, _ = OLD_HEAD.unpack_from(blob)
    flat: list[int] = []
    for rec in OLD_REC.iter_unpack(memoryview(blob)[OLD_HEAD.size:]):
        flat += (*rec, 0)
    return pack_flat(flat, key_hash)[0]


def unpack(packed: bytes) -> dict[int, list[int]]:
    """The records by slot index, 5 fields each."""
    return {s: [p, n, bp, bn, b] for s, p, n, bp, bn, b
            in REC.iter_unpack(memoryview(packed)[HEAD_SIZE:])}


def unpack_flat(packed: bytes) -> tuple[int, ...]:
    """A packed state's records as one flat tuple ``(slot, p, n, bp, bn, b, ...)``."""
    return records_struct((len(packed) - HEAD_SIZE) // REC.size).unpack_from(packed, HEAD_SIZE)


def header(packed: bytes) -> tuple[int, bool]:
    """(key hash, live at the floor) from a packed state, without unpacking records."""
    key_hash, flags = OLD_HEAD.unpack_from(packed)
    return key_hash, bool(flags & LIVE)


def meta_of(packed: bytes) -> Meta:
    """The key's meta (F, S, D) from its packed header."""
    _, _, floor, set_ms, deadline = HEAD.unpack_from(packed)
    return floor, set_ms, deadline


def value_of(records: Iterable[Sequence[int]], floor: int = 0) -> int:
    """The exact (unsaturated) value of those of a key's records (5 fields) born at or
    after ``floor`` (the effective floor: they count)."""
    return sum(r[0] - r[2] - r[1] + r[3] for r in records if r[4] >= floor)


def live_of(records: Iterable[Sequence[int]], floor: int = 0) -> bool:
    """Whether some record counting under ``floor`` holds an update no reset covered."""
    return any((r[0] > r[2] or r[1] > r[3]) and r[4] >= floor for r in records)
