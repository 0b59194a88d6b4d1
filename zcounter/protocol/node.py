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

The parts, one job each:

* :class:`~.requests.ClientRequests`: the client-request path - apply, answer, refuse,
  or hold in :class:`~.pending.Pending` (waits and reads) until settled or expired;
  :class:`~.rids.RidLog` is its exactly-once window.
* :class:`~.replication.Replication`: layers 1 and 3 - deltas and heartbeats out and
  in, merges and fetches for held requests.
* :class:`~.repair.Repairer`: layer 2 - when and from whom to repair, the one repair it
  runs (a :class:`~.repair_session.RepairSession`); it sees this class only through
  :class:`~.repair.RepairHost`.  :class:`~.repair.RepairAnswers` answers peers' repairs.
* :class:`~.intake.Intake`: every state from a peer is checked and merged there.
* :class:`~.peers.Peer`: per peer, liveness, delta positions, when to repair.
* :class:`~.collect.Collector`: collection of dead keys once every peer holds them dead
  (its graves screen states of keys not held, in the intake);
  :class:`~.clocks.ClockWatch`: peers' clock skew, from their heartbeats.
* :class:`~.batch.Batch` and :class:`~.batch.Calls`: what the batch has produced so
  far, and the requests to peers awaiting answers (each answer goes back to the part
  that asked).

This class routes inputs to the parts through typed tables (:class:`Routes`) and owns
the rules that tie them together, all stated here and written once below:

R1. Persist before send: :meth:`NodeCore.take_outputs` returns the batch's ``persist``
    (fsynced if the batch acknowledges anything only this node vouches for: its own
    updates, a merge it confirms) and the messages the runtime may send only after it.
R2. Settle after every input that can change what held requests wait for (a merge, a
    delta, a heartbeat, a peer's answer, the clock): a wait or read whose condition
    holds is answered in the batch that made it hold.
R3. A fresh node bootstraps: every request waits for a peer's answer (or one peer
    timeout if none answers) until its first repair completes (:meth:`repaired_from`).
R4. Republishing the keys replayed at start waits while this node runs a repair.
R5. A repair answer claims only the delta positions of the last flush
    (``flushed_vector``), which the hash tree reflects.
R6. Any answer from a peer shows peers are reachable: a bootstrapping node then keeps
    waiting for them rather than serving alone.

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

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from ..config import Settings
from ..model.keyspace import Keyspace
from ..model.page import StatePage
from ..model.pncounter import make_slot
from .batch import REQUEST_HORIZON_S, Batch, Call, Calls, Kind
from .clocks import ClockWatch
from .collect import Collector, Graves
from .intake import Intake
from .messages import (
    Add,
    Applied,
    Broadcast,
    ClientRequest,
    Confirm,
    Delta,
    ErrorCode,
    Expire,
    Fetch,
    Get,
    Heartbeat,
    Hold,
    Holding,
    Level,
    ListKeys,
    Merge,
    PeerReply,
    PeerRequest,
    Ping,
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
    Ttl,
)
from .outputs import ClientId, Outputs, Persist, ToClient
from .peers import Liveness, Peer
from .pending import Pending
from .repair import RepairAnswers, Repairer
from .repair_session import RepairSession
from .replication import Replication
from .requests import Bootstrap, ClientRequests
from .rids import RidLog
from .stats import NodeStats

#: A batch that has merged, answered or compared this many keys asks to end (see
#: :attr:`NodeCore.batch_full`).  A batch's messages leave only at its end, and a node
#: catching up read every repair page waiting for it (pages of up to 4,000 states) into
#: one batch: the requests for the next pages left only after all of them were merged,
#: and both sides then waited on each other (traced at 100,000 keys: ~130 ms idle after
#: every four pages, the wiped node's loop 31 % in poll; at a million keys the answering
#: node's 58 %).  One page per batch keeps requests flowing while pages are merged.
BATCH_KEYS = 1000

M = TypeVar("M")
P = TypeVar("P", Fetch, Merge, SyncBuckets, SyncSegments, SyncKeys, RidPull, Hold)


class Routes:
    """Message type -> its handler.  Typed where it is filled (:meth:`on` checks that the
    handler takes that type); looked up with one dict access per message."""

    def __init__(self) -> None:
        self.table: dict[type, Callable[[ClientId, Any], None]] = {}

    def on(self, kind: type[M], handler: Callable[[ClientId, M], None]) -> None:
        self.table[kind] = handler


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
        self.keys.own_slot = self.slot  # whose totals a collection's high-water keeps
        self.peers = {p: Peer(p) for p in self.cluster if p != node_id}
        self.rids = RidLog(settings.request_id_window, settings.request_id_max_age_s,
                           epoch, now, rids)
        self.pending = Pending()
        self.stats = NodeStats()
        self.started = now
        self.batch = Batch(now)
        self.calls = Calls(self.batch)
        # R3: a bootstrap ends with the first completed repair (repaired_from).
        self._bootstrap = Bootstrap.of(fresh and bool(self.peers), now,
                                       settings.peer_timeout_s)
        self.graves = Graves(settings.gc_grace_s)
        self.intake = Intake(node_id, self.slot_name, self.peers, self.keys, self.rids,
                             self.batch, self.stats, settings, self.graves)
        self.clients = ClientRequests(node_id, len(self.cluster), self.slot, self.slot_name,
                                      settings, self.keys, self.rids, self.pending,
                                      self._bootstrap, self.batch, self.stats)
        # A retried request id's target goes through the intake's rules (it may be of a
        # collected key).
        self.clients.merge_target = self.intake.merge_target
        self.clients.grave_of = self.graves.get
        self.replication = Replication(node_id, epoch, settings, self.keys, self.peers,
                                       self.rids, self.pending, self.intake, self.batch,
                                       self.calls, self.stats, republish)
        self.repair = Repairer(self, node_id, settings, self.keys, self.peers, self.rids,
                               self.batch, self.calls, self.stats)
        replication = self.replication
        self.repair_answers = RepairAnswers(node_id, self.keys, self.rids, self.batch,
                                            lambda: replication.flushed_vector)  # R5
        self.collector = Collector(node_id, settings, self.keys, self.peers, self.graves,
                                   self.rids, self.batch, self.calls, self.stats)
        self.clocks = ClockWatch(settings, self.batch, self.stats)
        self._requests = self._request_routes().table
        self._broadcasts: dict[type, Callable[[Peer, Any], bool]] = {
            Delta: self.replication.on_delta, Heartbeat: self._on_heartbeat}
        self._replies: dict[Kind, Callable[[Peer, Call, PeerReply], bool]] = {
            Kind.REPAIR: self._on_repair_reply, Kind.RIDS: self._on_rids_reply,
            Kind.FETCH: self._on_states, Kind.MERGE: self._on_states,
            Kind.HOLD: self._on_holding}

    def _request_routes(self) -> Routes:
        routes = Routes()
        clients, answers = self.clients, self.repair_answers
        routes.on(Add, clients.add)
        routes.on(Get, clients.get)
        routes.on(Reset, clients.reset)
        routes.on(Expire, clients.set_expiry)
        routes.on(Ttl, clients.ttl)
        routes.on(ListKeys, clients.list_keys)
        routes.on(Status, self._status)
        routes.on(Ping, clients.ping)
        routes.on(Confirm, clients.confirm)
        routes.on(Fetch, self._from_peer(self.replication.answer_fetch))
        routes.on(Merge, self._from_peer(self._on_merge))
        routes.on(SyncBuckets, self._from_peer(answers.answer_buckets))
        routes.on(SyncSegments, self._from_peer(answers.answer_segments))
        routes.on(SyncKeys, self._from_peer(answers.answer_keys))
        routes.on(RidPull, self._from_peer(answers.answer_rids))
        routes.on(Hold, self._from_peer(self.collector.answer_hold))
        return routes

    # ------------------------------------------------------------------ state

    @property
    def now(self) -> float:
        """The time of the input being handled."""
        return self.batch.now

    @property
    def epoch(self) -> str:
        return self.replication.epoch

    @property
    def seq(self) -> int:
        return self.replication.seq

    @property
    def requests(self) -> Counter[tuple[str, str]]:
        """(operation, outcome) -> count: outcome is "ok", "duplicate" or an error code."""
        return self.clients.requests

    @property
    def bootstrapping(self) -> bool:
        return self._bootstrap.active

    @property
    def repairing(self) -> RepairSession | None:
        """The repair running now, if any."""
        return self.repair.session

    def vector(self) -> Applied:
        return self.replication.vector()

    def needed(self, level: Level) -> int:
        return level.needed(len(self.cluster))

    # ------------------------------------------------------------------ the parts' seams

    def accept(self, states: States, sender: int, at_ms: int = 0) -> int | None:
        """Validate a peer's states against the cluster and the bounds, then merge.
        Returns how many keys grew, or None if the message was dropped."""
        return self.intake.accept(states, sender, at_ms)

    def accept_page(self, page: StatePage, sender: int, at_ms: int = 0) -> int | None:
        return self.intake.accept_page(page, sender, at_ms)

    def learn_rids(self, entries: tuple[RidEntry, ...]) -> None:
        self.intake.learn_rids(entries)

    def refuse(self, client: ClientId, tag: Tag, code: ErrorCode, message: str,
               op: str = "invalid") -> None:
        """Answer a request with an error (also used by the runtime for requests it could
        not decode, and for roles: ``forbidden``)."""
        self.clients.refuse(client, tag, code, message, op)

    def repaired_from(self, peer: Peer) -> None:
        """R3: a repair with ``peer`` completed: a bootstrapping node is caught up."""
        bootstrap = self._bootstrap
        if bootstrap.active:
            self.stats.bootstraps_completed += 1
            bootstrap.active = False
            bootstrap.until = -float("inf")
            self.batch.log(f"bootstrap from node {peer.node_id} complete: {len(self.keys)} "
                           f"keys in {self.batch.now - self.started:.2f}s")

    # ------------------------------------------------------------------ inputs

    def handle_request(self, client: ClientId, request: ClientRequest | PeerRequest,
                       now: float) -> None:
        """A decoded message arrived on our ROUTER from ``client``."""
        self.batch.now = now
        if self.graves and type(request) is Add:
            self._revive(request.key)
        self._requests[type(request)](client, request)

    def _revive(self, key: str) -> None:
        """A write to a key collected within the grace: its dead state comes back first,
        so the new life holds the old one's death (bases, floor) and a stale record of
        the old life merged later does not count (spec section 5, "key held")."""
        state = self.graves.get(key)
        if state is not None and key not in self.keys:
            self.keys.merge(key, state)
            self.graves.pop(key)

    def _from_peer(self, handler: Callable[[ClientId, P], None]
                   ) -> Callable[[ClientId, P], None]:
        """``handler``, for requests only peers may send: from an unknown node, dropped."""
        def checked(client: ClientId, request: P) -> None:
            if request.origin not in self.peers:
                self.intake.drop(f"{type(request).__name__} from unknown node "
                                 f"{request.origin}")
                return
            handler(client, request)
        return checked

    def _status(self, client: ClientId, request: Status) -> None:
        self.batch.messages.append(ToClient(client, StatusReply(
            request.id, self.node_id, self.status(self.batch.now))))
        self.requests[("status", "ok")] += 1

    def _on_merge(self, client: ClientId, request: Merge) -> None:
        if self.replication.answer_merge(client, request):
            self.clients.settle()  # R2

    def handle_broadcast(self, message: Broadcast, now: float) -> None:
        """A decoded message arrived on our SUB socket."""
        self.batch.now = now
        peer = self.peers.get(message.origin)
        if peer is None:
            self.intake.drop(f"broadcast from unknown node {message.origin}")
            return
        if peer.last_heard is None or peer.silent_logged:
            self.batch.log(f"hearing node {peer.node_id}")
            peer.silent_logged = False
        peer.last_heard = now
        if self._broadcasts[type(message)](peer, message):
            self.clients.settle()  # R2

    def _on_heartbeat(self, peer: Peer, heartbeat: Heartbeat) -> bool:
        self.repair.observe(peer, heartbeat, self.batch.now)
        self.clocks.observe(peer.node_id, heartbeat)
        return True

    def handle_peer_reply(self, reply: PeerReply, now: float) -> None:
        """A decoded reply arrived on our DEALER to node ``reply.node``."""
        self.batch.now = now
        call = self.calls.answered(reply)
        if call is None:
            self.intake.drop(f"unexpected reply {reply.id} from node {reply.node}")
            return
        self._bootstrap.peer_answered = True  # R6
        if self._replies[call.kind](self.peers[call.peer], call, reply):
            self.clients.settle()  # R2

    def _on_repair_reply(self, peer: Peer, call: Call, reply: PeerReply) -> bool:
        self.repair.on_repair_reply(peer, reply)
        return True

    def _on_rids_reply(self, peer: Peer, call: Call, reply: PeerReply) -> bool:
        if isinstance(reply, RidPage):
            self.repair.on_rid_page(peer, reply)
            return True
        return self._on_states(peer, call, reply)  # as any other answer (before the split)

    def _on_holding(self, peer: Peer, call: Call, reply: PeerReply) -> bool:
        if isinstance(reply, Holding) and self.collector.on_holding(peer, reply):
            return False  # confirmations change no held request's condition
        self.intake.drop(f"malformed or unexpected Holding {reply.id} from node {reply.node}")
        return False

    def _on_states(self, peer: Peer, call: Call, reply: PeerReply) -> bool:
        if isinstance(reply, StatesReply):
            return self.replication.on_states(peer, call, reply)
        return True  # an answer of another type: nothing to merge, but settle (R2)

    # ------------------------------------------------------------------ time

    def set_wall(self, now_ms: int) -> None:
        """The wall clock (unix ms) for the batch starting: the runtime calls it before
        the batch's inputs (the core reads no clock).  Reads and steps of keys use it
        (expiry, issue 21); the first one is the process's start (collection's
        start-time rule)."""
        self.batch.set_wall(now_ms)

    @property
    def wall_ms(self) -> int:
        """The wall clock of the current batch (unix ms, :meth:`set_wall`)."""
        return self.batch.wall_ms

    def tick(self, now: float) -> None:
        """Advance timers: heartbeats, repairs, retries and deadlines."""
        self.batch.now = now
        self.replication.tick(now)
        timeout = self.settings.peer_timeout_s
        for node_id, peer in self.peers.items():
            if peer.liveness(now, timeout) is Liveness.SILENT and not peer.silent_logged:
                assert peer.last_heard is not None
                self.batch.log(f"node {node_id} silent for {now - peer.last_heard:.1f}s")
                peer.silent_logged = True
        self.repair.tick(now)
        if self.pending:
            self.clients.settle()  # R2: e.g. reads held while bootstrapping, once it ends
            self.clients.expire(now)
            self.replication.push_and_fetch(now, fresh_only=False)
        self.rids.prune(now)
        self.calls.forget_before(now - REQUEST_HORIZON_S)

    def next_deadline(self) -> float:
        """The latest time by which :meth:`tick` must be called again."""
        s = self.settings
        now = self.batch.now
        deadline = min(self.replication.next_heartbeat, self.repair.deadline(now),
                       self.collector.deadline())
        for peer in self.peers.values():
            if peer.last_heard is not None and not peer.silent_logged:
                deadline = min(deadline, peer.last_heard + s.peer_timeout_s + 1e-3)
        if self._bootstrap.until > now:
            deadline = min(deadline, self._bootstrap.until)
        if self.pending:
            deadline = min(deadline, now + s.retry_interval_s, self.pending.next_deadline())
        return deadline

    # ------------------------------------------------------------------ outputs

    @property
    def batch_full(self) -> bool:
        """The batch has merged, answered or compared :data:`BATCH_KEYS` keys: the
        runtime should take its outputs now rather than read more input into it."""
        return self.batch.keys >= BATCH_KEYS

    def take_outputs(self) -> Outputs:
        """Everything the batch produced.  R1: commit ``persist`` before sending
        ``messages``."""
        batch = self.batch
        flushed = self.keys.flush()
        if self.collector.due(batch.now):
            # After the flush: no key is half-changed.  What it collects is reported by
            # a second flush (cheap: nothing is hot) and persisted with this batch.
            self.collector.run(batch.now)
            collected = self.keys.flush()
            # A round folds the deadlines it sees pass (Lives._fold): those keys changed
            # (bin/sim --seed 141: persisted nothing, memory ahead of the disk).
            flushed.changed.update(collected.changed)
            flushed.removed += collected.removed
            flushed.high_water = collected.high_water or flushed.high_water
            flushed.new_slots += collected.new_slots
        # R4: republishing is held while our own repair runs: peers merging 5,000
        # republished states a batch answered that repair at half speed (a node
        # restarted at a million keys took ~5 s to catch up on 10,000 changed keys, its
        # loop idle 54 % of it; docs/measurements/profile_repair.py 1000000 OUT cut), and
        # the repair gives back to its peer every key we hold more of anyway.
        self.replication.publish(flushed.local, republish=self.repair.session is None)
        if self.pending:
            self.replication.push_and_fetch(batch.now, fresh_only=True)
        rids, forget = self.rids.take_changes()
        persist = Persist(flushed.changed, flushed.new_slots, rids, forget, batch.sync,
                          flushed.removed, flushed.high_water)
        batch.sync = False
        batch.keys = 0
        out, batch.messages = batch.messages, []
        logs, batch.logs = batch.logs, []
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
            "live_keys": self.keys.live_at(self.wall_ms),  # expired keys excluded
            "slots": len(self.keys.slots),
            "root": f"{self.keys.tree.root:016x}",
            "bootstrapping": self.bootstrapping,
            "request_ids_remembered": len(self.rids),
            "held_requests": len(self.pending),
            "repair": self.repair.status(now),
            "expiry": dict(zip(("volatile", "avg_ttl_ms"),
                               self.keys.expiry_stats(self.wall_ms), strict=True)),
            "collection": self.collector.status(),
            "peers": {
                str(node_id): {
                    "liveness": p.liveness(now, s.peer_timeout_s).value,
                    "last_heard_s_ago": None if p.last_heard is None
                    else round(now - p.last_heard, 3),
                    "same_root": p.same_root,
                    "deltas_held": p.stream.seq,
                    "deltas_sent": None if p.heartbeat is None else p.heartbeat.seq,
                    "wants_repair": p.wants_repair(),
                    "repairs": p.repairs,
                    "keys_repaired": p.keys_repaired,
                    "clock_skew_s": None if node_id not in self.clocks.skew_ms
                    else self.clocks.skew_ms[node_id] / 1000.0,
                }
                for node_id, p in self.peers.items()
            },
            "stats": self.stats.as_dict(),
        }


__all__ = ["BATCH_KEYS", "NodeCore", "Routes"]
