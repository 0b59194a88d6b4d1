"""States from peers: checked against the cluster and the bounds, then merged.

Every state a peer sends - in a delta, a merge, a fetch's answer or a repair's page -
comes in through :class:`Intake`, so the checks are written once: every slot must name
a node of the cluster, no key may grow records of more than ``MAX_SLOTS_PER_KEY`` slots,
and a peer holding more of this node's own slot than this node is counted and logged.
A message that fails a check is dropped whole (counted in ``dropped_peer_messages``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from ..limits import MAX_SLOTS_PER_KEY, OWN_SLOT_WARNING_INTERVAL_S
from ..model.expiry import META
from ..model.keyspace import Keyspace
from ..model.page import META_INTS, REC_INTS, StatePage
from ..model.pncounter import slot_node
from .batch import Batch
from .messages import RidEntry, States
from .outputs import LogLevel
from .rids import RidLog
from .stats import NodeStats


class Intake:
    def __init__(self, node_id: int, slot_name: str, peers: Mapping[int, object],
                 keys: Keyspace, rids: RidLog, batch: Batch, stats: NodeStats) -> None:
        self.node_id = node_id
        self.slot_name = slot_name
        self._peers = peers
        self._keys = keys
        self._rids = rids
        self._batch = batch
        self._stats = stats
        #: When the last "a peer holds more of our own slot" warning was logged.
        self._own_slot_warned = -math.inf

    def drop(self, reason: str) -> None:
        self._stats.dropped_peer_messages += 1
        self._batch.log(f"dropped peer message: {reason}", LogLevel.DEBUG)

    def accept(self, states: States, sender: int) -> int | None:
        """Validate a peer's states against the cluster and the bounds, then merge.
        Returns how many keys grew, or None if the message was dropped."""
        keys = self._keys
        own = self.slot_name
        seen: set[str] = set()
        ahead: list[str] = []
        for key, state in states.items():
            for slot in state:
                if slot in seen:
                    continue
                seen.add(slot)
                if slot != META and not self._known_slot(slot):
                    self.drop(f"slot {slot!r} from node {sender} names an unknown node")
                    return None
            if self._too_many_slots(key, state, len(state) - (META in state), sender):
                return None
            mine = state.get(own)
            if mine is not None and not keys.dominates(key, {own: mine}):
                ahead.append(key)
        if ahead:
            self._own_slot_ahead(ahead, sender)
        self._batch.keys += len(states)
        return keys.merge_many(states)

    def accept_page(self, page: StatePage, sender: int) -> int | None:
        """:meth:`accept` for a repair's page of states: slots are checked once per
        page (its table), and keys we hold nothing of are stored straight from the
        page (:meth:`.Keyspace.merge_page`)."""
        unknown = [slot for slot in page.slots if not self._known_slot(slot)]
        if unknown:  # a table may name slots no record uses: only those used count
            used = page.used_slots()
            bad = [slot for slot in unknown if slot in used]
            if bad:
                self.drop(f"slot {bad[0]!r} from node {sender} names an unknown node")
                return None
        for key, flat in page.records.items():
            if self._too_many_slots(key, page[key], len(flat) // REC_INTS, sender):
                return None
        own = self.slot_name
        if own in page.slots:
            at = page.slots.index(own)
            dominates = self._keys.dominates
            ahead: list[str] = []
            for key, flat in page.records.items():
                indexes = flat[META_INTS::REC_INTS]
                if at in indexes:
                    i = META_INTS + indexes.index(at) * REC_INTS
                    mine = (flat[i + 1], flat[i + 2], flat[i + 3], flat[i + 4], flat[i + 5])
                    if not dominates(key, {own: mine}):
                        ahead.append(key)
            if ahead:
                self._own_slot_ahead(ahead, sender)
        self._batch.keys += len(page)
        return self._keys.merge_page(page)

    def learn_rids(self, entries: tuple[RidEntry, ...]) -> None:
        """Request ids a peer applied (or learned): remembered, so a retry of one here
        counts once."""
        now = self._batch.now
        for rid, key, target in entries:
            self._rids.remember(rid, key, target, now)

    def _too_many_slots(self, key: str, state: Iterable[str], count: int,
                        sender: int) -> bool:
        """Would merging ``state`` (``count`` slots) give ``key`` records of more than
        ``MAX_SLOTS_PER_KEY`` slots?  Then the message is dropped.  A slot is a node
        incarnation that wrote the key, so legal keys stay far below; without the bound,
        forged slots of made-up incarnations (10,000 per message) grew one key without
        end, and every step to it unpacks all its records.  O(1) per key unless near."""
        if self._keys.record_count(key) + count <= MAX_SLOTS_PER_KEY:
            return False
        if self._keys.slots_after_merge(key, state) <= MAX_SLOTS_PER_KEY:
            return False
        self.drop(f"states from node {sender} would give {key[:40]!r} records of more than "
                  f"{MAX_SLOTS_PER_KEY} slots")
        return True

    def _known_slot(self, slot: str) -> bool:
        owner = slot_node(slot)
        return owner == self.node_id or owner in self._peers

    def _own_slot_ahead(self, keys: list[str], sender: int) -> None:
        """Someone holds more of our own slot than we do: our storage lost commits (e.g.
        power loss with a lying disk) - or, in ``none`` mode, a forged state (the model's
        "Bounds" say why it is adopted all the same).  Max-merge heals the first.
        Counted per key; logged at most once per ``OWN_SLOT_WARNING_INTERVAL_S``: one
        forged page names up to 200,000 keys (it was a line per key)."""
        self._stats.own_slot_ahead += len(keys)
        now = self._batch.now
        if now - self._own_slot_warned < OWN_SLOT_WARNING_INTERVAL_S:
            return
        self._own_slot_warned = now
        more = f" and {len(keys) - 1} more keys" if len(keys) > 1 else ""
        self._batch.log(f"node {sender} holds more of our slot {self.slot_name} for "
                        f"{keys[0]!r}{more} than we do: local storage lost data, or "
                        "(security mode none) a forged state (stat own_slot_ahead counts "
                        f"keys; this warning at most every {OWN_SLOT_WARNING_INTERVAL_S:g}s)",
                        LogLevel.WARNING)
