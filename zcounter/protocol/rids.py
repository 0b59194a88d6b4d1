"""The request-id log: which requests this node has applied or learned, for exactly-once.

An entry is ``(rid, key, target)``: the request id, the key it changed, and the partial
state that proves it was applied (for an increment, its slot's ``p`` right after it;
for a reset, the bases it wrote).  A repeat of a remembered id is not applied again: it
is answered as a duplicate, once this node holds ``target`` (for ``wait=majority|all``:
once enough nodes do).

The window is bounded by count and by age, oldest evicted first; entries are persisted
with the batch that applied or learned them.  Entries are numbered in insertion order;
numbers restart with the process, so a peer paging through this log keeps a cursor per
``epoch``.  Pages are slices (O(page)), not walks over the window.

When a key is collected (issue 21) the targets of its ids are *neutralised* (set to
``{}``, persisted): a retry of such an id is still a duplicate (it was applied once), but
its old records must not be merged into a later life of the key, where they would count
again (a wait on ``{}`` is met by every peer that answers).  Ids are indexed by key
for that (:meth:`RidLog.neutralise` is O(ids of the collected keys), not a walk over
the window at every collection).
"""

from __future__ import annotations

from collections import OrderedDict

from ..model.pncounter import Record
from .messages import RidEntry

#: Entries per page of a RidPull answer (each at most ~400 bytes: far below the limit).
RIDS_PER_PAGE = 2000


class RidLog:
    def __init__(self, window: int, max_age_s: float, epoch: str, now: float,
                 entries: list[RidEntry] | None = None) -> None:
        self.window = window
        self.max_age_s = max_age_s
        self.epoch = epoch
        self._entries: OrderedDict[str, tuple[str, dict[str, Record], float]] = OrderedDict()
        #: key -> its ids in the window (:meth:`neutralise`).
        self._by_key: dict[str, set[str]] = {}
        for rid, key, target in entries or ():
            self._entries[rid] = (key, target, now)
            self._by_key.setdefault(key, set()).add(rid)
        # Entry number k sits at index k - 1 - _base of _order; _first.._next-1 are live.
        self._order: list[str] = list(self._entries)
        self._base = 0
        self._first = 1
        self.next = 1 + len(self._entries)
        self._added: list[RidEntry] = []
        self._forgotten: list[str] = []

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, rid: str) -> bool:
        return rid in self._entries

    def get(self, rid: str) -> tuple[str, dict[str, Record]] | None:
        entry = self._entries.get(rid)
        return None if entry is None else (entry[0], entry[1])

    def remember(self, rid: str, key: str, target: dict[str, Record], now: float) -> bool:
        """Record ``rid``; False (and nothing changes) if it is already known."""
        if rid in self._entries:
            return False
        self._entries[rid] = (key, target, now)
        self._order.append(rid)
        self.next += 1
        self._added.append((rid, key, target))
        rids = self._by_key.get(key)
        if rids is None:
            self._by_key[key] = {rid}
        else:
            rids.add(rid)
        return True

    def neutralise(self, keys: list[str]) -> int:
        """The targets of the ids of ``keys`` (collected) set to ``{}``, in place (their
        order in the window kept) and persisted with the batch; returns how many."""
        entries = self._entries
        count = 0
        for key in keys:
            for rid in self._by_key.pop(key, ()):
                _, target, at = entries[rid]
                if target:
                    entries[rid] = (key, {}, at)
                    self._added.append((rid, key, {}))
                    count += 1
        return count

    def take_changes(self) -> tuple[list[RidEntry], list[str]]:
        """Entries added and ids forgotten since the last call (to persist)."""
        added, self._added = self._added, []
        forgotten, self._forgotten = self._forgotten, []
        return added, forgotten

    def prune(self, now: float) -> None:
        entries = self._entries
        while entries:
            rid, (_, _, at) = next(iter(entries.items()))
            if len(entries) > self.window or now - at > self.max_age_s:
                key = entries.popitem(last=False)[1][0]
                rids = self._by_key.get(key)
                if rids is not None:
                    rids.discard(rid)
                    if not rids:
                        del self._by_key[key]
                self._first += 1
                self._forgotten.append(rid)
            else:
                break
        dead = self._first - 1 - self._base
        if dead > 4096 and dead * 2 > len(self._order):
            del self._order[:dead]  # amortised O(1) per pruned id
            self._base += dead

    def page(self, epoch: str, after: int) -> tuple[list[RidEntry], int, bool]:
        """Entries after position ``after`` (0 for a different epoch: start over), the
        position of the last one returned, and whether more follow."""
        if epoch != self.epoch:
            after = 0
        start = max(after + 1, self._first)
        index = start - 1 - self._base
        entries = self._entries
        page = [(rid, entries[rid][0], entries[rid][1])
                for rid in self._order[index:index + RIDS_PER_PAGE]]
        cursor = start + len(page) - 1
        return page, cursor, cursor < self.next - 1
