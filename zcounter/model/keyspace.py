"""The keyspace: every named counter's state, compact enough for a million keys.

Layout (measured at a million keys with three slots each, see WRITEUP.md section 2.4):

* ``key -> bytes``: a 33-byte header (the key's hash, whether it is live, its meta) and
  the key's records packed as ``(slot index u32, p, n, bp, bn, b u64)``, 44 bytes each
  (:mod:`.records`; 9 and 36 before issue 21), so a counter costs one ``bytes`` object
  (33 + 33 + 44 per slot bytes) instead of a dict of tuples of int objects (~800 bytes
  for three slots).  The header is what lets a restart rebuild
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
:mod:`.batch` a changed key's entry and what a flush reports; :mod:`.lives` expiry and
collection (issue 21: EXPIRE, the deadline heap, dead keys, their removal).

Wall time: every read and step takes ``now_ms`` (unix ms, given by the runtime: the
model reads no clock); a merge never does.  For a key with no expiry and no floor (the
common case) ``now_ms`` only stamps the birth of a slot's first record.
"""

from __future__ import annotations

from collections.abc import Iterable

from sortedcontainers import SortedList

from .batch import Flushed, Hot
from .expiry import DEFAULT_META, META, effective_floor, set_register
from .hashtree import (
    BORN_FIELDS,
    RECORD_FIELDS,
    HashTree,
    key_digest,
    meta_hash,
    segment_of,
    xxh64,
)
from .pncounter import MAX_TOTAL, Overflow, Record, normal
from .reads import PAGE_SLOTS_DIRECT, Reads
from .records import (
    HEAD,
    HEAD_SIZE,
    LIVE,
    SlotTable,
    flatten,
    header,
    pack,
    pack_flat,
    pack_state,
    unpack,
    upgrade,
)

# The packed form and the slot table moved to .records, the batch's parts to .batch:
# named here too, where the rest of the tree has always imported them from.
__all__ = ["HEAD_SIZE", "PAGE_SLOTS_DIRECT", "Flushed", "Keyspace", "SlotTable", "header",
           "pack", "pack_state", "unpack"]

class Keyspace(Reads):
    """Every counter's state.  Not thread-safe: one node core owns one.  The merges
    (``merge``, ``merge_many``, ``merge_page``) are :class:`.merging.Merges`'; expiry and
    collection (``exists``, ``deadline``, ``expire``, ``dead``, ``collect``) are
    :class:`.lives.Lives`'; the reads (``value``, ``state``, ``page``, ``list_keys``...)
    :class:`.reads.Reads`'."""

    def __init__(self) -> None:
        self.slots = SlotTable()
        self.tree = HashTree()
        self._packed: dict[str, bytes] = {}
        self._hot: dict[str, Hot] = {}
        #: Keys stored by merge_many's fast path in this batch (key -> packed state).
        self._adopted: dict[str, bytes] = {}
        self._segments: dict[int, list[str]] = {}
        self._sorted: SortedList | None = None
        #: Keys that exist at their floor (a passed deadline not applied: :mod:`.records`).
        self.live = 0
        self._deadlines: list[tuple[int, str]] = []
        self._candidates: dict[str, None] = {}
        self._dead: dict[str, int] = {}
        self._removed: list[str] = []
        self.high_water = (0, 0)
        self._high_water_moved = False
        self.own_slot: int | None = None
        self.expired_total = 0

    # ------------------------------------------------------------------ loading

    def load(self, slot_names: Iterable[str], rows: Iterable[tuple[str, bytes]],
             high_water: tuple[int, int] | None = None) -> None:
        """Restore from storage: slot names in index order, then (key, packed) rows (0.2's
        packed form is converted, :func:`.records.upgrade`), and the high-water."""
        for name in slot_names:
            self.slots.intern(name)
        self.slots.take_added()
        segments = self._segments
        toggle = self.tree.toggle
        head = HEAD.unpack_from
        note = self._note
        live = 0
        for key, packed in rows:
            packed = upgrade(bytes(packed))
            self._packed[key] = packed
            key_hash, flags, _, _, deadline = head(packed)
            segment = segment_of(key_digest(key.encode()))
            toggle(segment, key_hash)
            segments.setdefault(segment, []).append(key)
            live += flags & LIVE
            if deadline or not flags & LIVE:
                note(key, packed, None)
        self.live += live
        if high_water is not None:
            self.high_water = high_water

    # ------------------------------------------------------------------ changing

    def add(self, key: str, slot: int, amount: int, now_ms: int,
            ttl_ms: int = 0) -> tuple[int, int, int, int, int]:
        """The owner of ``slot`` adds ``amount`` (negative: subtracts) to ``key`` at wall
        time ``now_ms``; with ``ttl_ms``, the key expires ``ttl_ms`` later unless it has a
        future deadline (INCR + EXPIRE NX).  A record of an earlier life is rebased into
        the current one, a slot's first record starts at the high-water (pncounter).

        Returns the slot's new record.  Raises :class:`Overflow` (nothing changed) if the
        key's live total in the step's direction, or the slot's own total, would pass
        2**63-1; ValueError for 0 (like :func:`.pncounter.add`: a zero step would create
        an all-zero record).
        """
        if not amount:
            raise ValueError("a step must not be zero")
        hot = self._hot.get(key) or self._touch(key)
        meta = hot.meta
        floor = effective_floor(meta, now_ms) if meta[0] or meta[2] else 0
        records = hot.records
        field_ = 0 if amount > 0 else 1
        step = amount if amount > 0 else -amount
        totals = hot.totals
        if totals is None or floor != hot.floor:
            totals = hot.sums(floor)
        rec = records.get(slot)
        own = self.high_water[field_] if rec is None else rec[field_]
        if totals[field_] + step > MAX_TOTAL or own + step > MAX_TOTAL:
            raise Overflow("the counter's total would pass 2**63-1")
        born = now_ms if now_ms > floor else floor
        if rec is None:
            gp, gn = self.high_water
            rec = records[slot] = [gp, gn, gp, gn, born]
        elif rec[4] < floor:  # a record of an earlier life: rebase it into this one
            rec[2], rec[3], rec[4] = rec[0], rec[1], born
        rec[field_] += step
        totals[field_] += step
        if hot.value is not None:
            hot.value += amount
        hot.local.add(slot)
        if ttl_ms and not (meta[2] and now_ms < meta[2]):  # (no NX: a future deadline)
            hot.meta = set_register(meta, now_ms, now_ms + ttl_ms)
            hot.local_meta = True
        return rec[0], rec[1], rec[2], rec[3], rec[4]

    def reset(self, key: str, now_ms: int) -> dict[str, Record]:
        """Observed reset of ``key`` at ``now_ms``: every base raised to its total, and
        no expiry any more.  Returns what was written, by slot name (and "~" if the meta
        changed): what a peer must hold for the reset to have reached it (a valid state
        on its own, ``bp = p``, so it can be merged anywhere).  A key that does not exist
        at ``now_ms``: nothing to observe, {}."""
        if not self.exists(key, now_ms):
            return {}
        hot = self._touch(key)
        names = self.slots.names
        written: dict[str, Record] = {}
        for s, rec in hot.records.items():
            rec[2], rec[3] = rec[0], rec[1]
            hot.local.add(s)
            written[names[s]] = normal(rec[0], rec[1], rec[0], rec[1], rec[4])
        # Every base at its total: the value and both live totals are 0 (so a key at
        # its bound takes steps again at once, pncounter's "Bounds").
        hot.value, hot.totals = 0, [0, 0]
        if hot.meta[2]:
            hot.meta = set_register(hot.meta, now_ms, 0)
            hot.local_meta = True
            written[META] = hot.meta
        return written

    def flush(self) -> Flushed:
        """End of batch: repack changed keys, update the tree and indexes, report (with
        the keys collected since the last flush and a raised high-water)."""
        out = Flushed(new_slots=self.slots.take_added())
        if self._adopted:
            out.changed, self._adopted = self._adopted, {}
        if self._removed:
            out.removed, self._removed = self._removed, []
        if self._high_water_moved:
            out.high_water, self._high_water_moved = self.high_water, False
        if not self._hot:
            return out
        names = self.slots.names
        name_bytes = self.slots.name_bytes
        tree = self.tree
        note = self._note
        # record_hash inlined and one struct call to pack: under keys drawn uniformly
        # this loop runs once per increment.  With the hot entry's single loop, an
        # increment of a key not yet changed in the batch, its value and the flush cost
        # 10.8-15.3 us against 13.6-19.1 us, less in each of three alternated runs
        # (cold_keys.py).
        fields = RECORD_FIELDS.pack
        born = BORN_FIELDS.pack
        for key, hot in self._hot.items():
            records = hot.records
            orig = hot.orig
            meta = hot.meta
            if hot.local or hot.local_meta:
                local: dict[str, Record] = {
                    names[s]: normal(r[0], r[1], r[2], r[3], r[4])
                    for s in hot.local for r in (records[s],)}
                # The meta with every local change of a key that has one, not only when
                # it changed: a peer that dropped the key's first delta (intake's
                # start-time rule, its first second) adopted the next one alone - the
                # records born with the deadline, without it - and read the key past
                # its deadline until a repair (bench --ratelimit: 4 probes of second 0;
                # tests/faults/test_ttl_partition.py: a key read 5 on node 1).  Idempotent
                # (the meta's join), 3 ints per volatile key's delta.
                if meta != DEFAULT_META:
                    local[META] = meta
                out.local[key] = local
            digest = 0
            h = 0
            for s, rec in records.items():
                before = orig.get(s)
                now = (rec[0], rec[1], rec[2], rec[3], rec[4])
                if before == now:
                    continue
                if not digest:
                    digest = key_digest(key.encode())
                if before is not None:
                    h ^= xxh64((born(*before) if before[4] else fields(*before[:4]))
                               + name_bytes[s], digest)
                h ^= xxh64((born(*now) if now[4] else fields(*now[:4])) + name_bytes[s],
                           digest)
            if meta != hot.orig_meta:
                if not digest:
                    digest = key_digest(key.encode())
                h ^= meta_hash(digest, hot.orig_meta) ^ meta_hash(digest, meta)
            if not digest:
                continue  # touched, nothing changed
            segment = segment_of(digest)
            if h:
                tree.toggle(segment, h)
            old = self._packed.get(key)
            is_new = old is None
            old_hash, was_live = (0, False) if old is None else header(old)
            packed, now_live = pack_flat(flatten(records), old_hash ^ h, meta)
            self.live += now_live - was_live
            self._packed[key] = packed
            out.changed[key] = packed
            if meta[2] != hot.orig_meta[2] or not now_live:
                note(key, packed, old)
            if is_new:
                self._segments.setdefault(segment, []).append(key)
                if self._sorted is not None:
                    self._sorted.add(key)
        self._hot.clear()
        if out.removed:  # a key collected, then written again in the batch: it stays
            out.removed = [k for k in out.removed if k not in out.changed]
        return out

    @property
    def dirty(self) -> bool:
        return bool(self._hot or self._adopted or self._removed or self._high_water_moved)
