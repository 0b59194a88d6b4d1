"""Expiry and collection in the keyspace (issue 21): a part of :class:`.keyspace.Keyspace`
(its base class, as :class:`.merging.Merges` is), apart from the counting path.

* :meth:`Lives.exists`, :meth:`Lives.deadline`, :meth:`Lives.expire`: a key's life at a
  wall time (the rules are :mod:`.expiry`'s, the reference :func:`.pncounter.expire`).
* :meth:`Lives.dead`: the keys dead at a wall time, in bounded work.  Expired keys come
  from a *deadline heap* of ``(deadline, key)`` entries pushed whenever a key's deadline
  changes (the flush, the merges, the load) and never updated in place: an entry is
  checked against the key when it is popped (the key may have moved its deadline, been
  collected, or started a new life).  Keys that a reset (or a merge) left not existing at
  their floor come from the *candidates* the flush and the merges note.  Both feed one
  ordered set of dead keys, checked again on every call (a merge may have revived one).
* :meth:`Lives.collect`: removes dead keys from memory, the hash tree, the segments and
  the sorted index; raises the node's *high-water* (pncounter's docstring says why) with
  the totals of its own records; the next flush reports the removal and the high-water.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Iterable

from .expiry import DEFAULT_META, META, ExpireMode, Meta, allowed, effective_floor, set_register
from .expiry import future_deadline as _future
from .hashtree import key_digest, segment_of
from .merging import DEADLINE_AT, Merges
from .pncounter import Record, State, birth, counting, meta_of
from .pncounter import exists as state_exists
from .records import HEAD, HEAD_SIZE, LIVE, REC, live_of, unpack

_U64 = struct.Struct("<Q")
#: Where the floor sits in a packed state's header (``<QBQQQ``: hash, flags, F, S, D).
FLOOR_AT = 9

#: Deadline entries ``expiry_stats`` looks at, at most (beyond it, it estimates).
STATS_SAMPLE = 4096
#: Deadline entries popped per collection asked for (``dead(limit)``): a burst of keys
#: expiring together is taken in slices, never in one long pause.
_POPS_PER_KEY = 4


class Lives(Merges):
    """Expiry and collection over the keyspace's state (declared in :class:`.Merges`,
    set by ``Keyspace.__init__``)."""

    _dead: dict[str, int]
    _removed: list[str]
    high_water: tuple[int, int]
    _high_water_moved: bool
    #: This node's own slot (set by the node core): whose totals the high-water keeps.
    own_slot: int | None
    #: Keys popped dead from the deadline heap (``zcounter_expired_keys_total``).
    expired_total: int

    def _held(self, key: str) -> bool:
        return key in self._packed or key in self._hot

    def meta(self, key: str) -> Meta:
        """The key's meta ((0, 0, 0) if it has none or is not held)."""
        hot = self._hot.get(key)
        if hot is not None:
            return hot.meta
        packed = self._packed.get(key)
        if packed is None:
            return DEFAULT_META
        _, _, floor, set_ms, deadline = HEAD.unpack_from(packed)
        return floor, set_ms, deadline

    def exists(self, key: str, now_ms: int) -> bool:
        """True when, at ``now_ms``, some counting record of ``key`` holds an update no
        reset covered (a key that does not exist reads as never written)."""
        hot = self._hot.get(key)
        if hot is not None:
            meta = hot.meta
            floor = effective_floor(meta, now_ms) if meta[0] or meta[2] else 0
            return live_of(hot.records.values(), floor)
        packed = self._packed.get(key)
        if packed is None:
            return False
        _, flags, floor, _, deadline = HEAD.unpack_from(packed)
        if not deadline or now_ms < deadline or deadline <= floor:
            return bool(flags & LIVE)  # the flag is existence at the floor F
        return live_of(unpack(packed).values(), deadline)

    def deadline(self, key: str, now_ms: int) -> int:
        """-2 if ``key`` does not exist at ``now_ms``, -1 if it has no future deadline,
        else its deadline (unix ms)."""
        if not self.exists(key, now_ms):
            return -2
        return _future(self.meta(key), now_ms) or -1

    def expire(self, key: str, at_ms: int | None, mode: ExpireMode | None,
               now_ms: int) -> bool:
        """EXPIRE (``at_ms``, unix ms) or PERSIST (None) at ``now_ms``; True if it
        changed something (:func:`.pncounter.expire`, the reference: a deadline not after
        ``now_ms`` removes the key at once, as an observed reset).  The flush publishes
        the new meta as this node's."""
        if not self.exists(key, now_ms):
            return False
        current = _future(self.meta(key), now_ms)
        if at_ms is None:
            if not current:
                return False
            deadline = 0
        else:
            if not allowed(mode, current, at_ms):
                return False
            if at_ms <= now_ms:
                self.reset(key, now_ms)
                return True
            deadline = at_ms
        hot = self._touch(key)
        hot.meta = set_register(hot.meta, now_ms, deadline)
        hot.local_meta = True
        return True

    def reset(self, key: str, now_ms: int) -> dict[str, Record]:
        raise NotImplementedError  # Keyspace's

    def dominates(self, key: str, state: State) -> bool:
        raise NotImplementedError  # Keyspace's

    def state(self, key: str) -> dict[str, Record]:
        raise NotImplementedError  # Keyspace's

    def covers(self, key: str, state: State, now_ms: int) -> bool:
        """Whether a session that has seen ``state`` of ``key`` may be answered from
        here at ``now_ms``: we hold everything it holds; or it is dead at ``now_ms``
        and what we hold tells no older story - nothing (the key was collected: it was,
        only once every node held it dead), a state dead too, or a newer life: what
        makes our key exist was born at or after the end of the life ``state`` saw (its
        effective floor), and we hold every record of ``state`` born since.  Without
        this, a session that saw a key expire would find every node "behind" forever
        once the key is collected (its new life starts with no meta)."""
        if self.dominates(key, state):
            return True
        if state_exists(state, now_ms):
            return False
        if not self._held(key) or not self.exists(key, now_ms):
            return True
        end = effective_floor(meta_of(state), now_ms)
        if not end or any(birth(r) < end and (r[0] > r[2] or r[1] > r[3])
                          for r in counting(self.state(key), now_ms)):
            return False  # the life it saw end (or a reset of it) has not ended here
        return self.dominates(key, {s: r for s, r in state.items()
                                    if s != META and birth(r) >= end})

    def dead(self, now_ms: int, limit: int) -> list[str]:
        """Up to ``limit`` keys dead at ``now_ms`` (expired: oldest deadline first; then
        reset or merged dead), each checked now.  Bounded work: at most
        ``4 * limit`` deadline entries and as many candidates are looked at per call,
        plus the dead keys already found (what a collection takes next)."""
        dead = self._dead
        heap = self._deadlines
        budget = _POPS_PER_KEY * limit
        while heap and heap[0][0] <= now_ms and budget:
            budget -= 1
            deadline, key = heapq.heappop(heap)
            floor, _, current = self.meta(key)
            if current != deadline:
                continue  # moved, collected or never held: a stale entry
            if deadline > floor:
                self._fold(key, deadline)
            if key not in dead and not self.exists(key, now_ms):
                dead[key] = deadline
                self.expired_total += 1
        candidates = self._candidates
        for key in list(candidates)[:_POPS_PER_KEY * limit]:
            del candidates[key]
            if key not in dead and self._held(key) and not self.exists(key, now_ms):
                dead[key] = now_ms
        out: list[str] = []
        revived: list[str] = []
        for key in dead:
            if len(out) == limit:
                break
            if self._held(key) and not self.exists(key, now_ms):
                out.append(key)
            else:
                revived.append(key)
        for key in revived:
            del dead[key]
        return out

    def _fold(self, key: str, deadline: int) -> None:
        """Make an observed expiry final: raise ``key``'s floor to its passed deadline.

        Why (found by the simulator, seeds 12, 34, 86, 144 among others): the register is
        last-writer-wins, so a register written by a node that never held this one - a
        node that collected the key, or never received it, stepping it with a ttl -
        replaces it at the merge, and its passed deadline, which alone kept the old
        life's records from counting, is gone: they counted again (A: -2 with ttl 1 s;
        C, holding nothing, +4 with ttl later; merged, 2 instead of 4).  Rule R covers
        an overwrite by a node that holds the register; this covers every other one: each
        node holding the key folds the deadline into the floor ``F`` (merged by max, so
        it survives any register) as soon as it sees the deadline pass.  It is a merge of
        ``{META: (deadline, 0, 0)}`` (the default register is the bottom: only ``F``
        moves), through the tested merge path, persisted by the next flush and not
        published: every holder folds on its own, and a repair carries it to the rest.
        The cost, stated in WRITEUP 15.2: an expiry a node has seen pass is final - a
        PERSIST or a later deadline made elsewhere that had not reached it loses."""
        self.merge_many({key: {META: (deadline, 0, 0)}})

    def fold_passed(self, keys: Iterable[str], now_ms: int) -> None:
        """Fold, before a merge into them, the deadlines of held ``keys`` that have
        passed at ``now_ms`` and are not folded yet (:meth:`_fold`'s rule, applied at
        once rather than at the next collection round).  Why (the simulator's seed 5086):
        a register arriving between the deadline and the round replaced it, and records
        this node had taken before the deadline counted again, though this node already
        read the key as expired.  One header read per held key (the intake calls it for
        every key it merges)."""
        packed_of = self._packed
        for key in keys:
            hot = self._hot.get(key)
            if hot is not None:
                floor, _, deadline = hot.meta
            else:
                packed = packed_of.get(key)
                if packed is None:
                    continue
                deadline = _U64.unpack_from(packed, DEADLINE_AT)[0]
                if not deadline:
                    continue
                floor = _U64.unpack_from(packed, FLOOR_AT)[0]
            if deadline and floor < deadline <= now_ms:
                self._fold(key, deadline)

    def dead_since(self, key: str) -> int | None:
        """When ``key`` was found dead (its deadline, or the wall time a :meth:`dead`
        call saw it dead after a reset), or None: the collection lag's start."""
        return self._dead.get(key)

    def collect(self, keys: list[str]) -> list[tuple[str, bytes]]:
        """Remove ``keys`` (the caller checked that they are dead and that every node
        holds them so) from memory, the hash tree, the segments and the sorted index;
        returns ``(key, packed state)`` of those removed.  A key changed in the open
        batch is skipped (its state is not the one confirmed).  The next flush reports
        the removals and a raised high-water."""
        out: list[tuple[str, bytes]] = []
        gp, gn = self.high_water
        own = self.own_slot
        for key in keys:
            if key in self._hot:
                continue
            packed = self._packed.pop(key, None)
            if packed is None:
                continue
            self._adopted.pop(key, None)
            key_hash, flags = HEAD.unpack_from(packed)[:2]
            segment = segment_of(key_digest(key.encode()))
            if key_hash:
                self.tree.toggle(segment, key_hash)
            keys_of = self._segments.get(segment)
            if keys_of is not None:
                keys_of.remove(key)
                if not keys_of:
                    del self._segments[segment]
            if self._sorted is not None:
                self._sorted.discard(key)
            self.live -= flags & LIVE
            self._dead.pop(key, None)
            self._candidates.pop(key, None)
            if own is not None:
                for s, p, n, _, _, _ in REC.iter_unpack(memoryview(packed)[HEAD_SIZE:]):
                    if s == own:
                        gp, gn = max(gp, p), max(gn, n)
            self._removed.append(key)
            out.append((key, packed))
        if (gp, gn) != self.high_water:
            self.high_water = (gp, gn)
            self._high_water_moved = True
        return out

    def live_at(self, now_ms: int) -> int:
        """The keys that exist at ``now_ms`` (DBSIZE): :attr:`live` counts a key by its
        existence at its floor ``F`` (the flag), which a passed deadline does not lower
        until the key is collected; those keys are taken off here.  They are among the
        deadline heap's passed entries (each key's current deadline has one, until
        :meth:`dead` pops it) and the dead keys already popped, so the work is bounded by
        the keys expired but not yet collected, never by the keyspace."""
        heap = self._deadlines
        seen: set[str] = set()
        expired = 0
        stack = [0] if heap and heap[0][0] <= now_ms else []
        while stack:  # the heap's passed entries: a subtree of the heap, from its root
            i = stack.pop()
            seen.add(heap[i][1])
            stack += (c for c in (2 * i + 1, 2 * i + 2) if c < len(heap) and heap[c][0] <= now_ms)
        seen.update(self._dead)
        for key in seen:
            packed = self._packed.get(key)
            if packed is None:
                continue
            _, flags, floor, _, deadline = HEAD.unpack_from(packed)
            # Counted by the flag, yet ended by a passed deadline (``exists``' own test).
            if (flags & LIVE and deadline and now_ms >= deadline > floor
                    and not live_of(unpack(packed).values(), deadline)):
                expired += 1
        return self.live - expired

    def expiry_stats(self, now_ms: int) -> tuple[int, int]:
        """(keys with a future deadline, their average time left in ms), from the
        deadline heap (each key counted once, at its current deadline).

        Bounded work (``INFO keyspace`` and ``status`` call it on a client's request):
        exact while the heap holds at most :data:`STATS_SAMPLE` entries; beyond that,
        both figures are estimated from :data:`STATS_SAMPLE` entries taken at an even
        stride (the count as the valid share of the sample times the heap's length).
        Redis's own ``avg_ttl`` is an estimate from sampled keys too.  Walking the whole
        heap took 1.4 s of the node's loop per ``status`` or ``INFO keyspace`` at a
        million volatile keys; sampled, 5.7 ms (same run)."""
        heap = self._deadlines
        stride = max(1, len(heap) // STATS_SAMPLE)
        seen: set[str] = set()
        total = 0
        looked = 0
        for i in range(0, len(heap), stride):
            deadline, key = heap[i]
            looked += 1
            if deadline > now_ms and key not in seen and self.meta(key)[2] == deadline:
                seen.add(key)
                total += deadline - now_ms
        if not seen:
            return 0, 0
        count = len(seen) if stride == 1 else round(len(seen) * len(heap) / looked)
        return count, total // len(seen)
