"""The node's protocol logic, sans I/O.

Theory of operation
-------------------
A node owns one *slot* of the replicated G-Counter (see :mod:`zcounter.crdt`), named by
its id and an *incarnation* drawn when its storage was created.  Increments raise only
that slot.  Everything a node learns from others arrives as slot values and is merged by
per-slot max, so every message below is safe to lose, repeat or reorder.

The core never touches a socket, a clock or a disk.  The runtime feeds it inputs -
client requests, peer requests, broadcasts, peer replies, and ``tick(now)`` - and after
each batch of inputs calls :meth:`NodeCore.take_outputs`, which returns

* ``persist``: slot values and request ids that must be committed durably **before**
  anything else in the batch is sent (this is what makes one commit serve a whole batch
  of increments: group commit), and
* ``messages``: replies to clients, answers to peers, requests to peers and broadcasts.

Replication has three layers, each repairing what the one above may lose:

1. *Updates* (PUB/SUB): after each batch the node broadcasts its own slot's new value and
   the request ids that raised it.  Cheap, fast, and lossy by design (slow joiners, HWM
   drops, partitions).
2. *Heartbeats* (PUB/SUB, every ``heartbeat_interval_s``): the node's own slots again
   plus a digest of its whole state.  A lost update is repaired by the next heartbeat; a
   digest that differs from ours, a gap in a peer's sequence numbers, or a peer silent
   for ``peer_timeout_s`` makes us *pull* that peer's full state (a snapshot, over
   DEALER/ROUTER), at most once per ``snapshot_interval_s`` per peer.  A state pulled
   from any peer repairs slots of nodes we cannot hear at all.
3. *Pushes* (DEALER/ROUTER), only for increments asking ``wait=majority|all``: the node
   pushes the slot to every peer until enough of them answered that they committed it.

Consistency levels: ``wait`` counts nodes known to hold the increment durably (itself
included); ``read`` counts nodes whose state was merged in after the read began.
``majority`` for both gives read-your-acknowledged-writes by quorum intersection.
A client session carries the slots it has seen; a node behind it pulls from its peers
until it dominates them, or refuses with ``behind`` - never answers older.

Exactly-once: an increment may carry a request id.  A node remembers ids it applied or
learned through replication (bounded by count and age; persisted with the increment) and
answers a repeat without applying it again.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field

from .config import Settings
from .crdt import MAX_COUNT, GCounter, make_slot, slot_node
from .wire import (
    Broadcast,
    ClientRequest,
    GetCount,
    Heartbeat,
    Increment,
    Level,
    PeerReply,
    PeerRequest,
    Ping,
    Pull,
    Push,
    Reply,
    Slots,
    Status,
    Tag,
    Update,
)

ClientId = Hashable


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True, slots=True)
class ToClient:
    """Send ``reply`` to the client (or peer) known by routing id ``client``."""

    client: ClientId
    reply: Reply | PeerReply


@dataclass(frozen=True, slots=True)
class ToPeer:
    """Send ``request`` to node ``peer`` over our DEALER connected to its ROUTER."""

    peer: int
    request: PeerRequest


@dataclass(frozen=True, slots=True)
class Publish:
    """Broadcast ``message`` on our PUB socket."""

    message: Broadcast


Message = ToClient | ToPeer | Publish


@dataclass(slots=True)
class Persist:
    """What must be committed before the batch's messages go out.

    ``sync``: the batch acknowledges something only this node vouches for (its own
    increments, or a push it confirms as durable), so the commit must reach the disk
    (fsync) first.  Without it - state merged from peers, ids learned from them - the
    commit need only survive a process crash: after a power loss that data is re-pulled
    from the peers that hold it durably, so paying an fsync for it would buy nothing.
    """

    slots: dict[str, int] = field(default_factory=dict)
    rids: list[tuple[str, str, int]] = field(default_factory=list)  # (rid, slot, value)
    forget: list[str] = field(default_factory=list)
    sync: bool = False

    def __bool__(self) -> bool:
        return bool(self.slots or self.rids or self.forget or self.sync)


@dataclass(frozen=True, slots=True)
class Outputs:
    persist: Persist | None
    messages: list[Message]
    logs: list[str]


# --------------------------------------------------------------------------- internals


@dataclass(slots=True)
class _Peer:
    last_heard: float | None = None
    last_seq: int | None = None
    in_sync: bool = False
    #: Slot values this peer has told us it holds durably (replies only).
    held: dict[str, int] = field(default_factory=dict)
    #: Stamp of the newest pull this peer has answered.  Stamps, not clock readings: a
    #: coarse or stalled clock gives a pull sent before a read began the read's own time,
    #: and counting that stale answer broke read=majority after wait=majority (found by
    #: zcounter.sim, ``bin/sim --seed 184 --nodes 5`` with a 100 ms clock).
    fresh_as_of: int = 0
    #: Stamp of the newest pull sent to this peer.
    pull_stamp: int = 0
    last_pull: float = -math.inf
    last_push: float = -math.inf
    #: Highest slot values pushed to this peer: a value not yet pushed goes out at once.
    pushed: dict[str, int] = field(default_factory=dict)
    want_pull: bool = False
    silent_logged: bool = False
    #: Position in this peer's rid log that we have learned up to (and that log's epoch).
    rid_epoch: str = ""
    rid_cursor: int = 0


@dataclass(slots=True)
class _Wait:
    """An applied increment waiting for ``needed`` nodes to hold ``slot >= value``."""

    client: ClientId
    tag: Tag
    slot: str
    value: int
    needed: int
    deadline: float
    duplicate: bool
    rid: str | None


@dataclass(slots=True)
class _Read:
    """A read (or a gated increment) waiting for fresh peer states / session catch-up."""

    client: ClientId
    request: GetCount | Increment
    needed: int
    deadline: float
    #: Orders this read against pulls (see ``_Peer.fresh_as_of``).
    stamp: int = 0


#: Rid log entries per pull answer (each ~100 bytes: far below the peer message limit).
_RIDS_PER_PULL = 5000


def _budget_s(timeout_ms: int) -> float:
    """How long the node may work on a request: most of the client's timeout, so the
    answer (even a negative one) arrives before the client gives up."""
    return timeout_ms / 1000.0 * 0.8


class NodeCore:
    """One node's protocol state machine.  Feed it inputs; collect :class:`Outputs`."""

    def __init__(
        self,
        node_id: int,
        cluster: list[int],
        incarnation: str,
        settings: Settings,
        now: float,
        slots: Slots | None = None,
        rids: list[tuple[str, str, int]] | None = None,
        fresh: bool = False,
    ) -> None:
        """``fresh``: the storage was just created (first start or a wiped data dir)."""
        if node_id not in cluster:
            raise ValueError(f"node {node_id} is not in the cluster {cluster}")
        self.node_id = node_id
        self.cluster = sorted(cluster)
        self.settings = settings
        self.slot = make_slot(node_id, incarnation)
        self.counter = GCounter(slots or {})
        self._now = now
        self._peers = {p: _Peer() for p in self.cluster if p != node_id}
        self._rids: OrderedDict[str, tuple[str, int, float]] = OrderedDict()
        for rid, slot, value in rids or []:
            self._rids[rid] = (slot, value, now)
        # The rid log: entries are numbered in insertion order, _rid_first.._rid_next-1,
        # contiguous because pruning only removes the oldest.  Numbers restart with the
        # process, so pullers keep a cursor per (peer, epoch).  Entry k sits at index
        # k - 1 - _rid_base of _rid_order, so a page after a cursor is a slice (O(page)),
        # not a walk over the whole window for every pull.
        self._rid_order: list[str] = list(self._rids)
        self._rid_base = 0
        self._rid_first = 1
        self._rid_next = 1 + len(self._rids)
        self._rid_epoch = f"{incarnation}.{now:.6f}"[:64]
        self._persist = Persist()
        self._out: list[Message] = []
        self._logs: list[str] = []
        self._batch_rids: list[str] = []
        self._own_grew = False
        self._seq = 0
        self._next_heartbeat = now
        self._next_req = 1
        self._pulls: dict[int, tuple[int, float, int]] = {}  # id -> (peer, sent at, stamp)
        self._stamp = 0  # increases with every read started and every pull sent
        # A fresh node knows nothing its peers hold (after a wipe: not even its own old
        # slot).  Answering from that empty state would show a client a count going
        # backwards, so until one peer's snapshot arrives - or, if none answers, for one
        # peer timeout - client requests wait as reads that need one fresh peer.
        self._bootstrap_until = (now + settings.peer_timeout_s
                                 if fresh and len(self.cluster) > 1 else -math.inf)
        self._waits: list[_Wait] = []
        self._reads: list[_Read] = []
        self._slots_view: Slots | None = None
        self._own_slots_view: Slots | None = None
        self.stats: dict[str, int] = {
            "increments": 0, "duplicates": 0, "refused": 0, "dropped_peer_messages": 0,
            "pulls_sent": 0, "pushes_sent": 0, "updates_sent": 0, "heartbeats_sent": 0,
            "indeterminate": 0, "behind": 0,
        }

    # ------------------------------------------------------------------ helpers

    @property
    def value(self) -> int:
        return self.counter.value

    def needed(self, level: Level) -> int:
        """How many nodes (this one included) a level asks for."""
        if level == "local":
            return 1
        n = len(self.cluster)
        return n // 2 + 1 if level == "majority" else n

    def _view(self) -> Slots:
        # Replies between two state changes share one immutable-by-convention copy: a
        # burst of reads, statuses or pull answers copies the slot map once.
        if self._slots_view is None:
            self._slots_view = self.counter.slots()
        return self._slots_view

    def _own_slots(self) -> Slots:
        if self._own_slots_view is None:
            self._own_slots_view = {
                s: v for s, v in self.counter.slots().items() if slot_node(s) == self.node_id
            }
        return self._own_slots_view

    def _changed(self, grown: dict[str, int]) -> None:
        if grown:
            self._slots_view = None
            self._own_slots_view = None
            self._persist.slots.update(grown)

    def _reply_ok(self, client: ClientId, tag: Tag, duplicate: bool = False) -> None:
        # Positional: this is the per-increment hot path (keywords cost ~20 % more here).
        self._out.append(ToClient(client, Reply(
            tag, self.node_id, True, self.counter.value, self._view(), duplicate)))

    def _reply_error(self, client: ClientId, tag: Tag, code: str, message: str) -> None:
        self.stats["refused" if code not in ("indeterminate", "behind") else code] += 1
        self._out.append(ToClient(client, Reply(
            id=tag, node=self.node_id, ok=False, error=code, message=message)))

    def _remember_rid(self, rid: str, slot: str, value: int) -> None:
        if rid in self._rids:
            return
        self._rids[rid] = (slot, value, self._now)
        self._rid_order.append(rid)
        self._rid_next += 1
        self._persist.rids.append((rid, slot, value))

    def _accept_slots(self, slots: Slots, sender: int) -> bool:
        """Validate a peer's slots against the cluster and the count bound, then merge."""
        for slot in slots:
            if slot_node(slot) not in self._peers and slot_node(slot) != self.node_id:
                self._drop(f"slot {slot!r} from node {sender} names an unknown node")
                return False
        if self.counter.value + self.counter.merge_gain(slots) > MAX_COUNT:
            self._drop(f"state from node {sender} would overflow the count")
            return False
        own = self.counter.get(self.slot)
        if slots.get(self.slot, 0) > own:
            # Someone holds more of our slot than we do: our storage lost commits (e.g.
            # power loss with a lying disk).  Max-merge heals the value; say so loudly.
            self._logs.append(
                f"WARNING node {sender} holds {slots[self.slot]} for our slot "
                f"{self.slot}, we had {own}: local storage lost data")
        self._changed(self.counter.merge(slots))
        return True

    def _drop(self, reason: str) -> None:
        self.stats["dropped_peer_messages"] += 1
        self._logs.append(f"dropped peer message: {reason}")

    # ------------------------------------------------------------------ client inputs

    def handle_request(self, client: ClientId, request: ClientRequest | PeerRequest,
                       now: float) -> None:
        """A decoded message arrived on our ROUTER from ``client``."""
        self._now = now
        if isinstance(request, Increment):
            self._increment(client, request)
        elif isinstance(request, GetCount):
            self._get(client, request)
        elif isinstance(request, Status):
            self._out.append(ToClient(client, Reply(
                id=request.id, node=self.node_id, ok=True, count=self.counter.value,
                slots=self._view(), status=self.status(now))))
        elif isinstance(request, Ping):
            self._out.append(ToClient(client, Reply(
                id=request.id, node=self.node_id, ok=True, count=self.counter.value)))
        elif isinstance(request, Pull):
            if request.origin not in self._peers:
                self._drop(f"pull from unknown node {request.origin}")
                return
            self._out.append(ToClient(client, self._pull_reply(request)))
        elif isinstance(request, Push):
            # The answer tells the pusher we hold these slots durably: an fsync must
            # precede it even if nothing grows (what we hold may sit in unsynced commits).
            self._persist.sync = True
            if request.origin not in self._peers or not self._accept_slots(
                    request.slots, request.origin):
                if request.origin not in self._peers:
                    self._drop(f"push from unknown node {request.origin}")
                return
            self._learn_rids(request.rids, request.slots)
            held = {s: self.counter.get(s) for s in request.slots}
            self._out.append(ToClient(client, PeerReply(request.id, self.node_id, held)))
            self._settle()

    def _pull_reply(self, request: Pull) -> PeerReply:
        """Our state plus the next page of our rid log after the puller's cursor: ids
        must travel with the counts they raised, or a node repaired by a pull (it missed
        the Update) would count a retried id a second time."""
        after = request.rids_after if request.rid_epoch == self._rid_epoch else 0
        start = max(after + 1, self._rid_first)
        index = start - 1 - self._rid_base
        rids = self._rids
        page = [(rid, *rids[rid][:2]) for rid in self._rid_order[index:index + _RIDS_PER_PULL]]
        cursor = start + len(page) - 1
        return PeerReply(request.id, self.node_id, self._view(), tuple(page),
                         self._rid_epoch, cursor, cursor < self._rid_next - 1)

    def refuse(self, client: ClientId, tag: Tag, message: str) -> None:
        """The runtime could not decode a request: answer it with ``bad_request``."""
        self._reply_error(client, tag, "bad_request", message)

    def _increment(self, client: ClientId, req: Increment) -> None:
        if req.rid is not None and req.rid in self._rids:
            slot, value, _ = self._rids[req.rid]
            self.stats["duplicates"] += 1
            self._acknowledge(client, req, slot, value, duplicate=True)
            return
        if (req.seen and not self.counter.dominates(req.seen)) or self._bootstrapping():
            # Applying now would answer with a count older than the session saw: catch up
            # first, and if we cannot, refuse (the increment is then certainly not applied).
            self._start_read(client, req, needed=1)
            return
        if self.counter.value + req.by > MAX_COUNT:
            self._reply_error(client, req.id, "overflow",
                              f"the count would pass 2**63-1 (now {self.counter.value})")
            return
        value = self.counter.increment(self.slot, req.by)
        self._changed({self.slot: value})
        self._own_grew = True
        self._persist.sync = True
        self.stats["increments"] += 1
        if req.rid is not None:
            self._remember_rid(req.rid, self.slot, value)
            self._batch_rids.append(req.rid)
        self._acknowledge(client, req, self.slot, value, duplicate=False)

    def _acknowledge(self, client: ClientId, req: Increment, slot: str, value: int,
                     duplicate: bool) -> None:
        if req.wait == "local":
            # Hot path: this node holds what it applied (or remembers; a remembered id's
            # slot was merged before the id was recorded), so no waiter is needed.
            self._reply_ok(client, req.id, duplicate)
            return
        needed = self.needed(req.wait)
        wait = _Wait(client, req.id, slot, value, needed,
                     self._now + _budget_s(req.timeout_ms), duplicate, req.rid)
        if self._holders(wait) >= needed:
            self._reply_ok(client, req.id, duplicate)
        else:
            self._waits.append(wait)

    def _holders(self, wait: _Wait) -> int:
        held = 1 if self.counter.get(wait.slot) >= wait.value else 0
        return held + sum(1 for p in self._peers.values() if p.held.get(wait.slot, 0) >= wait.value)

    def _get(self, client: ClientId, req: GetCount) -> None:
        needed = self.needed(req.read)
        if needed == 1 and self.counter.dominates(req.seen) and not self._bootstrapping():
            self._reply_ok(client, req.id)
        else:
            self._start_read(client, req, needed)

    def _start_read(self, client: ClientId, req: GetCount | Increment, needed: int) -> None:
        self._stamp += 1
        self._reads.append(_Read(client, req, needed, self._now + _budget_s(req.timeout_ms),
                                 self._stamp))
        for peer in self._peers.values():
            peer.want_pull = True

    def _bootstrapping(self) -> bool:
        if self._now >= self._bootstrap_until:
            return False
        if any(p.fresh_as_of > 0 for p in self._peers.values()):
            self._bootstrap_until = -math.inf  # a peer's snapshot is in: caught up
            return False
        return True

    def _read_done(self, read: _Read) -> bool:
        if self._bootstrapping():
            return False
        fresh = 1 + sum(1 for p in self._peers.values() if p.fresh_as_of > read.stamp)
        return fresh >= read.needed and self.counter.dominates(read.request.seen)

    def _settle(self) -> None:
        """Answer every pending wait and read whose condition now holds."""
        if self._reads:
            done: list[_Read] = []
            waiting: list[_Read] = []
            for read in self._reads:
                (done if self._read_done(read) else waiting).append(read)
            if done:
                self._reads = waiting
                for read in done:
                    if isinstance(read.request, Increment):
                        self._increment(read.client, read.request)
                    else:
                        self._reply_ok(read.client, read.request.id)
        if self._waits:
            still = []
            for wait in self._waits:
                if self._holders(wait) >= wait.needed:
                    self._reply_ok(wait.client, wait.tag, wait.duplicate)
                else:
                    still.append(wait)
            self._waits = still

    # ------------------------------------------------------------------ peer inputs

    def handle_broadcast(self, message: Broadcast, now: float) -> None:
        """A decoded message arrived on our SUB socket."""
        self._now = now
        origin = message.origin
        peer = self._peers.get(origin)
        if peer is None:
            self._drop(f"broadcast from unknown node {origin}")
            return
        if any(slot_node(s) != origin for s in message.slots):
            self._drop(f"broadcast from node {origin} carries another node's slot")
            return
        if peer.last_heard is None or peer.silent_logged:
            self._logs.append(f"hearing node {origin}")
            peer.silent_logged = False
        peer.last_heard = now
        if peer.last_seq is not None and message.seq != peer.last_seq + 1:
            # Missed (or restarted) messages: their content is in the peer's state.
            peer.want_pull = True
        peer.last_seq = message.seq
        if not self._accept_slots(message.slots, origin):
            return
        if isinstance(message, Update):
            self._learn_rids(message.rids, message.slots)
        else:
            peer.in_sync = message.digest == self.counter.digest()
            if not peer.in_sync:
                peer.want_pull = True
        self._settle()

    def _learn_rids(self, rids: tuple[str, ...], slots: Slots) -> None:
        if not rids or not slots:
            return
        # Conservative target: the highest value carried; a retry acknowledged against it
        # waits for at least as much as the original needed.
        slot = max(slots, key=lambda s: slots[s])
        for rid in rids:
            self._remember_rid(rid, slot, slots[slot])

    def handle_peer_reply(self, reply: PeerReply, now: float) -> None:
        """A decoded reply arrived on our DEALER to node ``reply.node``."""
        self._now = now
        peer = self._peers.get(reply.node)
        if peer is None:
            self._drop(f"reply from unknown node {reply.node}")
            return
        if not self._accept_slots(reply.slots, reply.node):
            return
        for slot, value in reply.slots.items():
            if value > peer.held.get(slot, 0):
                peer.held[slot] = value
        pull = self._pulls.pop(reply.id, None)
        if pull is not None and pull[0] == reply.node:
            peer.fresh_as_of = max(peer.fresh_as_of, pull[2])
            peer.in_sync = reply.slots == self._view()
            if reply.rid_epoch:
                for rid, slot, value in reply.rids:
                    self._remember_rid(rid, slot, value)
                peer.rid_epoch, peer.rid_cursor = reply.rid_epoch, reply.rid_cursor
                if reply.rid_more:
                    peer.want_pull = True
        self._settle()

    # ------------------------------------------------------------------ time

    def tick(self, now: float) -> None:
        """Advance timers: heartbeats, repair pulls, retries and deadlines."""
        self._now = now
        s = self.settings
        if now >= self._next_heartbeat:
            self._seq += 1
            self._out.append(Publish(Heartbeat(self.node_id, self._seq, self._own_slots(),
                                               self.counter.digest())))
            self.stats["heartbeats_sent"] += 1
            self._next_heartbeat = now + s.heartbeat_interval_s
        for node_id, peer in self._peers.items():
            silent = peer.last_heard is None or now - peer.last_heard > s.peer_timeout_s
            if silent and peer.last_heard is not None and not peer.silent_logged:
                self._logs.append(f"node {node_id} silent for {now - peer.last_heard:.1f}s")
                peer.silent_logged = True
            # Until a pull from this peer has succeeded we lack its rid log (a restarted
            # node hears heartbeats long before its first pull can get through).
            unsynced = not peer.rid_epoch
            if ((silent or peer.want_pull or unsynced)
                    and now - peer.last_pull >= s.snapshot_interval_s):
                self._pull(node_id, peer)
        if self._reads:
            self._settle()  # e.g. reads held while bootstrapping, once its grace ends
        self._expire(now)
        self._retry(now)
        self._prune_rids(now)

    def _pull(self, node_id: int, peer: _Peer) -> None:
        req_id = self._next_req
        self._next_req += 1
        self._stamp += 1
        self._pulls[req_id] = (node_id, self._now, self._stamp)
        peer.pull_stamp = self._stamp
        peer.last_pull = self._now
        peer.want_pull = False
        self.stats["pulls_sent"] += 1
        self._out.append(ToPeer(node_id, Pull(req_id, self.node_id, peer.rid_epoch,
                                              peer.rid_cursor)))

    def _retry(self, now: float) -> None:
        interval = self.settings.retry_interval_s
        if self._reads:
            oldest = min(r.stamp for r in self._reads)
            for node_id, peer in self._peers.items():
                if peer.fresh_as_of < oldest and now - peer.last_pull >= interval:
                    self._pull(node_id, peer)
        if self._waits:
            for node_id, peer in self._peers.items():
                slots = {w.slot: self.counter.get(w.slot) for w in self._waits
                         if peer.held.get(w.slot, 0) < w.value}
                if not slots:
                    continue
                # Rate-limit only *re*-pushes: a new wait must not sit out the interval
                # left over from the previous push (that added ~retry_interval_s to every
                # majority write under sequential load).
                fresh = any(v > peer.pushed.get(slot, 0) for slot, v in slots.items())
                if fresh or now - peer.last_push >= interval:
                    rids = tuple(w.rid for w in self._waits if w.rid is not None)
                    req_id = self._next_req
                    self._next_req += 1
                    peer.last_push = now
                    for slot, v in slots.items():
                        peer.pushed[slot] = max(v, peer.pushed.get(slot, 0))
                    self.stats["pushes_sent"] += 1
                    self._out.append(ToPeer(node_id, Push(req_id, self.node_id, slots, rids)))

    def _expire(self, now: float) -> None:
        if self._waits:
            still = []
            for wait in self._waits:
                if now < wait.deadline:
                    still.append(wait)
                    continue
                self._reply_error(
                    wait.client, wait.tag, "indeterminate",
                    f"applied at node {self.node_id}, but only {self._holders(wait)} of the "
                    f"{wait.needed} nodes required confirmed it in time; it may still spread")
            self._waits = still
        if self._reads:
            still_reads = []
            for read in self._reads:
                if now < read.deadline:
                    still_reads.append(read)
                    continue
                tag = read.request.id
                if not self.counter.dominates(read.request.seen):
                    self._reply_error(
                        read.client, tag, "behind",
                        f"node {self.node_id} is behind what this session has seen and "
                        "could not catch up in time" + (
                            "; the increment was not applied"
                            if isinstance(read.request, Increment) else ""))
                else:
                    fresh = 1 + sum(1 for p in self._peers.values()
                                    if p.fresh_as_of > read.stamp)
                    self._reply_error(
                        read.client, tag, "unavailable",
                        f"only {fresh} of the {read.needed} nodes required answered in time")
            self._reads = still_reads
        if self._pulls:
            horizon = now - 60.0
            self._pulls = {k: v for k, v in self._pulls.items() if v[1] >= horizon}

    def _prune_rids(self, now: float) -> None:
        s = self.settings
        rids = self._rids
        while rids:
            rid, (_, _, at) = next(iter(rids.items()))
            if len(rids) > s.request_id_window or now - at > s.request_id_max_age_s:
                rids.popitem(last=False)
                self._rid_first += 1
                self._persist.forget.append(rid)
            else:
                break
        dead = self._rid_first - 1 - self._rid_base
        if dead > 4096 and dead * 2 > len(self._rid_order):
            del self._rid_order[:dead]  # amortised O(1) per pruned id
            self._rid_base += dead

    def next_deadline(self) -> float:
        """The latest time by which :meth:`tick` must be called again."""
        s = self.settings
        deadline = self._next_heartbeat
        for peer in self._peers.values():
            # A peer already silent is handled like an unheard one (next pull due), not by
            # its silence deadline: that one lies in the past and made the runtime's poll
            # spin with timeout 0 until the peer was heard again (found by zcounter.sim,
            # seed 0).
            heard = peer.last_heard
            if (heard is None or peer.want_pull or not peer.rid_epoch
                    or self._now - heard > s.peer_timeout_s):
                deadline = min(deadline, peer.last_pull + s.snapshot_interval_s)
            else:
                deadline = min(deadline, heard + s.peer_timeout_s + 1e-3)
        if self._bootstrap_until > self._now:
            deadline = min(deadline, self._bootstrap_until)
        if self._waits or self._reads:
            deadline = min(deadline, self._now + s.retry_interval_s)
            for wait in self._waits:
                deadline = min(deadline, wait.deadline)
            for read in self._reads:
                deadline = min(deadline, read.deadline)
        return deadline

    # ------------------------------------------------------------------ outputs

    def take_outputs(self) -> Outputs:
        """Everything the batch produced.  Commit ``persist`` before sending ``messages``."""
        if self._own_grew:
            self._seq += 1
            rids = tuple(self._batch_rids)
            self._out.append(Publish(Update(self.node_id, self._seq,
                                            {self.slot: self.counter.get(self.slot)}, rids)))
            self.stats["updates_sent"] += 1
            self._own_grew = False
            self._batch_rids = []
        if self._waits:
            self._retry(self._now)
        if self._reads:
            # A read counts only states sent after it began: pull now every peer we have
            # not asked since the oldest pending read started, rather than at the next tick.
            oldest = min(r.stamp for r in self._reads)
            for node_id, peer in self._peers.items():
                if peer.fresh_as_of < oldest and peer.pull_stamp < oldest:
                    self._pull(node_id, peer)
        persist = self._persist if self._persist else None
        self._persist = Persist()
        out, self._out = self._out, []
        logs, self._logs = self._logs, []
        return Outputs(persist, out, logs)

    # ------------------------------------------------------------------ introspection

    def status(self, now: float) -> dict[str, object]:
        return {
            "node": self.node_id,
            "slot": self.slot,
            "count": self.counter.value,
            "slots": self._view(),
            "digest": self.counter.digest(),
            "request_ids_remembered": len(self._rids),
            "peers": {
                str(node_id): {
                    "last_heard_s_ago": None if p.last_heard is None
                    else round(now - p.last_heard, 3),
                    "in_sync": p.in_sync,
                }
                for node_id, p in self._peers.items()
            },
            "stats": dict(self.stats),
        }


__all__ = [
    "Message", "NodeCore", "Outputs", "Persist", "Publish", "ToClient", "ToPeer",
]
