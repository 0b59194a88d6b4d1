"""The keyspace: every named counter's state, compact enough for a million keys.

Layout (measured at a million keys with three slots each, see WRITEUP.md section 2.4):

* ``key -> bytes``: a 9-byte header (the key's hash, and whether it is live) and the key's
  records packed as ``(slot index u32, p, n, bp, bn u64)``, 36 bytes each, so a counter
  costs one ``bytes`` object (33 + 9 + 36 per slot bytes) instead of a dict of tuples of
  int objects (~800 bytes for three slots).  The header is what lets a restart rebuild
  the hash tree without hashing every record again (25 s for a million keys with three
  slots each, measured under load, against ~1 s reading headers), and lets a repair
  list a segment's keys with their hashes without unpacking them;
* slot names (``"2.5f0c1a9e3b7d"``) are interned once in a :class:`SlotTable`; records
  carry their small index.  Indices are local to a node (and persisted with it): the
  wire and the hash tree always use names;
* a :class:`~.hashtree.HashTree` over the keys, and a list of keys per tree segment (what
  a repair lists), both kept up to date by :meth:`Keyspace.flush`;
* a sorted index of the keys (``sortedcontainers.SortedList``), built the first time
  someone lists keys and maintained from then on.

Changes happen in *batches* (one per poll cycle of the node).  The first change to a key
in a batch unpacks it into a mutable "hot" entry; further changes in the batch touch only
that entry; :meth:`Keyspace.flush` then repacks each changed key once, updates the tree
with the records that changed, and reports what to persist and what this node changed
itself (the batch's delta).  Under a single-key load ~100 increments share one repack,
one tree update and one row write.

Files: this one holds :class:`Keyspace` (its state, the reads, the local changes and the
flush); :mod:`.merging` what arrives from other nodes (its base class, :class:`.Merges`);
:mod:`.records` the packed form, the slot table and the one join of records;
:mod:`.batch` a changed key's entry and what a flush reports.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from sortedcontainers import SortedList

from .batch import Flushed, Hot
from .hashtree import RECORD_FIELDS, HashTree, key_digest, record_hash, segment_of, xxh64
from .merging import Merges
from .page import REC_INTS, StatePage
from .pncounter import MAX_TOTAL, ZERO, Overflow, Record, State, saturate
from .records import (
    HEAD,
    HEAD_SIZE,
    LIVE,
    REC,
    SlotTable,
    flatten,
    header,
    live_of,
    pack,
    pack_flat,
    pack_state,
    records_struct,
    unpack,
    value_of,
)

# The packed form and the slot table moved to .records, the batch's parts to .batch:
# named here too, where the rest of the tree has always imported them from.
__all__ = ["HEAD_SIZE", "PAGE_SLOTS_DIRECT", "Flushed", "Keyspace", "SlotTable", "header",
           "pack", "pack_state", "unpack"]

#: A page uses this node's slot table as its own while the table is at most this long
#: (a slot per node incarnation: a few dozen in practice); past it, a page names only
#: the slots its keys use, so it stays bounded whatever the table's size.
PAGE_SLOTS_DIRECT = 1024


class Keyspace(Merges):
    """Every counter's state.  Not thread-safe: one node core owns one.  The merges
    (``merge``, ``merge_many``, ``merge_page``) are :class:`.merging.Merges`'."""

    def __init__(self) -> None:
        self.slots = SlotTable()
        self.tree = HashTree()
        self._packed: dict[str, bytes] = {}
        self._hot: dict[str, Hot] = {}
        #: Keys stored by merge_many's fast path in this batch (key -> packed state).
        self._adopted: dict[str, bytes] = {}
        self._segments: dict[int, list[str]] = {}
        self._sorted: SortedList | None = None
        #: Keys with an update no reset has covered (what ``keys`` lists).
        self.live = 0

    # ------------------------------------------------------------------ loading

    def load(self, slot_names: Iterable[str], rows: Iterable[tuple[str, bytes]]) -> None:
        """Restore from storage: slot names in index order, then (key, packed) rows."""
        for name in slot_names:
            self.slots.intern(name)
        self.slots.take_added()
        segments = self._segments
        toggle = self.tree.toggle
        head = HEAD.unpack_from
        live = 0
        for key, packed in rows:
            packed = bytes(packed)
            self._packed[key] = packed
            key_hash, flags = head(packed)
            segment = segment_of(key_digest(key.encode()))
            toggle(segment, key_hash)
            segments.setdefault(segment, []).append(key)
            live += flags & LIVE
        self.live += live

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        """Keys with any state (reset ones included)."""
        return len(self._packed) + sum(1 for k in self._hot if k not in self._packed)

    def __contains__(self, key: str) -> bool:
        return key in self._packed or key in self._hot

    def _records(self, key: str) -> Mapping[int, list[int] | Record] | None:
        hot = self._hot.get(key)
        if hot is not None:
            return hot.records
        packed = self._packed.get(key)
        return None if packed is None else unpack(packed)

    def value(self, key: str) -> int:
        hot = self._hot.get(key)
        if hot is not None:
            if hot.value is None:
                hot.value = value_of(hot.records.values())
            return saturate(hot.value)
        packed = self._packed.get(key)
        return 0 if packed is None else saturate(value_of(unpack(packed).values()))

    def is_live(self, key: str) -> bool:
        hot = self._hot.get(key)
        if hot is not None:
            return live_of(hot.records.values())
        packed = self._packed.get(key)
        return packed is not None and bool(packed[HEAD_SIZE - 1] & LIVE)

    def state(self, key: str) -> dict[str, Record]:
        """The key's state by slot name ({} if never written)."""
        names = self.slots.names
        hot = self._hot.get(key)
        if hot is None:
            packed = self._packed.get(key)
            if packed is None:
                return {}
            # Straight from the packed records: a repair answer reads thousands of keys.
            return {names[s]: (p, n, bp, bn) for s, p, n, bp, bn
                    in REC.iter_unpack(memoryview(packed)[HEAD_SIZE:])}
        return {names[s]: (r[0], r[1], r[2], r[3]) for s, r in hot.records.items()}

    def page(self, keys: Iterable[str]) -> StatePage:
        """The states of ``keys`` as a :class:`~.page.StatePage` (keys never written are
        left out).  The page's slot table is this node's, so a key's flat list is its
        packed records unpacked in one call: 0.45 us per key of three slots against
        2.1 us for :meth:`state` and encoding by name (timeit, 4,000 keys)."""
        names = self.slots.names
        packed_of = self._packed
        hot_of = self._hot
        size = REC.size
        out: dict[str, list[int]] = {}
        for key in keys:
            hot = hot_of.get(key)
            if hot is None:
                packed = packed_of.get(key)
                if packed is None:
                    continue
                out[key] = list(records_struct((len(packed) - HEAD_SIZE) // size)
                                .unpack_from(packed, HEAD_SIZE))
            else:
                flat: list[int] = []
                for s in sorted(hot.records):
                    flat += (s, *hot.records[s])
                out[key] = flat
        page = StatePage(tuple(names), out)
        if len(names) <= PAGE_SLOTS_DIRECT:
            return page
        # A long slot table: renumber the slots this page uses, in the same order, so
        # indices stay increasing within each key.
        order = sorted(page.used_indexes())
        renumber = {s: i for i, s in enumerate(order)}
        for flat in out.values():
            flat[0::REC_INTS] = [renumber[s] for s in flat[0::REC_INTS]]
        return StatePage(tuple(names[s] for s in order), out)

    def dominates(self, key: str, state: State) -> bool:
        """True when our state of ``key`` holds everything ``state`` does."""
        if not state:
            return True
        records = self._records(key) or {}
        index = self.slots.index
        for name, rec in state.items():
            s = index.get(name)
            mine = records.get(s, ZERO) if s is not None else ZERO
            if (mine[0] < rec[0] or mine[1] < rec[1] or mine[2] < rec[2]
                    or mine[3] < rec[3]):
                return False
        return True

    def record_count(self, key: str) -> int:
        """How many slots ``key`` has a record of (0 if never written)."""
        hot = self._hot.get(key)
        if hot is not None:
            return len(hot.records)
        packed = self._packed.get(key)
        return 0 if packed is None else (len(packed) - HEAD_SIZE) // REC.size

    def slots_after_merge(self, key: str, names: Iterable[str]) -> int:
        """How many slots ``key`` would have a record of once ``names`` are merged."""
        records = self._records(key) or {}
        index = self.slots.index
        return len(records) + sum(1 for name in names if index.get(name) not in records)

    def key_hash(self, key: str) -> int:
        """XOR of the key's record hashes (what its segment holds for it)."""
        if key not in self._hot:
            packed = self._packed.get(key)
            return 0 if packed is None else int(HEAD.unpack_from(packed)[0])
        records = self._records(key)
        if not records:
            return 0
        digest = key_digest(key.encode())
        names = self.slots.name_bytes
        h = 0
        for s, rec in records.items():
            h ^= record_hash(digest, names[s], rec)
        return h

    def keys_in_segments(self, segments: Iterable[int]) -> list[str]:
        """Keys stored in ``segments`` (flushed keys only: call between batches)."""
        out: list[str] = []
        for segment in segments:
            out += self._segments.get(segment, ())
        return out

    def list_keys(self, prefix: str = "", after: str | None = None,
                  limit: int = 1000) -> tuple[list[tuple[str, int]], bool]:
        """Live keys starting with ``prefix``, sorted, strictly after ``after``; at most
        ``limit`` of them, and whether more follow."""
        if self._sorted is None:
            # Built on first use (~1.5 s at a million keys), then kept up to date.
            self._sorted = SortedList(self._packed)
        start = prefix if after is None or after < prefix else after
        page: list[tuple[str, int]] = []
        for key in self._sorted.irange(minimum=start, inclusive=(after is None or
                                                                  after < prefix, True)):
            if not key.startswith(prefix):
                break
            records = self._records(key)
            if records is None or not live_of(records.values()):
                continue
            if len(page) == limit:
                return page, True
            page.append((key, saturate(value_of(records.values()))))
        return page, False

    def iter_keys(self) -> Iterator[str]:
        return iter(self._packed)

    # ------------------------------------------------------------------ changing

    def add(self, key: str, slot: int, amount: int) -> tuple[int, int, int, int]:
        """The owner of ``slot`` adds ``amount`` (negative: subtracts) to ``key``.

        Returns the slot's new record.  Raises :class:`Overflow` (nothing changed) if the
        key's live total in the step's direction, or the slot's own total, would pass
        2**63-1; ValueError for 0 (like :func:`.pncounter.add`: a zero step would create
        an all-zero record).
        """
        if not amount:
            raise ValueError("a step must not be zero")
        hot = self._hot.get(key) or self._touch(key)
        records = hot.records
        field_ = 0 if amount > 0 else 1
        step = amount if amount > 0 else -amount
        totals = hot.totals
        if totals is None:
            totals = hot.totals = [sum(r[0] - r[2] for r in records.values()),
                                   sum(r[1] - r[3] for r in records.values())]
        rec = records.get(slot)
        if totals[field_] + step > MAX_TOTAL or (
                rec is not None and rec[field_] + step > MAX_TOTAL):
            raise Overflow("the counter's total would pass 2**63-1")
        if rec is None:
            rec = records[slot] = [0, 0, 0, 0]
        rec[field_] += step
        totals[field_] += step
        if hot.value is not None:
            hot.value += amount
        hot.local.add(slot)
        return rec[0], rec[1], rec[2], rec[3]

    def reset(self, key: str) -> dict[str, Record]:
        """Observed reset of ``key``: every base raised to its total.  Returns the records
        written, by slot name: what a peer must hold for the reset to have reached it (a
        valid state on its own, ``bp = p``, so it can be merged anywhere)."""
        if key not in self:
            return {}
        hot = self._touch(key)
        # Every base at its total: the value and both live totals are 0 (so a key at
        # its bound takes steps again at once, pncounter's "Bounds").
        hot.value, hot.totals = 0, [0, 0]
        names = self.slots.names
        written: dict[str, Record] = {}
        for s, rec in hot.records.items():
            rec[2], rec[3] = rec[0], rec[1]
            hot.local.add(s)
            written[names[s]] = (rec[0], rec[1], rec[0], rec[1])
        return written

    def flush(self) -> Flushed:
        """End of batch: repack changed keys, update the tree and indexes, report."""
        out = Flushed(new_slots=self.slots.take_added())
        if self._adopted:
            out.changed, self._adopted = self._adopted, {}
        if not self._hot:
            return out
        names = self.slots.names
        name_bytes = self.slots.name_bytes
        tree = self.tree
        # record_hash inlined and one struct call to pack: under keys drawn uniformly
        # this loop runs once per increment.  With the hot entry's single loop, an
        # increment of a key not yet changed in the batch, its value and the flush cost
        # 10.8-15.3 us against 13.6-19.1 us, less in each of three alternated runs
        # (cold_keys.py).
        fields = RECORD_FIELDS.pack
        for key, hot in self._hot.items():
            records = hot.records
            orig = hot.orig
            if hot.local:
                out.local[key] = {names[s]: (r[0], r[1], r[2], r[3])
                                  for s in hot.local for r in (records[s],)}
            digest = 0
            h = 0
            for s, rec in records.items():
                before = orig.get(s)
                now = (rec[0], rec[1], rec[2], rec[3])
                if before == now:
                    continue
                if not digest:
                    digest = key_digest(key.encode())
                if before is not None:
                    h ^= xxh64(fields(*before) + name_bytes[s], digest)
                h ^= xxh64(fields(*now) + name_bytes[s], digest)
            if not digest:
                continue  # touched, nothing changed
            segment = segment_of(digest)
            if h:
                tree.toggle(segment, h)
            old = self._packed.get(key)
            is_new = old is None
            old_hash, was_live = (0, False) if old is None else header(old)
            packed, now_live = pack_flat(flatten(records), old_hash ^ h)
            self.live += now_live - was_live
            self._packed[key] = packed
            out.changed[key] = packed
            if is_new:
                self._segments.setdefault(segment, []).append(key)
                if self._sorted is not None:
                    self._sorted.add(key)
        self._hot.clear()
        return out

    @property
    def dirty(self) -> bool:
        return bool(self._hot or self._adopted)
