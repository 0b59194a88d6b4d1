"""Collection: dead keys leave memory, the hash tree, the log and the checkpoint once
every node holds them dead (spec section 5; WRITEUP, "Collection").

A key is *dead* when it does not exist at the node's wall clock: expired, or every
counting record reset (:meth:`.Keyspace.dead` finds them, oldest deadline first).  Its
state cannot simply be dropped: a node that still held it live, or a stale message
carrying an older state of it, would bring its counts back (resurrection).  So:

1. Every ``gc_interval_s`` a *round* takes up to :data:`MAX_HOLD_KEYS` dead keys and asks
   every peer, with one :class:`.Hold` each, whether it holds each key dead with the
   same key hash (or has collected it already).  A peer answers (:class:`.Holding`) only
   after its batch's commit (rule R1), fsynced if it confirms anything, so a "yes" is
   durable.
2. A key every peer has confirmed, still dead here with the hash they confirmed, is
   collected (:meth:`.Keyspace.collect`; its removal is persisted by the batch's commit,
   ``Persist.removed``) and its dead state kept as a *grave* for ``gc_grace_s``, in memory.
3. A peer that does not confirm (down, cut, behind) holds those keys back: the node
   remembers since when it waits for each peer (``status``), asks again every interval
   (a silent peer every ``peer_timeout_s``, so a cut peer's queue does not fill with
   copies), and carries on by itself when the answers come.

Why that is safe, with :mod:`.intake`'s rules for states of keys not held: when a key is
collected every node holds the same dead state durably, and states only grow, so every
state read from a keyspace afterwards is that dead state or newer (a new life, which
must be adopted).  A state read *before* - a delayed, duplicated or replayed delta or
merge - arrives either within the grace (its key is a grave: merged into the grave, it
stays dead) or later, when it is older than ``max_message_age_s`` and dropped
(``gc_grace_s >= max_message_age_s + 2 * max_clock_skew_s``, checked by config).  A
restart loses the graves: then states sent before the process started are dropped (the
start-time rule).

The core calls :meth:`Collector.run` at the end of a batch, right after the keyspace's
flush, when a round is due or answers came in: no key is half-changed then.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from ..config import Settings
from ..model.keyspace import Keyspace
from ..model.pncounter import Record
from .batch import Batch, Calls, Kind
from .messages import MAX_HOLD_KEYS, Hold, Holding
from .outputs import ClientId, LogLevel, ToClient
from .peers import Liveness, Peer
from .rids import RidLog
from .stats import NodeStats

#: Graves held at most.  A round collects at most MAX_HOLD_KEYS keys, so at the default
#: settings (a round every 0.5 s, graves kept 10 s) at most 4,000 x 20 = 80,000 graves
#: exist at once; the rate-limit target of issue 21 (2,000 keys dying per second) keeps
#: ~20,000.  A grave is a dead state by slot name, ~0.5-1 KB with three slots, so this
#: bounds them at ~100 MB.  When it is full, collection waits for graves to expire
#: rather than dropping one early: a grave dropped early would let a stale state of its
#: key back in (safety before memory).
MAX_GRAVES = 100_000
#: Hold requests remembered per peer while unanswered (older answers are dropped).
OPEN_HOLDS_PER_PEER = 8


@dataclass(slots=True)
class Grave:
    state: dict[str, Record]
    #: Wall clock (unix ms) until which it is kept.
    until_ms: int


class Graves:
    """Collected keys' dead states, for ``gc_grace_s`` (memory only: a restart loses
    them, which the start-time rule covers).  Kept in collection order, which is also
    their expiry order (one grace for all), so pruning pops from the front."""

    def __init__(self, grace_s: float) -> None:
        self._grace_ms = int(grace_s * 1000)
        self._graves: dict[str, Grave] = {}

    def __len__(self) -> int:
        return len(self._graves)

    def __contains__(self, key: str) -> bool:
        return key in self._graves

    def get(self, key: str) -> dict[str, Record] | None:
        grave = self._graves.get(key)
        return None if grave is None else grave.state

    def add(self, key: str, state: dict[str, Record], now_ms: int) -> None:
        self._graves.pop(key, None)  # a later collection of the key: to the back
        self._graves[key] = Grave(state, now_ms + self._grace_ms)

    def update(self, key: str, state: dict[str, Record]) -> None:
        """A stale state merged into the grave (still dead): same grace."""
        self._graves[key].state = state

    def pop(self, key: str) -> None:
        self._graves.pop(key, None)

    def prune(self, now_ms: int) -> None:
        graves = self._graves
        while graves:
            key, grave = next(iter(graves.items()))
            if grave.until_ms > now_ms:
                return
            del graves[key]


class Collector:
    """The collection rounds (module doc), and this node's answers to peers' Holds."""

    def __init__(self, node_id: int, settings: Settings, keys: Keyspace,
                 peers: Mapping[int, Peer], graves: Graves, rids: RidLog, batch: Batch,
                 calls: Calls, stats: NodeStats) -> None:
        self.node_id = node_id
        self._settings = settings
        self._keys = keys
        self._peers = peers
        self.graves = graves
        self._rids = rids
        self._batch = batch
        self._calls = calls
        self._stats = stats
        #: peer -> {key: hash} it confirmed (pruned to the round's keys each round).
        self._confirmed: dict[int, dict[str, int]] = {p: {} for p in peers}
        #: Hold id -> its peer and (key, hash) pairs, while unanswered.
        self._sent: dict[int, tuple[int, tuple[tuple[str, int], ...]]] = {}
        self._last_hold: dict[int, float] = {}
        #: peer -> wall clock (unix ms) since when the oldest dead key waiting for its
        #: answer has been dead.
        self.waiting: dict[int, int] = {}
        #: The round's keys -> since when dead, unix ms: an expired key's deadline, else
        #: when first found dead (:meth:`.Keyspace.dead_since`): the lag's start.
        self._dead_since: dict[str, int] = {}
        #: Called with each collected key's delay (s, from its deadline or from when it
        #: was found dead): the runtime's histogram (``zcounter_collection_delay_seconds``).
        self.observe_delay: Callable[[float], object] | None = None
        #: False: no rounds (the simulator on main, whose oracle does not know
        #: collection yet: branch ttl-sim teaches it and drops the switch).
        self.enabled = True
        self._next_round = batch.now
        #: Answers came in since the last run: run again at the batch's end.
        self._answered = False
        self._graves_full_logged = False

    # ------------------------------------------------------------------ status

    @property
    def pending(self) -> int:
        """Dead keys of the last round not collected yet (at most MAX_HOLD_KEYS)."""
        return len(self._dead_since)

    def lag_s(self, now_ms: int) -> float:
        """How long the oldest dead key not yet collected has been dead: since its
        deadline (expired), or since it was found dead (reset)."""
        if not self._dead_since or not now_ms:
            return 0.0
        return max(0, now_ms - min(self._dead_since.values())) / 1000.0

    def status(self) -> dict[str, object]:
        wall = self._batch.wall_ms
        return {"pending": self.pending,
                "waiting_for": {str(p): since / 1000.0 for p, since in sorted(
                    self.waiting.items())},
                "graves": len(self.graves),
                "collected": self._stats.collected_keys,
                "lag_s": round(self.lag_s(wall), 3)}

    # ------------------------------------------------------------------ time

    def deadline(self) -> float:
        """When :meth:`run` is due next (never without a wall clock)."""
        return self._next_round if self.enabled and self._batch.wall_ms else math.inf

    def due(self, now: float) -> bool:
        return (self.enabled and bool(self._batch.wall_ms)
                and (self._answered or now >= self._next_round))

    def run(self, now: float) -> None:
        """A round: collect what every peer confirmed, ask for the rest.  Called by the
        core between its flush and the batch's outputs (no key is hot)."""
        self._answered = False
        wall = self._batch.wall_ms
        self.graves.prune(wall)
        new_round = now >= self._next_round
        if new_round:
            self._next_round = now + self._settings.gc_interval_s
        keys = self._keys
        dead = keys.dead(wall, MAX_HOLD_KEYS)
        self._stats.expired_keys = keys.expired_total
        hashes = {k: keys.key_hash(k) for k in dead}
        since = keys.dead_since
        self._dead_since = {k: since(k) or self._dead_since.get(k, wall) for k in dead}
        for peer, confirmed in self._confirmed.items():
            self._confirmed[peer] = {k: h for k, h in confirmed.items() if hashes.get(k) == h}
        ready = [k for k, h in hashes.items()
                 if all(c.get(k) == h for c in self._confirmed.values())]
        self._collect(ready, wall)
        for peer_id, confirmed in self._confirmed.items():
            missing = tuple((k, h) for k, h in hashes.items()
                            if k in self._dead_since and confirmed.get(k) != h)
            if not missing:
                self.waiting.pop(peer_id, None)
                continue
            # Since when the oldest key it has not confirmed has been dead, not since
            # when some key has been missing: under a steady load a dead key always
            # waits for the next round, so "since first missing" never reset and a cut
            # peer was still named 15 s after the heal while it answered every round
            # (tests/faults/test_ttl_partition.py).
            dead_since = self._dead_since
            self.waiting[peer_id] = min(dead_since[k] for k, _ in missing)
            if new_round and self._hold_due(peer_id, now):
                self._hold(peer_id, missing, now)

    def _hold_due(self, peer_id: int, now: float) -> bool:
        s = self._settings
        live = self._peers[peer_id].liveness(now, s.peer_timeout_s) is Liveness.LIVE
        every = s.gc_interval_s if live else max(s.gc_interval_s, s.peer_timeout_s)
        return now - self._last_hold.get(peer_id, -math.inf) >= every - 1e-9

    def _hold(self, peer_id: int, keys: tuple[tuple[str, int], ...], now: float) -> None:
        self._last_hold[peer_id] = now
        request = Hold(self._calls.new_id(), self.node_id, keys)
        self._sent[request.id] = (peer_id, keys)
        if len(self._sent) > OPEN_HOLDS_PER_PEER * max(1, len(self._peers)):
            del self._sent[next(iter(self._sent))]  # the oldest: its answer is dropped
        self._calls.send(peer_id, request, Kind.HOLD)

    def _collect(self, ready: list[str], wall: int) -> None:
        room = MAX_GRAVES - len(self.graves)
        if len(ready) > room:
            if not self._graves_full_logged:
                self._graves_full_logged = True
                self._batch.log(f"collection waits: {len(self.graves)} graves held (at most "
                                f"{MAX_GRAVES}, kept gc_grace_s = "
                                f"{self._settings.gc_grace_s:g}s each)", LogLevel.WARNING)
            ready = ready[:max(0, room)]
        else:
            self._graves_full_logged = False
        if not ready:
            return
        keys = self._keys
        states = {k: keys.state(k) for k in ready}
        removed = keys.collect(ready)
        observe = self.observe_delay
        for key, _ in removed:
            self.graves.add(key, states[key], wall)
            dead_since = self._dead_since.pop(key, wall)
            if observe is not None:
                observe(max(0, wall - dead_since) / 1000.0)
        self._stats.collected_keys += len(removed)
        # A retry of an old request id must not merge the old life's records into a
        # later one (rids.py).
        self._rids.neutralise([key for key, _ in removed])
        for confirmed in self._confirmed.values():
            for key, _ in removed:
                confirmed.pop(key, None)

    # ------------------------------------------------------------------ answers

    def on_holding(self, peer: Peer, reply: Holding) -> bool:
        """A peer's answer to our Hold; False if dropped (not ours, or malformed)."""
        sent = self._sent.pop(reply.id, None)
        if sent is None or sent[0] != peer.node_id or len(reply.ok) != len(sent[1]):
            return False
        confirmed = self._confirmed[peer.node_id]
        for (key, key_hash), ok in zip(sent[1], reply.ok, strict=True):
            if ok:
                confirmed[key] = key_hash
        self._answered = True
        return True

    def answer_hold(self, client: ClientId, request: Hold) -> None:
        """Do we hold each key dead with that hash, or is it a grave here?"""
        keys = self._keys
        wall = self._batch.wall_ms
        ok = tuple(_holds(keys, self.graves, request.keys, wall))
        if any(ok):
            # The answer vouches that we hold these durably: fsync first (as a Merge's).
            self._batch.sync = True
        self._batch.keys += len(ok)
        self._batch.messages.append(ToClient(client, Holding(request.id, self.node_id, ok)))


def _holds(keys: Keyspace, graves: Graves, asked: Iterable[tuple[str, int]],
           wall: int) -> Iterable[bool]:
    for key, key_hash in asked:
        if key in keys:  # held (a grave of it would be an older life's)
            yield bool(wall) and keys.key_hash(key) == key_hash and not keys.exists(key, wall)
        else:
            yield key in graves


__all__ = ["MAX_GRAVES", "Collector", "Grave", "Graves"]
