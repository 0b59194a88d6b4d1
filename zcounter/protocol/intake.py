"""States from peers: checked against the cluster and the bounds, then merged.

Every state a peer sends - in a delta, a merge, a fetch's answer or a repair's page -
comes in through :class:`Intake`, so the checks are written once: every slot must name
a node of the cluster, no key may grow records of more than ``MAX_SLOTS_PER_KEY`` slots,
and a peer holding more of this node's own slot than this node is counted and logged.
A message that fails a check is dropped whole (counted in ``dropped_peer_messages``).

No resurrection (spec section 5; :mod:`.collect` says why it is safe), counted in
``stale_states_dropped``:

* a message whose states its sender read (``at_ms``) more than ``max_message_age_s`` ago
  by our clock is dropped whole, like a lost one: the delta stream shows the gap and a
  repair (fresh reads) brings what it carried; a merge or a fetch is asked again.
  Whole, not only its keys not held: a key collected and then written again after its
  grace is held again, as a new life that knows nothing of the old one, and an old
  record of another node's slot merged into it would count again;
* a state of a key that is a grave here (collected within ``gc_grace_s``) is merged into
  the grave's; still dead, it stays a grave (dropped); if it exists, it is a new life
  and the merged state (old death included) is adopted;
* a state of a key not held, in a message we did not ask for (deltas, merges), read
  before this process started (graves do not survive a restart; with a margin of
  ``max_clock_skew_s``), is dropped.  Answers to our own requests were read after we
  asked.  Only keys not held: for a second after every start, dropping whole messages
  made every ``wait=majority`` write wait for the one peer that had not just started
  (tests/integration/test_exactly_once.py ran into its timeouts);
* anything else is merged as always, dead states of keys not held included (a node must
  hold a dead key to confirm its collection, and then collects it itself).

Without a wall clock from the runtime (``Batch.wall_ms`` 0) or from the sender
(``at_ms`` 0, a 0.2 node) the age and start rules stay off.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from ..config import Settings
from ..limits import MAX_SLOTS_PER_KEY, OWN_SLOT_WARNING_INTERVAL_S
from ..model.expiry import META
from ..model.keyspace import Keyspace
from ..model.page import META_INTS, REC_INTS, StatePage
from ..model.pncounter import Record, exists, merge, slot_node
from .batch import Batch
from .collect import Graves
from .messages import RidEntry, States
from .outputs import LogLevel
from .rids import RidLog
from .stats import NodeStats


class Intake:
    def __init__(self, node_id: int, slot_name: str, peers: Mapping[int, object],
                 keys: Keyspace, rids: RidLog, batch: Batch, stats: NodeStats,
                 settings: Settings, graves: Graves) -> None:
        self.node_id = node_id
        self.slot_name = slot_name
        self._peers = peers
        self._keys = keys
        self._rids = rids
        self._batch = batch
        self._stats = stats
        #: When the last "a peer holds more of our own slot" warning was logged.
        self._own_slot_warned = -math.inf
        self._graves = graves
        self._max_age_ms = settings.max_message_age_s * 1000.0
        self._skew_ms = settings.max_clock_skew_s * 1000.0
        #: False: the age and start-time rules are off (the simulator on main, with
        #: collection off: branch ttl-sim drops the switch).
        self.screening = True

    def drop(self, reason: str) -> None:
        self._stats.dropped_peer_messages += 1
        self._batch.log(f"dropped peer message: {reason}", LogLevel.DEBUG)

    def accept(self, states: States, sender: int, at_ms: int = 0,
               solicited: bool = False) -> int | None:
        """Validate a peer's states against the cluster and the bounds, screen those of
        keys not held (module doc), then merge.  ``at_ms``: when the sender read them;
        ``solicited``: an answer to a request of ours.  Returns how many keys grew, or
        None if the message was dropped."""
        if self._dropped_stale(len(states), at_ms, sender):
            return None
        keys = self._keys
        own = self.slot_name
        seen: set[str] = set()
        ahead: list[str] = []
        unknown: list[str] = []
        for key, state in states.items():
            if key not in keys:
                unknown.append(key)
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
        if unknown and (self._graves or self._before_start(at_ms, solicited)):
            states = self._screen(states, unknown, self._before_start(at_ms, solicited))
        if self._batch.wall_ms:  # an expiry this node reads as passed is final first
            keys.fold_passed(states, self._batch.wall_ms)
        return keys.merge_many(states)

    def accept_page(self, page: StatePage, sender: int, at_ms: int = 0) -> int | None:
        """:meth:`accept` for a repair's page of states (always an answer to our own
        request): slots are checked once per page (its table), and keys we hold nothing
        of are stored straight from the page (:meth:`.Keyspace.merge_page`)."""
        if self._dropped_stale(len(page), at_ms, sender):
            return None
        unknown = [slot for slot in page.slots if not self._known_slot(slot)]
        if unknown:  # a table may name slots no record uses: only those used count
            used = page.used_slots()
            bad = [slot for slot in unknown if slot in used]
            if bad:
                self.drop(f"slot {bad[0]!r} from node {sender} names an unknown node")
                return None
        keys = self._keys
        not_held: list[str] = []
        for key, flat in page.records.items():
            if key not in keys:
                not_held.append(key)
            if self._too_many_slots(key, page[key], (len(flat) - META_INTS) // REC_INTS,
                                   sender):
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
        grew = 0
        if not_held and self._graves:
            page, grew = self._screen_page(page, not_held)
        if self._batch.wall_ms:
            keys.fold_passed(page.records, self._batch.wall_ms)
        return grew + self._keys.merge_page(page)

    def _dropped_stale(self, count: int, at_ms: int, sender: int) -> bool:
        """The age rule (module doc): True if the message is dropped."""
        if not count or not self._too_old(at_ms):
            return False
        self._stats.stale_states_dropped += count
        self._batch.log(f"dropped {count} states from node {sender} read at {at_ms} (our "
                        f"clock {self._batch.wall_ms}, started {self._batch.start_ms})",
                        LogLevel.DEBUG)
        return True

    def _screen(self, states: States, unknown: list[str], before_start: bool = False
                ) -> States:
        """``states`` of keys not held (``unknown``) screened: those of graves merged
        into them (dropped while dead, the merged state if it is a new life), the
        others dropped if ``before_start``."""
        graves = self._graves
        wall = self._batch.wall_ms
        dropped = 0
        out: States | None = None
        for key in unknown:
            state: dict[str, Record] | None = states[key]
            grave = graves.get(key)
            if grave is not None:
                state = merge(grave, states[key])
                if exists(state, wall):
                    graves.pop(key)  # a new life: adopted
                else:
                    graves.update(key, state)
                    state = None
            elif before_start:
                state = None
            if state is states[key]:
                continue
            if out is None:
                out = dict(states)
            if state is None:
                dropped += 1
                del out[key]
            else:
                out[key] = state
        if dropped:
            self._stats.stale_states_dropped += dropped
        return states if out is None else out

    def _screen_page(self, page: StatePage, unknown: list[str]) -> tuple[StatePage, int]:
        """:meth:`_screen` for a page: graves leave the page (merged here if a new
        life).  Only they are converted to states by name: a bootstrap's pages are all
        keys not held, and stay on the page's fast path."""
        graves = self._graves
        out = [k for k in unknown if k in graves]
        if not out:
            return page, 0
        adopted = self._screen({k: page[k] for k in out}, out)
        drop = set(out)
        page = StatePage(page.slots, {k: f for k, f in page.records.items() if k not in drop})
        grew = sum(self._keys.merge(key, state) for key, state in adopted.items())
        return page, grew

    def _too_old(self, at_ms: int) -> bool:
        """States read at ``at_ms`` (sender's clock) are older than max_message_age_s.
        ``at_ms`` 0: a 0.2 peer (unknown: fresh, spec section 4); no wall clock here:
        no rule."""
        wall = self._batch.wall_ms
        return self.screening and bool(at_ms and wall) and wall - at_ms > self._max_age_ms

    def _before_start(self, at_ms: int, solicited: bool) -> bool:
        """An unsolicited message read before this process started (skew margin)."""
        return (self.screening and not solicited and bool(at_ms and self._batch.wall_ms)
                and at_ms < self._batch.start_ms + self._skew_ms)

    def merge_target(self, key: str, target: dict[str, Record]) -> None:
        """A remembered request id's target, merged when a retry of it arrives (see
        :mod:`.requests`).  It may be as old as the id window: merged into a key held,
        or into its grave; for a key neither held nor a grave (collected), dropped."""
        if key in self._keys or not self._batch.wall_ms:
            if self._batch.wall_ms:
                self._keys.fold_passed((key,), self._batch.wall_ms)
            self._keys.merge(key, target)
        elif key in self._graves:
            self._screen({key: target}, [key])
            if key not in self._graves:  # a new life
                self._keys.merge(key, target)
        else:
            self._stats.stale_states_dropped += 1

    def learn_rids(self, entries: tuple[RidEntry, ...]) -> None:
        """Request ids a peer applied (or learned): remembered, so a retry of one here
        counts once.  Those of a key collected here within the grace are of its dead
        life (every node held it, so it holds their writes): remembered with the target
        neutralised (``{}``, :mod:`.rids`), so a retry never merges it into a new life.
        Not those of a key whose state the start-time rule dropped: it may be a live
        key this node has not seen yet (a retry's target is dropped while it is not
        held, :meth:`merge_target`)."""
        now = self._batch.now
        graves = self._graves
        keys = self._keys
        for rid, key, target in entries:
            if graves and key in graves and key not in keys:
                target = {}
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
