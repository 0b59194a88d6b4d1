"""The node's protocol logic, sans I/O: inputs and ``now`` in, outputs out.

Theory of operation
-------------------
A node holds the *keyspace*: every named counter's state, a PN-counter with observed
reset (:mod:`zcounter.model`).  The node's updates go to its own *slot*, named by its
id and an *incarnation* drawn when its storage was created; a reset raises the bases
of every slot the node knows.  Everything a node learns from others is merged by
per-field max, so every message below is safe to lose, repeat or reorder.

The core never touches a socket, a clock or a disk.  The runtime feeds it inputs -
client requests, peer requests, broadcasts, peer replies, and ``tick(now)`` - and after
each batch calls :meth:`NodeCore.take_outputs`, which returns

* ``persist``: the states, slots and request ids that must be committed **before**
  anything else of the batch is sent (one commit serves the whole batch: group commit);
* ``messages``: replies to clients, answers to peers, requests to peers, broadcasts.

Replication has three layers, each repairing what the one above may lose:

1. *Deltas* (PUB/SUB): after each batch the node publishes the records it changed
   itself, with the request ids it applied, numbered within its *epoch* (one per
   process start).  Cheap and fast; lossy by design (slow joiners, HWM drops, cuts).
2. *Heartbeats* (PUB/SUB, every ``heartbeat_interval_s``), constant in size whatever
   the number of keys: the root of the hash tree, the last delta number, and how far the
   node holds every origin's deltas.  A gap, a third node's deltas a peer holds and we
   do not, or a root that differs while both sides hold the same deltas, start a
   *repair* with that peer (:mod:`.repair`): hash tree down to the keys that differ,
   only those move.  A silent peer's deltas reach us through any peer that heard them.
3. *Merges* (DEALER/ROUTER), only for writes asking ``wait=majority|all``: the node
   sends the key's state to every peer until enough of them answered that they hold it
   durably.  Reads asking ``read=majority|all`` *fetch* the keys from the peers.

The parts, one job each: :class:`~.rids.RidLog` (exactly-once window),
:class:`~.pending.Pending` (waits and reads), :class:`~.peers.Peer` (liveness, delta
positions, when to repair), :class:`~.antientropy.AntiEntropy` (when and from whom to
repair, and the one repair it runs, a :class:`~.repair.SyncSession`).  This class
routes inputs to them and owns the rules that tie them together.

Consistency levels: ``wait`` counts nodes known to hold the write durably (this one
included); ``read`` counts nodes whose state of the keys was fetched after the read
began.  ``majority`` for both gives read-your-acknowledged-writes (quorum
intersection).  A session carries, per key it touched, the state it has seen; a node
behind it fetches that key from its peers until it holds it, or refuses with
``behind`` - never answers older.  A node whose storage was just created (first start,
or a wiped directory) answers each request only after a peer sent it the keys involved
(or after one peer timeout if no peer answers), until its first repair has completed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from ..config import Settings
from ..limits import MAX_KEYS_PER_PEER_MESSAGE as MAX_KEYS_PER_MESSAGE
from ..limits import MAX_SLOTS_PER_KEY, OWN_SLOT_WARNING_INTERVAL_S
from ..model.keyspace import Keyspace
from ..model.page import REC_INTS, StatePage
from ..model.pncounter import Overflow, Record, dominates, make_slot, slot_node
from .antientropy import AntiEntropy
from .messages import (
    Add,
    Applied,
    Broadcast,
    ClientRequest,
    Confirm,
    Counted,
    Delta,
    ErrorCode,
    Fetch,
    Get,
    Heartbeat,
    Held,
    KeysPage,
    Level,
    ListKeys,
    Merge,
    PeerReply,
    PeerRequest,
    Ping,
    Pong,
    Refused,
    Reset,
    RidEntry,
    RidPage,
    RidPull,
    States,
    StatesReply,
    Status,
    StatusReply,
    SyncBuckets,
    SyncKeys,
    SyncSegments,
    Tag,
)
from .outputs import ClientId, Log, LogLevel, Message, Outputs, Persist, Publish, ToClient, ToPeer
from .peers import Liveness, Peer, vector
from .pending import Pending, Read, Wait
from .repair import SyncSession, answer_buckets, answer_keys, answer_segments
from .rids import RidLog

#: Keys one Fetch or Merge carries at most (a few MB at most; the rest goes next round).
#: Outstanding peer requests are forgotten after this long (their answers are dropped).
REQUEST_HORIZON_S = 60.0
#: A batch that has merged, answered or compared this many keys asks to end (see
#: :attr:`NodeCore.batch_full`).  A batch's messages leave only at its end, and a node
#: catching up read every repair page waiting for it (pages of up to 4,000 states) into
#: one batch: the requests for the next pages left only after all of them were merged,
#: and both sides then waited on each other (traced at 100,000 keys: ~130 ms idle after
#: every four pages, the wiped node's loop 31 % in poll; at a million keys the answering
#: node's 58 %).  One page per batch keeps requests flowing while pages are merged.
BATCH_KEYS = 1000

_NO_STATES: States = {}


class Kind(Enum):
    FETCH = "fetch"
    MERGE = "merge"
    SYNC = "sync"
    RIDS = "rids"


@dataclass(slots=True)
class _Outstanding:
    kind: Kind
    peer: int
    sent: float
    stamp: int = 0
    keys: tuple[str, ...] = ()


def _budget_s(timeout_ms: int) -> float:
    """How long the node may work on a request: most of the client's timeout, so the
    answer (even a negative one) arrives before the client gives up."""
    return timeout_ms / 1000.0 * 0.8


class NodeCore:
    """One node's protocol state machine.  Feed it inputs; collect :class:`Outputs`."""

    def __init__(self, node_id: int, cluster: list[int], incarnation: str, epoch: str,
                 settings: Settings, now: float, keyspace: Keyspace | None = None,
                 rids: list[RidEntry] | None = None, fresh: bool = False,
                 republish: Iterable[str] = ()) -> None:
        """``keyspace``: restored from storage (empty if None); ``epoch``: unique for
        this process start; ``fresh``: the storage was just created; ``republish``: keys
        the storage replayed from its log at start - batches the last run may have
        committed without publishing their delta - published again, in full."""
        if node_id not in cluster:
            raise ValueError(f"node {node_id} is not in the cluster {cluster}")
        self.node_id = node_id
        self.cluster = sorted(cluster)
        self.settings = settings
        self.slot_name = make_slot(node_id, incarnation)
        self.keys = keyspace if keyspace is not None else Keyspace()
        self.slot = self.keys.slots.intern(self.slot_name)
        self.epoch = epoch
        self.seq = 0
        self.peers = {p: Peer(p) for p in self.cluster if p != node_id}
        self.rids = RidLog(settings.request_id_window, settings.request_id_max_age_s,
                           epoch, now, rids)
        self.pending = Pending()
        self._now = now
        self._requests: dict[int, _Outstanding] = {}
        self._next_req = 1
        self._out: list[Message] = []
        self._logs: list[Log] = []
        self._batch_rids: list[RidEntry] = []
        self._republish = list(republish)
        self._sync_commit = False
        self._batch_keys = 0
        self._heartbeat_due = True
        self._next_heartbeat = now
        self.repair = AntiEntropy(self, now)
        #: Delta positions as of the last flush: what the hash tree reflects.  A repair
        #: answer must claim no more than that, or a delta merged in the same batch (not
        #: yet in the tree) would be claimed and never sent (see _peer_request).
        self._flushed_vector: Applied = self.vector()
        # A fresh node knows nothing its peers hold (after a wipe, not even its own old
        # slot).  Answering from that would show a count going backwards, so until its
        # first repair completes every request first fetches its keys from a peer (one
        # round trip), or, if no peer answers, waits one peer timeout.
        self.bootstrapping = fresh and bool(self.peers)
        self._bootstrap_until = now + settings.peer_timeout_s if self.bootstrapping else -math.inf
        #: Some peer has answered a request of ours (then a bootstrapping node keeps
        #: waiting for peers, however long its first repair takes).
        self._peer_answered = False
        self.started = now
        #: When the last "a peer holds more of our own slot" warning was logged.
        self._own_slot_warned = -math.inf
        self.stats: Counter[str] = Counter()
        #: (operation, outcome) -> count: outcome is "ok", "duplicate" or an error code.
        self.requests: Counter[tuple[str, str]] = Counter()

    # ------------------------------------------------------------------ helpers

    @property
    def sync(self) -> SyncSession | None:
        """The repair running now, if any."""
        return self.repair.sync

    @property
    def now(self) -> float:
        """The time of the input being handled."""
        return self._now

    def send_sync(self, peer: int, request: PeerRequest) -> None:
        self._send(peer, request, Kind.SYNC)

    def send_rids(self, peer: int, request: RidPull) -> None:
        self._send(peer, request, Kind.RIDS)

    def send_merge(self, peer: int, request: Merge) -> None:
        self._send(peer, request, Kind.MERGE)

    def repaired_from(self, peer: Peer) -> None:
        """A repair with ``peer`` completed: a bootstrapping node is caught up."""
        if self.bootstrapping:
            self.stats["bootstraps_completed"] += 1
            self.bootstrapping = False
            self._bootstrap_until = -math.inf
            self.log(f"bootstrap from node {peer.node_id} complete: {len(self.keys)} keys "
                     f"in {self._now - self.started:.2f}s")

    def needed(self, level: Level) -> int:
        return level.needed(len(self.cluster))

    def new_id(self) -> int:
        req_id = self._next_req
        self._next_req += 1
        return req_id

    def log(self, text: str, level: LogLevel = LogLevel.INFO) -> None:
        self._logs.append(Log(level, text))

    def _send(self, peer: int, request: PeerRequest, kind: Kind, stamp: int = 0,
              keys: tuple[str, ...] = ()) -> None:
        self._requests[request.id] = _Outstanding(kind, peer, self._now, stamp, keys)
        self._out.append(ToPeer(peer, request))

    def vector(self) -> Applied:
        return vector((self.epoch, self.seq), self.node_id, self.peers)

    def _reply_counts(self, client: ClientId, request: Add | Reset | Get,
                      duplicate: bool = False) -> None:
        if type(request) is Get:
            keys = request.keys
            value = self.keys.value
            counts = tuple(value(k) for k in keys)
        else:  # one key: no generator on the per-increment path
            keys = (request.key,)  # type: ignore[union-attr]
            counts = (self.keys.value(request.key),)  # type: ignore[union-attr]
        states = ({k: self.keys.state(k) for k in keys} if request.session else _NO_STATES)
        # Positional: this is the per-request hot path.
        self._out.append(ToClient(client, Counted(request.id, self.node_id, counts, states,
                                                  duplicate)))
        self.requests[(_op(request), "duplicate" if duplicate else "ok")] += 1

    def refuse(self, client: ClientId, tag: Tag, code: ErrorCode, message: str,
               op: str = "invalid") -> None:
        """Answer a request with an error (also used by the runtime for requests it could
        not decode, and for roles: ``forbidden``)."""
        self.requests[(op, code.value)] += 1
        self._out.append(ToClient(client, Refused(tag, self.node_id, code, message)))

    def _drop(self, reason: str) -> None:
        self.stats["dropped_peer_messages"] += 1
        self.log(f"dropped peer message: {reason}", LogLevel.DEBUG)

    def accept(self, states: States, sender: int) -> int | None:
        """Validate a peer's states against the cluster and the bounds, then merge.
        Returns how many keys grew, or None if the message was dropped."""
        keys = self.keys
        own = self.slot_name
        seen: set[str] = set()
        ahead: list[str] = []
        for key, state in states.items():
            for slot in state:
                if slot in seen:
                    continue
                seen.add(slot)
                if not self._known_slot(slot):
                    self._drop(f"slot {slot!r} from node {sender} names an unknown node")
                    return None
            if self._too_many_slots(key, state, len(state), sender):
                return None
            mine = state.get(own)
            if mine is not None and not keys.dominates(key, {own: mine}):
                ahead.append(key)
        if ahead:
            self._own_slot_ahead(ahead, sender)
        self._batch_keys += len(states)
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
                self._drop(f"slot {bad[0]!r} from node {sender} names an unknown node")
                return None
        for key, flat in page.records.items():
            if self._too_many_slots(key, page[key], len(flat) // REC_INTS, sender):
                return None
        own = self.slot_name
        if own in page.slots:
            at = page.slots.index(own)
            dominates = self.keys.dominates
            ahead: list[str] = []
            for key, flat in page.records.items():
                indexes = flat[0::REC_INTS]
                if at in indexes:
                    i = indexes.index(at) * REC_INTS
                    mine = (flat[i + 1], flat[i + 2], flat[i + 3], flat[i + 4])
                    if not dominates(key, {own: mine}):
                        ahead.append(key)
            if ahead:
                self._own_slot_ahead(ahead, sender)
        self._batch_keys += len(page)
        return self.keys.merge_page(page)

    def _too_many_slots(self, key: str, state: Iterable[str], count: int,
                        sender: int) -> bool:
        """Would merging ``state`` (``count`` slots) give ``key`` records of more than
        ``MAX_SLOTS_PER_KEY`` slots?  Then the message is dropped.  A slot is a node
        incarnation that wrote the key, so legal keys stay far below; without the bound,
        forged slots of made-up incarnations (10,000 per message) grew one key without
        end, and every step to it unpacks all its records.  O(1) per key unless near."""
        if self.keys.record_count(key) + count <= MAX_SLOTS_PER_KEY:
            return False
        if self.keys.slots_after_merge(key, state) <= MAX_SLOTS_PER_KEY:
            return False
        self._drop(f"states from node {sender} would give {key[:40]!r} records of more than "
                   f"{MAX_SLOTS_PER_KEY} slots")
        return True

    def _known_slot(self, slot: str) -> bool:
        owner = slot_node(slot)
        return owner == self.node_id or owner in self.peers

    def _own_slot_ahead(self, keys: list[str], sender: int) -> None:
        """Someone holds more of our own slot than we do: our storage lost commits (e.g.
        power loss with a lying disk) - or, in ``none`` mode, a forged state (the model's
        "Bounds" say why it is adopted all the same).  Max-merge heals the first.
        Counted per key; logged at most once per ``OWN_SLOT_WARNING_INTERVAL_S``: one
        forged page names up to 200,000 keys (it was a line per key)."""
        self.stats["own_slot_ahead"] += len(keys)
        if self._now - self._own_slot_warned < OWN_SLOT_WARNING_INTERVAL_S:
            return
        self._own_slot_warned = self._now
        more = f" and {len(keys) - 1} more keys" if len(keys) > 1 else ""
        self.log(f"node {sender} holds more of our slot {self.slot_name} for {keys[0]!r}"
                 f"{more} than we do: local storage lost data, or (security mode none) a "
                 "forged state (stat own_slot_ahead counts keys; this warning at most every "
                 f"{OWN_SLOT_WARNING_INTERVAL_S:g}s)", LogLevel.WARNING)

    def learn_rids(self, entries: tuple[RidEntry, ...]) -> None:
        for rid, key, target in entries:
            self.rids.remember(rid, key, target, self._now)

    def _gated(self, request: Add | Reset | Get, keys: tuple[str, ...]) -> bool:
        """True when the request must first catch up (session or bootstrap)."""
        if self.bootstrapping:
            return True
        seen = request.seen
        if seen:
            dom = self.keys.dominates
            return not all(dom(k, st) for k, st in seen.items())
        return False

    # ------------------------------------------------------------------ client requests

    def handle_request(self, client: ClientId, request: ClientRequest | PeerRequest,
                       now: float) -> None:
        """A decoded message arrived on our ROUTER from ``client``."""
        self._now = now
        kind = type(request)
        if kind is Add:
            self._add(client, request)  # type: ignore[arg-type]
        elif kind is Get:
            self._get(client, request)  # type: ignore[arg-type]
        elif kind is Reset:
            self._reset(client, request)  # type: ignore[arg-type]
        elif kind is ListKeys:
            assert isinstance(request, ListKeys)
            if self.bootstrapping:
                # A partial keyspace would read as keys missing; the client retries.
                self.refuse(client, request.id, ErrorCode.UNAVAILABLE,
                            f"node {self.node_id} is still receiving the keyspace from its "
                            f"peers ({len(self.keys)} keys so far); try again or ask another "
                            "node", "keys")
                return
            page, more = self.keys.list_keys(request.prefix, request.after, request.limit)
            self._out.append(ToClient(client, KeysPage(request.id, self.node_id,
                                                       tuple(page), more)))
            self.requests[("keys", "ok")] += 1
        elif kind is Status:
            self._out.append(ToClient(client, StatusReply(request.id, self.node_id,
                                                          self.status(now))))
            self.requests[("status", "ok")] += 1
        elif kind is Ping:
            self._out.append(ToClient(client, Pong(request.id, self.node_id)))
            self.requests[("ping", "ok")] += 1
        elif kind is Confirm:
            self._confirm(client, request)  # type: ignore[arg-type]
        else:
            self._peer_request(client, request)  # type: ignore[arg-type]

    def _known_rid(self, client: ClientId, request: Add | Reset) -> bool:
        """Answer a request whose id was already applied; False if the id is new."""
        rid = request.rid
        if rid is None:
            return False
        known = self.rids.get(rid)
        if known is None:
            return False
        key, target = known
        if key != request.key:
            self.refuse(client, request.id, ErrorCode.BAD_REQUEST,
                        f"request id {rid!r} was already used for key {key!r}", _op(request))
            return True
        self.stats["duplicates"] += 1
        # A learned id's state normally arrived with it; if not, its target is a true
        # lower bound of a real state, so merging it is safe.
        self.keys.merge(key, target)
        self._acknowledge(client, request, target, duplicate=True)
        return True

    def _add(self, client: ClientId, req: Add, caught_up: bool = False) -> None:
        if req.wait is not Level.LOCAL and self._refused_busy(client, req.id, _op(req)):
            return  # checked before anything is applied: a write's wait cannot be refused
        if self._known_rid(client, req):
            return
        key = req.key
        if not caught_up and (req.seen or self.bootstrapping) and self._gated(req, (key,)):
            self._start_read(client, req, (key,), 1)
            return
        try:
            rec = self.keys.add(key, self.slot, req.amount)
        except Overflow:
            self.refuse(client, req.id, ErrorCode.OVERFLOW,
                        f"{key!r}: its total of {'increments' if req.amount > 0 else 'decrements'}"
                        f" would pass 2**63-1 (count now {self.keys.value(key)})", _op(req))
            return
        self._sync_commit = True
        self.stats["increments" if req.amount > 0 else "decrements"] += 1
        rid = req.rid
        if rid is None and req.wait is Level.LOCAL:
            self._reply_counts(client, req)  # the hot path: nothing to remember
            return
        target = {self.slot_name: (rec[0], 0, 0, 0) if req.amount > 0 else (0, rec[1], 0, 0)}
        if rid is not None:
            self.rids.remember(rid, key, target, self._now)
            self._batch_rids.append((rid, key, target))
        self._acknowledge(client, req, target, duplicate=False)

    def _reset(self, client: ClientId, req: Reset, caught_up: bool = False) -> None:
        if req.wait is not Level.LOCAL and self._refused_busy(client, req.id, _op(req)):
            return
        if self._known_rid(client, req):
            return
        key = req.key
        if not caught_up and self._gated(req, (key,)):
            self._start_read(client, req, (key,), 1)
            return
        target = self.keys.reset(key)
        self._sync_commit = True
        self.stats["resets"] += 1
        if req.rid is not None:
            self.rids.remember(req.rid, key, target, self._now)
            self._batch_rids.append((req.rid, key, target))
        self._acknowledge(client, req, target, duplicate=False)

    def _acknowledge(self, client: ClientId, req: Add | Reset, target: dict[str, Record],
                     duplicate: bool) -> None:
        if req.wait is Level.LOCAL:
            self._reply_counts(client, req, duplicate)
            return
        self.pending.add_wait(Wait(client, req, target, self.needed(req.wait),
                                   self._now + _budget_s(req.timeout_ms), duplicate))

    def _confirm(self, client: ClientId, req: Confirm) -> None:
        """Wait until ``req.nodes`` nodes hold what this node holds of the key now: the
        wait of a ``wait=majority|all`` write, for writes already applied and answered
        (Redis's WAIT at the RESP door).  The target is the whole state, so the pushes
        that serve waits (``_retry``: they send the whole state) are what satisfies it."""
        target = self.keys.state(req.key)
        if not target or req.nodes <= 1:
            # Nothing to hold is held everywhere; one node is this one, and the answer
            # leaves only after the batch (so every write it covers) is committed.
            self._held(client, req, len(self.cluster) if not target else 1)
            return
        if self._refused_busy(client, req.id, "confirm"):
            return
        self.pending.add_wait(Wait(client, req, target, req.nodes,
                                   self._now + req.timeout_ms / 1000.0, duplicate=False))

    def _refused_busy(self, client: ClientId, tag: Tag, op: str) -> bool:
        """Refuse with ``busy`` (True) if holding one more request for ``client`` would
        pass the per-connection or the per-node cap on held requests."""
        pending = self.pending
        s = self.settings
        mine = pending.per_client.get(client, 0)
        if mine < s.max_held_per_connection and len(pending) < s.max_held_per_node:
            return False
        self.stats["held_refused"] += 1
        if mine >= s.max_held_per_connection:
            why = (f"this connection already has {mine} requests waiting at node "
                   f"{self.node_id} (limit max_held_per_connection = "
                   f"{s.max_held_per_connection})")
        else:
            why = (f"node {self.node_id} already holds {len(pending)} waiting requests (limit "
                   f"max_held_per_node = {s.max_held_per_node})")
        self.refuse(client, tag, ErrorCode.BUSY,
                    f"{why}; nothing was applied: retry once earlier requests are answered",
                    op)
        return True

    def _held(self, client: ClientId, req: Confirm, nodes: int) -> None:
        self._out.append(ToClient(client, Held(req.id, self.node_id, req.key, nodes)))
        self.requests[("confirm", "ok" if nodes >= req.nodes else "timeout")] += 1

    def _get(self, client: ClientId, req: Get) -> None:
        needed = self.needed(req.read)
        if needed == 1 and not self._gated(req, req.keys):
            self._reply_counts(client, req)
        else:
            self._start_read(client, req, req.keys, needed)

    def _start_read(self, client: ClientId, req: Add | Reset | Get, keys: tuple[str, ...],
                    needed: int) -> None:
        if self._refused_busy(client, req.id, _op(req)):
            return  # nothing was applied yet: a gated write is applied after its read
        min_peers = 1 if self.bootstrapping and self._wait_for_peers() else 0
        self.pending.add_read(Read(client, req, keys, needed, min_peers,
                                   self._now + _budget_s(req.timeout_ms),
                                   self.pending.next_stamp()))

    def _wait_for_peers(self) -> bool:
        """While bootstrapping: hold requests for a peer's answer, unless no peer has
        answered anything within one peer timeout of the start (then serve alone)."""
        return self._peer_answered or self._now < self._bootstrap_until

    def _read_done(self, read: Read) -> bool:
        fresh = len(read.fresh)
        if fresh + 1 < read.needed:
            return False
        if fresh < read.min_peers and self._wait_for_peers():
            return False
        seen = read.request.seen
        dom = self.keys.dominates
        return not seen or all(dom(k, st) for k, st in seen.items())

    def _settle(self) -> None:
        """Answer every pending wait and read whose condition now holds."""
        pending = self.pending
        if pending.reads:
            for read in pending.take_done(self._read_done):
                req = read.request
                if isinstance(req, Add):
                    self._add(read.client, req, caught_up=True)
                elif isinstance(req, Reset):
                    self._reset(read.client, req, caught_up=True)
                else:
                    self._reply_counts(read.client, req)
        if pending.waits:
            for wait in pending.take_confirmed():
                if isinstance(wait.request, Confirm):
                    self._held(wait.client, wait.request, len(wait.holders) + 1)
                else:
                    self._reply_counts(wait.client, wait.request, wait.duplicate)

    # ------------------------------------------------------------------ peer requests

    def _peer_request(self, client: ClientId, request: PeerRequest) -> None:
        origin = request.origin
        if origin not in self.peers:
            self._drop(f"{type(request).__name__} from unknown node {origin}")
            return
        node = self.node_id
        if isinstance(request, Fetch):
            states = {k: st for k in request.keys if (st := self.keys.state(k))}
            self._batch_keys += len(states)
            self._out.append(ToClient(client, StatesReply(request.id, node, states)))
        elif isinstance(request, Merge):
            # The answer tells the sender we hold these durably: an fsync must precede
            # it even if nothing grows (what we hold may sit in unsynced commits).
            self._sync_commit = True
            if self.accept(request.states, origin) is None:
                return
            self.learn_rids(request.rids)
            held = {k: self.keys.state(k) for k in request.states}
            self._out.append(ToClient(client, StatesReply(request.id, node, held)))
            self._settle()
        elif isinstance(request, SyncBuckets):
            self._out.append(ToClient(client, answer_buckets(self.keys, request, node,
                                                             self._flushed_vector)))
        elif isinstance(request, SyncSegments):
            self._out.append(ToClient(client, answer_segments(self.keys, request, node)))
        elif isinstance(request, SyncKeys):
            answer = answer_keys(self.keys, request, node)
            self._batch_keys += len(answer.states) + len(request.entries)
            self._out.append(ToClient(client, answer))
        elif isinstance(request, RidPull):
            entries, cursor, more = self.rids.page(request.epoch, request.after)
            self._out.append(ToClient(client, RidPage(request.id, node, tuple(entries),
                                                      self.rids.epoch, cursor, more)))

    # ------------------------------------------------------------------ broadcasts

    def _heard(self, peer: Peer, now: float) -> None:
        if peer.last_heard is None or peer.silent_logged:
            self.log(f"hearing node {peer.node_id}")
            peer.silent_logged = False
        peer.last_heard = now

    def handle_broadcast(self, message: Broadcast, now: float) -> None:
        """A decoded message arrived on our SUB socket."""
        self._now = now
        peer = self.peers.get(message.origin)
        if peer is None:
            self._drop(f"broadcast from unknown node {message.origin}")
            return
        self._heard(peer, now)
        if isinstance(message, Delta):
            if self.accept(message.states, message.origin) is None:
                return
            self.learn_rids(message.rids)
            if not peer.stream.applied(message.epoch, message.seq):
                peer.flag = True  # a gap: deltas of this peer were lost
        else:
            self.repair.observe(peer, message, now)
        self._settle()

    # ------------------------------------------------------------------ peer replies

    def handle_peer_reply(self, reply: PeerReply, now: float) -> None:
        """A decoded reply arrived on our DEALER to node ``reply.node``."""
        self._now = now
        sent = self._requests.pop(reply.id, None)
        if sent is None or sent.peer != reply.node:
            self._drop(f"unexpected reply {reply.id} from node {reply.node}")
            return
        peer = self.peers[sent.peer]
        self._peer_answered = True
        if sent.kind is Kind.SYNC:
            self.repair.on_sync_reply(peer, reply)
        elif sent.kind is Kind.RIDS and isinstance(reply, RidPage):
            self.repair.on_rid_page(peer, reply)
        elif isinstance(reply, StatesReply):
            if self.accept(reply.states, reply.node) is None:
                return
            if sent.kind is Kind.FETCH:
                peer.fetch_rtt = now - sent.sent
                peer.fresh_as_of = max(peer.fresh_as_of, sent.stamp)
                self.pending.answered(peer.node_id, sent.stamp, sent.keys)
            else:
                self.pending.held(peer.node_id, reply.states, dominates)
        self._settle()

    # ------------------------------------------------------------------ time

    def tick(self, now: float) -> None:
        """Advance timers: heartbeats, repairs, retries and deadlines."""
        self._now = now
        s = self.settings
        if now >= self._next_heartbeat:
            self._heartbeat_due = True
            self._next_heartbeat = now + s.heartbeat_interval_s
        for node_id, peer in self.peers.items():
            if (peer.liveness(now, s.peer_timeout_s) is Liveness.SILENT
                    and not peer.silent_logged):
                assert peer.last_heard is not None
                self.log(f"node {node_id} silent for {now - peer.last_heard:.1f}s")
                peer.silent_logged = True
        self.repair.tick(now)
        if self.pending:
            self._settle()  # e.g. reads held while bootstrapping, once its grace ends
            self._expire(now)
            self._retry(now, fresh_only=False)
        self.rids.prune(now)
        if self._requests:
            horizon = now - REQUEST_HORIZON_S
            self._requests = {k: v for k, v in self._requests.items() if v.sent >= horizon}

    def _retry(self, now: float, fresh_only: bool) -> None:
        """Fetch for pending reads and push for pending waits.  ``fresh_only`` (end of a
        batch): only what has not been asked yet; otherwise (tick) also re-send what is
        unanswered after ``retry_interval_s``."""
        interval = self.settings.retry_interval_s
        pending = self.pending
        if pending.reads:
            oldest = min(r.stamp for r in pending.reads)
            # Every key of every pending read, in as many Fetches as it takes: a read
            # whose keys were cut off one Fetch could never become fresh (a Get of 5,001+
            # keys, or concurrent reads of more keys than that, expired "unavailable").
            keys = pending.read_keys()
            chunks = [tuple(keys[i:i + MAX_KEYS_PER_MESSAGE])
                      for i in range(0, len(keys), MAX_KEYS_PER_MESSAGE)]
            for peer_id in pending.stale_peers(self.peers):
                peer = self.peers[peer_id]
                # A read counts only answers to fetches sent after it began.
                if peer.fetch_stamp < oldest or (
                        not fresh_only
                        and now - peer.last_fetch >= max(interval, min(
                            2 * peer.fetch_rtt, self.settings.peer_timeout_s))):
                    stamp = pending.next_stamp()
                    peer.fetch_stamp, peer.last_fetch = stamp, now
                    for chunk in chunks:
                        self.stats["fetches_sent"] += 1
                        self._send(peer_id, Fetch(self.new_id(), self.node_id, chunk),
                                   Kind.FETCH, stamp, chunk)
        if pending.waits:
            for peer_id, peer in self.peers.items():
                waits = [w for w in pending.waits if peer_id not in w.holders]
                if not waits or (all(peer_id in w.pushed for w in waits) and (
                        fresh_only or now - peer.last_push < interval)):
                    continue
                peer.last_push = now
                waits = waits[:MAX_KEYS_PER_MESSAGE]
                for wait in waits:
                    wait.pushed.add(peer_id)
                rids = tuple((w.request.rid, w.key, w.target) for w in waits
                             if not isinstance(w.request, Confirm) and w.request.rid is not None)
                self.stats["merges_sent"] += 1
                # Each key's state once, however many waits hold it: 10,000 held confirms
                # of one key made every tick look the same state up 5,000 times per peer
                # (tick + outputs 98 -> 14 ms median; docs/measurements/held_tick.py).
                state = self.keys.state
                self._send(peer_id, Merge(self.new_id(), self.node_id,
                                          {k: state(k) for k in {w.key: None for w in waits}},
                                          rids), Kind.MERGE)

    def _expire(self, now: float) -> None:
        waits, reads = self.pending.take_expired(now)
        for wait in waits:
            if isinstance(wait.request, Confirm):
                # Not an error: WAIT answers how many nodes it reached.
                self._held(wait.client, wait.request, len(wait.holders) + 1)
                continue
            self.refuse(
                wait.client, wait.request.id, ErrorCode.INDETERMINATE,
                f"applied at node {self.node_id}, but only {len(wait.holders) + 1} of the "
                f"{wait.needed} nodes required confirmed {wait.key!r} in time; it may still "
                "spread", _op(wait.request))
        for read in reads:
            req = read.request
            if not isinstance(req, Get) and req.rid is not None and req.rid in self.rids:
                # Another attempt with this request id was applied while this one waited
                # to catch up: "nothing was applied" would be false for the id.  Found by
                # the simulator (seed 6 of 5 nodes in its first version: a late first
                # attempt applied at a bootstrapping node, then its retry's wait expired
                # "unavailable"); pinned by tests/sim/test_regressions.py.
                self.refuse(read.client, req.id, ErrorCode.INDETERMINATE,
                            f"request id {req.rid!r} was applied at node {self.node_id} by an "
                            "earlier attempt; its level was not confirmed in time", _op(req))
                continue
            dom = self.keys.dominates
            if req.seen and not all(dom(k, st) for k, st in req.seen.items()):
                self.refuse(read.client, req.id, ErrorCode.BEHIND,
                            f"node {self.node_id} is behind what this session has seen of "
                            f"{_keys_text(read.keys)} and could not catch up in time"
                            + ("" if isinstance(req, Get) else "; nothing was applied"),
                            _op(req))
            else:
                self.refuse(read.client, req.id, ErrorCode.UNAVAILABLE,
                            f"only {len(read.fresh) + 1} of the {read.needed} nodes required "
                            f"answered for {_keys_text(read.keys)} in time"
                            + ("" if isinstance(req, Get) else "; nothing was applied"),
                            _op(req))

    def next_deadline(self) -> float:
        """The latest time by which :meth:`tick` must be called again."""
        s = self.settings
        now = self._now
        deadline = min(self._next_heartbeat, self.repair.deadline(now))
        for peer in self.peers.values():
            if peer.last_heard is not None and not peer.silent_logged:
                deadline = min(deadline, peer.last_heard + s.peer_timeout_s + 1e-3)
        if self._bootstrap_until > now:
            deadline = min(deadline, self._bootstrap_until)
        if self.pending:
            deadline = min(deadline, now + s.retry_interval_s, self.pending.next_deadline())
        return deadline

    # ------------------------------------------------------------------ outputs

    @property
    def batch_full(self) -> bool:
        """The batch has merged, answered or compared :data:`BATCH_KEYS` keys: the
        runtime should take its outputs now rather than read more input into it."""
        return self._batch_keys >= BATCH_KEYS

    def take_outputs(self) -> Outputs:
        """Everything the batch produced.  Commit ``persist`` before sending ``messages``."""
        flushed = self.keys.flush()
        if self._republish and self.repair.sync is None:
            # A chunk per batch: deltas stay bounded and the loop stays responsive.  Held
            # while our own repair runs: peers merging 5,000 republished states a batch
            # answered that repair at half speed (a node restarted at a million keys
            # took ~5 s to catch up on 10,000 changed keys, its loop idle 54 % of it;
            # docs/measurements/profile_repair.py 1000000 OUT cut), and the repair
            # gives back to its peer every key we hold more of anyway.
            chunk = self._republish[:MAX_KEYS_PER_MESSAGE]
            del self._republish[:MAX_KEYS_PER_MESSAGE]
            self.seq += 1
            self._out.append(Publish(Delta(self.node_id, self.epoch, self.seq,
                                           {k: self.keys.state(k) for k in chunk})))
            self.stats["deltas_sent"] += 1
        if flushed.local:
            self.seq += 1
            self._out.append(Publish(Delta(self.node_id, self.epoch, self.seq, flushed.local,
                                           tuple(self._batch_rids))))
            self.stats["deltas_sent"] += 1
            self._batch_rids = []
        self._flushed_vector = self.vector()
        if self._heartbeat_due:
            self._heartbeat_due = False
            self._out.append(Publish(Heartbeat(
                self.node_id, self.epoch, self.seq, self.keys.tree.root, len(self.keys),
                self.vector(), self.rids.epoch, self.rids.next)))
            self.stats["heartbeats_sent"] += 1
        if self.pending:
            self._retry(self._now, fresh_only=True)
        rids, forget = self.rids.take_changes()
        persist = Persist(flushed.changed, flushed.new_slots, rids, forget, self._sync_commit)
        self._sync_commit = False
        self._batch_keys = 0
        out, self._out = self._out, []
        logs, self._logs = self._logs, []
        return Outputs(persist if persist else None, out, logs)

    # ------------------------------------------------------------------ introspection

    def status(self, now: float) -> dict[str, object]:
        s = self.settings
        return {
            "node": self.node_id,
            "slot": self.slot_name,
            "epoch": self.epoch,
            "seq": self.seq,
            "keys": len(self.keys),
            "live_keys": self.keys.live,
            "slots": len(self.keys.slots),
            "root": f"{self.keys.tree.root:016x}",
            "bootstrapping": self.bootstrapping,
            "request_ids_remembered": len(self.rids),
            "held_requests": len(self.pending),
            "repair": self.repair.status(now),
            "peers": {
                str(node_id): {
                    "liveness": p.liveness(now, s.peer_timeout_s).value,
                    "last_heard_s_ago": None if p.last_heard is None
                    else round(now - p.last_heard, 3),
                    "same_root": p.same_root,
                    "deltas_held": p.stream.seq,
                    "deltas_sent": None if p.heartbeat is None else p.heartbeat.seq,
                    "wants_repair": p.wants_sync(),
                    "repairs": p.syncs,
                    "keys_repaired": p.keys_repaired,
                }
                for node_id, p in self.peers.items()
            },
            "stats": dict(self.stats),
        }


def _op(request: Add | Reset | Get) -> str:
    if isinstance(request, Add):
        return "increment" if request.amount > 0 else "decrement"
    return "reset" if isinstance(request, Reset) else "get"


def _keys_text(keys: tuple[str, ...]) -> str:
    shown = ", ".join(repr(k) for k in keys[:3])
    return shown + (f" and {len(keys) - 3} more keys" if len(keys) > 3 else "")


__all__ = ["NodeCore"]
