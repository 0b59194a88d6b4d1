"""What arrives from other nodes, joined into the keyspace: states by slot name (a peer's
delta, a give-back, a request id's target), pages of states (a repair), and keys this
node holds nothing of (a bootstrap).  A part of :class:`.keyspace.Keyspace` (its base
class), apart from the local path (increments, resets, the flush) and the reads.

Three paths, chosen per key, each the fastest for its case (the figures are in each
method): a key held packed and not changed in the open batch is joined in its packed
form (:meth:`Merges._merge_packed`, :func:`.records.join`); a key changed in the open
batch is joined record by record into its unpacked entry (:meth:`Merges._join_hot`,
:func:`.records.grow`); a key held nowhere is hashed and packed at once
(:meth:`Merges._adopt`, :meth:`Merges._adopt_flat`).  Slot names are interned in the
order the states name them, whatever path a key takes, so slot indices do not depend on
which keys were hot.

Every path joins the key's meta too (issue 21: ``F`` max, the expiry register
last-writer-wins, :mod:`.expiry`) and births (one more per-field maximum); each notes a
key that now has a deadline (the deadline heap) or does not exist at its floor (a dead
candidate) for :meth:`.Keyspace.dead`.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Mapping, Sequence

from sortedcontainers import SortedList

from .batch import Hot
from .expiry import DEFAULT_META, META, Meta, join_meta
from .hashtree import HashTree, key_digest, meta_hash, segment_of, xxh64
from .page import META_INTS, StatePage
from .pncounter import Record, State
from .records import FORMAT, HEAD, LIVE, REC, SlotTable, grow, hashed, join

#: The deadline's bytes in a packed header (``records.HEAD``: hash, flags, F, S, D).
DEADLINE_AT = 25
_DEADLINE = struct.Struct("<Q")


class Merges:
    """The merge methods of :class:`.keyspace.Keyspace`, over its state (declared here,
    set by its ``__init__``)."""

    slots: SlotTable
    tree: HashTree
    live: int
    _packed: dict[str, bytes]
    _hot: dict[str, Hot]
    _adopted: dict[str, bytes]
    _segments: dict[int, list[str]]
    _sorted: SortedList | None
    #: (deadline, key), lazily: an entry is checked against the key when popped.
    _deadlines: list[tuple[int, str]]
    #: Keys that did not exist at their floor when last changed (reset, or merged dead).
    _candidates: dict[str, None]

    def _note(self, key: str, packed: bytes, old: bytes | None) -> None:
        """Note what :meth:`.Keyspace.dead` must look at: a new deadline, a key that
        does not exist at its floor."""
        if old is None or packed[DEADLINE_AT:DEADLINE_AT + 8] != old[DEADLINE_AT:DEADLINE_AT + 8]:
            deadline = _DEADLINE.unpack_from(packed, DEADLINE_AT)[0]
            if deadline:
                heapq.heappush(self._deadlines, (deadline, key))
        if not packed[8] & LIVE:
            self._candidates[key] = None

    def _touch(self, key: str) -> Hot:
        """The key's entry in the open batch, made from its packed state on its first
        change in the batch (here: the merges and the local changes both need it)."""
        hot = self._hot.get(key)
        if hot is None:
            hot = self._hot[key] = Hot(self._packed.get(key))
        return hot

    def merge_many(self, states: Mapping[str, State]) -> int:
        """Join every key's state; returns how many keys grew.  Never refuses valid
        records, whatever their sums (pncounter's "Bounds": legal concurrent steps can
        sum past any bound).  Each key is unpacked once (a repair page merges thousands
        of keys); a key this node does not hold at all is packed at once
        (:meth:`_adopt`)."""
        touched: list[tuple[str, Hot | None, State]] = []
        repacked: list[tuple[str, bytes, int, int, int, bytes]] = []
        packed = self._packed
        hot_keys = self._hot
        for key, state in states.items():
            if not state:
                continue
            hot = hot_keys.get(key)
            if hot is None:
                old = packed.get(key)
                if old is not None:
                    done = self._merge_packed(key, old, state)
                    if done is not None:
                        if done:
                            repacked.append((key, *done, old))
                        continue
            if hot is None and key not in packed:
                touched.append((key, None, state))
                continue
            touched.append((key, hot or self._touch(key), state))
        grown = len(repacked)
        toggle = self.tree.toggle
        adopted = self._adopted
        note = self._note
        for key, new, segment, delta, live_delta, old in repacked:
            if delta:
                toggle(segment, delta)
            packed[key] = adopted[key] = new
            self.live += live_delta
            note(key, new, old)
        adopt = self._adopt
        join_hot = self._join_hot
        for key, hot, state in touched:  # in order: slots are interned as merge() would
            if hot is None:
                adopt(key, state)
                grown += 1
            else:
                grown += join_hot(hot, state)
        return grown

    def _merge_packed(self, key: str, old: bytes, state: State
                      ) -> tuple[bytes, int, int, int] | tuple[()] | None:
        """Join ``state`` into the packed state ``old`` of ``key`` (not hot) without
        unpacking it into a hot entry, for :meth:`merge_many`: ``(new packed state,
        segment, hash delta, live delta)`` to store, ``()`` if nothing grew, None if
        ``state`` names a slot this node has not interned (then the general path interns
        it, in order).

        Why: a peer's delta under keys drawn uniformly touches each key once, and the
        general path's hot entry (unpack into lists, copy the originals, compare them
        all again at the flush, repack) made merging and flushing one record of a key of
        three slots cost 11.4-20.3 us here, against 5.2-9.5 us this way, about half in
        each of six runs (docs/measurements/cold_keys.py; WRITEUP.md section 7.4).  Here
        the join (:func:`.records.join`) rehashes only grown records, and the result is
        packed at once and reported by the flush as adopted keys are."""
        index = self.slots.index
        incoming: list[tuple[int, Record]] = []
        meta: Meta | None = None
        for name, rec in state.items():
            if name == META:
                meta = (rec[0], rec[1], rec[2])
                continue
            s = index.get(name)
            if s is None:
                return None
            incoming.append((s, rec))
        return join(key, old, incoming, self.slots.name_bytes, meta) or ()

    def _join_hot(self, hot: Hot, state: State) -> bool:
        """The join of ``state`` (by slot name, interned in its order) into a key
        changed in the open batch, record by record (:func:`.records.grow`, as
        :func:`.records.join` does for packed records); True if anything grew.  The
        flush repacks the key.  Not through :func:`.records.join` itself: flattening the
        hot entry for it made this 2-3 times slower (0.6-1.3 against 2.1-5.4 us for a
        key of three slots, timeit), and under a single-key load every peer's delta
        takes this path."""
        intern = self.slots.intern
        records = hot.records
        hot.value = hot.totals = None
        grew = False
        for name, rec in state.items():
            if name == META:
                meta = join_meta(hot.meta, (rec[0], rec[1], rec[2]))
                if meta != hot.meta:
                    hot.meta = meta
                    grew = True
                continue
            s = intern(name)
            mine = records.get(s)
            if mine is None:
                records[s] = [rec[0], rec[1], rec[2], rec[3], rec[4] if len(rec) > 4 else 0]
                grew = True
            else:
                joined = grow(mine, rec)
                if joined is not None:
                    mine[:] = joined
                    grew = True
        return grew

    def merge_page(self, page: StatePage) -> int:
        """:meth:`merge_many` of a page's states, returning how many keys grew.  Keys
        this node holds nothing of - every key of a bootstrap - are packed straight from
        the page's flat lists (:meth:`_adopt_flat`; the page's invariants, which the
        codec checks on what a peer sent, make every record valid); the others are
        merged by name."""
        packed = self._packed
        hot = self._hot
        absent: list[tuple[str, list[int]]] = []
        present: dict[str, State] = {}
        for key, flat in page.records.items():
            if key in packed or key in hot:
                present[key] = page[key]
            elif len(flat) > META_INTS:
                absent.append((key, flat))
        grown = self.merge_many(present) if present else 0
        if absent:
            self._adopt_flat(page.slots, absent)
        return grown + len(absent)

    def _adopt_flat(self, slots: Sequence[str], entries: list[tuple[str, list[int]]]) -> None:
        """:meth:`_adopt` for keys in a page's flat form."""
        local: list[int | None] = [None] * len(slots)
        page_name_bytes = [name.encode() for name in slots]
        intern = self.slots.intern
        pack_rec = REC.pack
        store = self._store_new
        for key, flat in entries:
            digest = key_digest(key.encode())
            meta = (flat[0], flat[1], flat[2])
            floor = meta[0]
            h = meta_hash(digest, meta)
            records: list[tuple[int, bytes]] = []
            live = False
            it = iter(flat[META_INTS:])
            for i, p, n, bp, bn, b in zip(it, it, it, it, it, it, strict=True):
                s = local[i]
                if s is None:
                    s = local[i] = intern(slots[i])
                h ^= xxh64(hashed((p, n, bp, bn, b)) + page_name_bytes[i], digest)
                records.append((s, pack_rec(s, p, n, bp, bn, b)))
                if (p > bp or n > bn) and b >= floor:
                    live = True
            records.sort()
            store(key, digest, h, live, b"".join([r for _, r in records]), meta)

    def _store_new(self, key: str, digest: int, h: int, live: bool, body: bytes,
                   meta: Meta) -> None:
        """Store a key this node held nothing of: packed records ``body`` and ``meta``
        whose hashes XOR to ``h``."""
        packed = HEAD.pack(h, (LIVE | FORMAT) if live else FORMAT, *meta) + body
        segment = segment_of(digest)
        if h:
            self.tree.toggle(segment, h)
        self._packed[key] = self._adopted[key] = packed
        self._segments.setdefault(segment, []).append(key)
        if self._sorted is not None:
            self._sorted.add(key)
        self.live += live
        if meta[2] or not live:
            self._note(key, packed, None)

    def _adopt(self, key: str, state: State) -> None:
        """Store the state of a key this node holds nothing of, packed at once: what
        :meth:`flush` would do after a merge into an empty key, without the unpacked
        "hot" entry and the comparison with what it was.  A wiped node's bootstrap
        merges every key this way (WRITEUP.md section 3.5 has the before and after)."""
        # record_hash inlined (the same function: the test against merge() and flush()
        # compares the trees), and one loop for both sums in merge_many: a fresh key of
        # three slots merged and flushed in 7.3 us instead of 11.0 (timeit, 40,000 keys).
        index = self.slots.index
        name_bytes = self.slots.name_bytes
        digest = key_digest(key.encode())
        meta_rec = state.get(META)
        meta = DEFAULT_META if meta_rec is None else (meta_rec[0], meta_rec[1], meta_rec[2])
        floor = meta[0]
        h = meta_hash(digest, meta)
        records = []
        live = False
        for name, rec in state.items():
            if name == META:
                continue
            s = index.get(name)
            if s is None:
                s = self.slots.intern(name)
            full = (rec[0], rec[1], rec[2], rec[3], rec[4] if len(rec) > 4 else 0)
            h ^= xxh64(hashed(full) + name_bytes[s], digest)
            records.append((s, *full))
            if (full[0] > full[2] or full[1] > full[3]) and full[4] >= floor:
                live = True
        records.sort()
        pack_rec = REC.pack
        self._store_new(key, digest, h, live, b"".join([pack_rec(*r) for r in records]),
                        meta)

    def merge(self, key: str, state: State) -> bool:
        """Join ``state`` (by slot name) into ``key``; True if anything grew.  Valid
        records are never refused (pncounter's "Bounds")."""
        if not state:
            return False
        return self._join_hot(self._hot.get(key) or self._touch(key), state)
