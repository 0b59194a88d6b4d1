"""A batch of changes to the keyspace: the entry of a key changed in it, and what its
flush reports (:mod:`.keyspace` says how batches work)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .expiry import DEFAULT_META, Meta
from .pncounter import Record
from .records import HEAD, HEAD_SIZE, REC


class Hot:
    """A key changed in the current batch: its records (5 fields) and meta, and what
    they were."""

    __slots__ = ("floor", "local", "local_meta", "meta", "orig", "orig_meta", "records",
                 "totals", "value")

    def __init__(self, packed: bytes | None) -> None:
        """From the key's packed state (None: a key never written)."""
        #: Slots this node changed itself (increments, decrements, resets): the delta.
        self.local: set[int] = set()
        #: Whether this node changed the meta itself (an expiry, a reset): in the delta.
        self.local_meta = False
        #: The exact value and the live totals of p and n (``sum(p - bp)``,
        #: ``sum(n - bn)``: what a step is bounded by, pncounter's "Bounds") of the
        #: records counting under ``floor``, kept up to date by add() and reset() and
        #: dropped by merges: a batch of 100 increments to one key sums its records once,
        #: not 200 times (the per-increment path; ~1.5 us saved per increment, timeit).
        #: A read or a step at another effective floor (a deadline passed) sums again.
        self.value: int | None
        self.totals: list[int] | None
        self.floor = 0
        self.meta: Meta = DEFAULT_META
        self.orig_meta: Meta = DEFAULT_META
        if packed is None:
            self.orig: dict[int, Record] = {}
            self.records: dict[int, list[int]] = {}
            self.value, self.totals = 0, [0, 0]
            return
        # One loop for the records, the originals, the totals and the value: under keys
        # drawn uniformly nearly every increment touches a key of its own, and the add
        # and the reply's count then need no sums of their own.  1.5-2.0 us for a key of
        # three slots, against 3.4-3.8 us building them from one flat unpack and its
        # slices (timeit, alternated; WRITEUP.md section 7.4).
        _, _, floor, set_ms, deadline = HEAD.unpack_from(packed)
        self.meta = self.orig_meta = (floor, set_ms, deadline)
        self.floor = floor
        orig: dict[int, Record] = {}
        records: dict[int, list[int]] = {}
        p_sum = n_sum = value = 0
        for s, p, n, bp, bn, b in REC.iter_unpack(memoryview(packed)[HEAD_SIZE:]):
            orig[s] = (p, n, bp, bn, b)
            records[s] = [p, n, bp, bn, b]
            if b >= floor:
                p_sum += p - bp
                n_sum += n - bn
                value += p - bp - n + bn
        self.orig, self.records = orig, records
        self.totals = [p_sum, n_sum]
        self.value = value

    def sums(self, floor: int) -> list[int]:
        """The live totals under the effective floor ``floor`` (the list add() steps;
        ``value`` is set with them), summed again only when the floor moved or a merge
        dropped them."""
        totals = self.totals
        if totals is None or self.value is None or floor != self.floor:
            p_sum = n_sum = 0
            for r in self.records.values():
                if r[4] >= floor:
                    p_sum += r[0] - r[2]
                    n_sum += r[1] - r[3]
            totals = self.totals = [p_sum, n_sum]
            self.value = p_sum - n_sum
            self.floor = floor
        return totals


@dataclass(slots=True)
class Flushed:
    """What a batch changed: see :meth:`Keyspace.flush`."""

    #: key -> packed state, for every key whose state changed (to persist).
    changed: dict[str, bytes] = field(default_factory=dict)
    #: key -> {slot name: record} of the records this node changed itself (to publish),
    #: with the key's meta under "~" when this node changed it.
    local: dict[str, dict[str, Record]] = field(default_factory=dict)
    #: Slots first seen in this batch (index, name), to persist before the states.
    new_slots: list[tuple[int, str]] = field(default_factory=list)
    #: Keys collected since the last flush (to delete from disk; issue 21).
    removed: list[str] = field(default_factory=list)
    #: The node's high-water, when a collection raised it (to persist with the batch).
    high_water: tuple[int, int] | None = None
