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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sortedcontainers import SortedList

from .batch import Hot
from .hashtree import RECORD_FIELDS, HashTree, key_digest, segment_of, xxh64
from .page import StatePage
from .pncounter import Record, State
from .records import HEAD, LIVE, REC, SlotTable, grow, join


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
        repacked: list[tuple[str, bytes, int, int, int]] = []
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
                            repacked.append((key, *done))
                        continue
            if hot is None and key not in packed:
                touched.append((key, None, state))
                continue
            touched.append((key, hot or self._touch(key), state))
        grown = len(repacked)
        toggle = self.tree.toggle
        adopted = self._adopted
        for key, new, segment, delta, live_delta in repacked:
            if delta:
                toggle(segment, delta)
            packed[key] = adopted[key] = new
            self.live += live_delta
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
        for name, rec in state.items():
            s = index.get(name)
            if s is None:
                return None
            incoming.append((s, rec))
        return join(key, old, incoming, self.slots.name_bytes) or ()

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
            s = intern(name)
            mine = records.get(s)
            if mine is None:
                records[s] = [rec[0], rec[1], rec[2], rec[3]]
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
            elif flat:
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
        fields = RECORD_FIELDS.pack
        pack_rec = REC.pack
        store = self._store_new
        for key, flat in entries:
            digest = key_digest(key.encode())
            h = 0
            records: list[tuple[int, bytes]] = []
            live = False
            it = iter(flat)
            for i, p, n, bp, bn in zip(it, it, it, it, it, strict=True):
                s = local[i]
                if s is None:
                    s = local[i] = intern(slots[i])
                h ^= xxh64(fields(p, n, bp, bn) + page_name_bytes[i], digest)
                records.append((s, pack_rec(s, p, n, bp, bn)))
                if p > bp or n > bn:
                    live = True
            records.sort()
            store(key, digest, h, live, b"".join([r for _, r in records]))

    def _store_new(self, key: str, digest: int, h: int, live: bool, body: bytes) -> None:
        """Store a key this node held nothing of: packed records ``body`` whose hashes
        XOR to ``h``."""
        packed = HEAD.pack(h, LIVE if live else 0) + body
        segment = segment_of(digest)
        if h:
            self.tree.toggle(segment, h)
        self._packed[key] = self._adopted[key] = packed
        self._segments.setdefault(segment, []).append(key)
        if self._sorted is not None:
            self._sorted.add(key)
        self.live += live

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
        fields = RECORD_FIELDS.pack
        digest = key_digest(key.encode())
        h = 0
        records = []
        live = False
        for name, (p, n, bp, bn) in state.items():
            s = index.get(name)
            if s is None:
                s = self.slots.intern(name)
            h ^= xxh64(fields(p, n, bp, bn) + name_bytes[s], digest)
            records.append((s, p, n, bp, bn))
            if p > bp or n > bn:
                live = True
        records.sort()
        pack_rec = REC.pack
        self._store_new(key, digest, h, live, b"".join([pack_rec(*r) for r in records]))

    def merge(self, key: str, state: State) -> bool:
        """Join ``state`` (by slot name) into ``key``; True if anything grew.  Valid
        records are never refused (pncounter's "Bounds")."""
        if not state:
            return False
        return self._join_hot(self._hot.get(key) or self._touch(key), state)
