"""When this node repairs, from whom, the one repair it runs at a time, and its answers
to the repairs its peers run.

Replication layer 2 (see :mod:`.node`).  :class:`Repairer` reads every heartbeat (delta
positions, third nodes' positions, roots: see :mod:`.peers` for when a repair is
wanted), runs the repair itself (a :class:`~.repair_session.RepairSession`, steps in
:mod:`.repair_session`), reads peers' request-id logs when their heartbeats show
entries it has not read, and keeps the timers of all of that.  :class:`RepairAnswers`
answers the repairs peers run against this node.

It works on the keyspace, the peers and the request-id log it is given, sends through
the batch's :class:`~.batch.Calls`, and needs from the core only what
:class:`RepairHost` lists: the core is the host, and it states the rules that tie a
repair to the rest (a completed repair ends a bootstrap; republishing waits while a
repair runs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from ..config import Settings
from ..limits import MAX_KEYS_PER_PEER_MESSAGE as MAX_KEYS_PER_MESSAGE
from ..model.keyspace import Keyspace
from ..model.page import StatePage
from .batch import Batch, Calls, Kind
from .messages import (
    Applied,
    Heartbeat,
    Merge,
    PeerReply,
    RidEntry,
    RidPage,
    RidPull,
    States,
    SyncBuckets,
    SyncDiff,
    SyncKeys,
    SyncSegments,
    SyncStates,
)
from .outputs import ClientId, LogLevel, ToClient
from .peers import Liveness, Peer
from .repair_session import (
    Phase,
    RepairSession,
    answer_buckets,
    answer_keys,
    answer_segments,
    give_back,
)
from .rids import RidLog
from .stats import NodeStats


class RepairHost(Protocol):
    """What a repair needs from the node core, and nothing more."""

    @property
    def bootstrapping(self) -> bool:
        """The node's storage was just created and no repair has completed yet."""
        ...

    def vector(self) -> Applied:
        """Delta positions now."""
        ...

    def accept_page(self, page: StatePage, sender: int, at_ms: int = 0) -> int | None:
        """Check and merge a page of states (read by ``sender`` at ``at_ms``); how many
        keys grew, None if dropped."""
        ...

    def learn_rids(self, entries: tuple[RidEntry, ...]) -> None:
        """Remember request ids a peer applied."""
        ...

    def repaired_from(self, peer: Peer) -> None:
        """A repair with ``peer`` completed."""
        ...


class Repairer:
    def __init__(self, host: RepairHost, node_id: int, settings: Settings, keys: Keyspace,
                 peers: dict[int, Peer], rids: RidLog, batch: Batch, calls: Calls,
                 stats: NodeStats) -> None:
        self._host = host
        self.node_id = node_id
        self._settings = settings
        self._keys = keys
        self._peers = peers
        self._rids = rids
        self._batch = batch
        self._calls = calls
        self._stats = stats
        self.session: RepairSession | None = None
        self._next_check = batch.now + settings.repair_check_interval_s
        self._turn = 0

    # ------------------------------------------------------------------ heartbeats

    def observe(self, peer: Peer, hb: Heartbeat, now: float) -> None:
        """What ``peer``'s heartbeat says about what we may lack."""
        peer.heartbeat = hb
        if peer.stream.epoch is not None and hb.epoch != peer.stream.epoch:
            peer.stream.adopt(hb.epoch)  # it restarted: see peers.py on why no repair
        me = self.node_id
        timeout = self._settings.peer_timeout_s
        for other, (epoch, seq) in hb.applied.items():
            if other in (me, hb.origin):
                continue
            third = self._peers.get(other)
            if third is None:
                continue
            if (epoch != third.stream.epoch and third.stream.epoch is not None
                    and third.liveness(now, timeout) is Liveness.LIVE):
                peer.watch.pop(other, None)  # we hear ``other`` itself: its epoch is ours
                continue
            if third.stream.covers(epoch, seq):
                peer.watch.pop(other, None)
            elif other not in peer.watch:
                # It holds more of ``other`` than we do: in flight, or lost to us.
                peer.watch[other] = (epoch, seq, now)
        peer.same_root = hb.root == self._keys.tree.root
        if not peer.same_root and not self._keys.dirty and hb.applied == self._host.vector():
            # Same deltas held on both sides, different states: silent divergence.
            peer.flag = True

    # ------------------------------------------------------------------ replies

    def on_repair_reply(self, peer: Peer, reply: PeerReply) -> None:
        """An answer to a request of the running repair."""
        session = self.session
        if session is None or session.peer != peer.node_id or reply.id not in session.inflight:
            return  # an abandoned repair's late answer
        session.last_progress = self._batch.now
        if isinstance(reply, SyncDiff):
            session.on_diff(reply, self._keys)
        elif isinstance(reply, SyncStates):
            grew = self._host.accept_page(reply.states, reply.node, reply.at_ms)
            if grew is None:
                self._abort("dropped a malformed page")
                return
            session.keys_repaired += grew
            session.on_states(reply)
            back = give_back(self._keys, reply)
            for chunk in _chunks(back, MAX_KEYS_PER_MESSAGE):
                session.keys_given += len(chunk)
                self._calls.send(peer.node_id, Merge(self._calls.new_id(), self.node_id, chunk,
                                                     at_ms=self._batch.wall_ms), Kind.MERGE)
        elif isinstance(reply, RidPage):
            session.inflight.pop(reply.id, None)
            self._read_rid_page(peer, reply)
            if reply.more:
                self._pull_rids(session, peer)
            else:
                self._complete(session, peer)
            return
        self._drive(session, peer)

    def on_rid_page(self, peer: Peer, reply: RidPage) -> None:
        """An answer to one of our own request-id log reads (outside repairs)."""
        peer.rid_pull_pending = False
        self._read_rid_page(peer, reply)
        if reply.more:
            self._pull_rid_page(peer)

    def _read_rid_page(self, peer: Peer, reply: RidPage) -> None:
        self._host.learn_rids(reply.entries)
        peer.rid_epoch, peer.rid_cursor = reply.epoch, reply.cursor
        self._stats.rid_pages_pulled += 1

    # ------------------------------------------------------------------ a repair

    def _drive(self, session: RepairSession, peer: Peer) -> None:
        for request in session.next_requests(self._keys, self._calls.new_id, self.node_id):
            self._calls.send(peer.node_id, request, Kind.REPAIR)
        if session.tree_done and session.phase is not Phase.RIDS:
            session.phase = Phase.RIDS
            self._pull_rids(session, peer)

    def _pull_rids(self, session: RepairSession, peer: Peer) -> None:
        request = RidPull(self._calls.new_id(), self.node_id, peer.rid_epoch, peer.rid_cursor)
        session.inflight[request.id] = request
        self._calls.send(peer.node_id, request, Kind.REPAIR)

    def _start(self, peer: Peer) -> None:
        session = self.session = RepairSession(peer.node_id, self._batch.now, self._batch.now)
        peer.last_repair_start = self._batch.now
        self._stats.repairs_started += 1
        request = session.start(self._keys, self._calls.new_id(), self.node_id)
        self._calls.send(peer.node_id, request, Kind.REPAIR)

    def _complete(self, session: RepairSession, peer: Peer) -> None:
        now = self._batch.now
        session.phase = Phase.DONE
        self.session = None
        peer.flag = False
        peer.last_repair_end = now
        peer.repairs += 1
        peer.keys_repaired += session.keys_repaired
        self._stats.repairs_completed += 1
        self._stats.keys_repaired += session.keys_repaired
        self._stats.keys_given_back += session.keys_given
        # Everything the responder held when the repair began is now ours too.
        for origin, (epoch, seq) in session.applied.items():
            other = self._peers.get(origin)
            if other is None:
                continue
            stream = other.stream
            current = other.heartbeat.epoch if other.heartbeat is not None else None
            if (stream.epoch in (None, epoch) or current == epoch
                    or other.liveness(now, self._settings.peer_timeout_s)
                    is not Liveness.LIVE):
                stream.raise_to(epoch, seq)
        self._host.repaired_from(peer)
        if session.keys_repaired or session.keys_given:
            self._batch.log(f"repair with node {peer.node_id}: {session.keys_repaired} keys grew "
                            f"here, {session.keys_given} given back, {session.states_received} "
                            f"states received in {now - session.started:.3f}s")

    def _abort(self, reason: str) -> None:
        session = self.session
        if session is None:
            return
        self.session = None
        self._stats.repairs_aborted += 1
        self._batch.log(f"repair with node {session.peer} abandoned: {reason}", LogLevel.INFO)

    # ------------------------------------------------------------------ time

    def tick(self, now: float) -> None:
        settle_s = 2 * self._settings.heartbeat_interval_s
        for peer in self._peers.values():
            for other, (epoch, seq, since) in list(peer.watch.items()):
                if self._peers[other].stream.covers(epoch, seq):
                    del peer.watch[other]
                elif now >= since + settle_s:  # the form deadline() uses: no float gap
                    peer.flag = True  # it holds deltas of ``other`` we never got
                    del peer.watch[other]
        if now >= self._next_check:
            self._next_check = now + self._settings.repair_check_interval_s
            self._periodic_check(now)
        self._schedule(now)
        for peer in self._peers.values():
            due = self._rid_pull_due(peer, now)
            if due is not None and now >= due and (self.session is None
                                                   or self.session.peer != peer.node_id):
                self._pull_rid_page(peer)

    def deadline(self, now: float) -> float:
        """The latest time by which :meth:`tick` must run again."""
        settle_s = 2 * self._settings.heartbeat_interval_s
        deadline = self._next_check
        for peer in self._peers.values():
            for _, _, since in peer.watch.values():
                deadline = min(deadline, since + settle_s)
            # Only a live peer can be repaired from: a silent one that wants it would
            # otherwise put the deadline in the past and make the runtime spin.
            if self.session is None and self._wanted(peer, now):
                deadline = min(deadline, max(now, self._due_at(peer)))
            due = self._rid_pull_due(peer, now)
            if due is not None and (self.session is None or self.session.peer != peer.node_id):
                deadline = min(deadline, max(now, due))
        if self.session is not None:
            deadline = min(deadline, self.session.last_progress + self.timeout_s() + 1e-3)
        return deadline

    def _periodic_check(self, now: float) -> None:
        """Every ``repair_check_interval_s``: one live peer in turn whose root differs
        is repaired from (defence in depth; under load the difference is what is in
        flight, so this costs little)."""
        live = [p for p in self._peers.values()
                if p.liveness(now, self._settings.peer_timeout_s) is Liveness.LIVE]
        if not live:
            return
        peer = live[self._turn % len(live)]
        self._turn += 1
        hb = peer.heartbeat
        if hb is not None and hb.root != self._keys.tree.root and not self._behind(hb):
            peer.flag = True

    def _behind(self, hb: Heartbeat) -> bool:
        """``hb`` shows a peer that holds no more of any origin's deltas than we do, and
        less of some: it is catching up, and it repairs itself from us (its heartbeat
        reason), giving back in the same repair whatever it holds that we lack.

        Repairing from it as well sent it our hash lists while it caught up: at a million
        keys a node restarted after 10,000 keys changed received 19x those keys' bytes,
        both peers' periodic checks flagging it once or twice during its 19 s of loading
        and repairing (`bin/bench --scale`, before this check); at 100,000 keys, caught up
        in 1.6 s, it received 1.2x."""
        mine = self._host.vector()
        less = False
        for origin, (epoch, seq) in hb.applied.items():
            ours = mine.get(origin)
            if ours is None or ours[0] != epoch or seq > ours[1]:
                return False  # it may hold deltas we lack
            less = less or seq < ours[1]
        return less or any(origin not in hb.applied for origin in mine)

    def timeout_s(self) -> float:
        """A repair (or a request-id read) with no answer for this long is abandoned."""
        return 2 * self._settings.peer_timeout_s

    def _wanted(self, peer: Peer, now: float) -> bool:
        """A repair from ``peer`` is wanted and possible (it is live).  A bootstrapping
        node wants one from any live peer: its delta positions may show nothing missing
        (it heard a peer's deltas in order from that peer's first), yet only a completed
        repair ends the bootstrap (tests/integration/test_replication.py, a node started
        empty: without this it held every request for a peer's answer indefinitely)."""
        return ((peer.wants_repair() or self._host.bootstrapping)
                and peer.liveness(now, self._settings.peer_timeout_s) is Liveness.LIVE)

    def _due_at(self, peer: Peer) -> float:
        """Earliest start of the next repair with ``peer`` (rate limit)."""
        return peer.last_repair_start + self._settings.repair_interval_s

    def _schedule(self, now: float) -> None:
        session = self.session
        if session is not None:
            if now - session.last_progress > self.timeout_s():
                self._abort(f"no answer from node {session.peer} for "
                            f"{now - session.last_progress:.1f}s")
            else:
                return
        candidates = [p for p in self._peers.values()
                      if self._wanted(p, now) and now >= self._due_at(p)]
        if candidates:
            # The peer that holds the most of everyone's deltas repairs the most at once.
            best = max(candidates, key=lambda p: (p.flag, sum(
                seq for _, seq in (p.heartbeat.applied.values() if p.heartbeat else ()))))
            self._start(best)

    def _rid_pull_due(self, peer: Peer, now: float) -> float | None:
        """When to read ``peer``'s request-id log next (None: nothing to read).

        Counts reach a node without the ids that raised them - a reset's delta carries
        every slot it observed, a repair gives back whole states, a fetch answers with
        them - and a retry of such an id failed over to this node would count twice.
        Heartbeats say how long each peer's log is; a node behind it pulls the pages it
        has not read, at most once per ``repair_interval_s`` (found by the simulator:
        3 of 150 seeds at 3 nodes; pinned by tests/sim's request-id test)."""
        settings = self._settings
        if (not peer.rids_behind()
                or peer.liveness(now, settings.peer_timeout_s) is not Liveness.LIVE):
            return None
        if peer.rid_pull_pending:  # unanswered (lost, or the peer died): ask again later
            return peer.last_rid_pull + self.timeout_s()
        return peer.last_rid_pull + settings.repair_interval_s

    def _pull_rid_page(self, peer: Peer) -> None:
        peer.rid_pull_pending = True
        peer.last_rid_pull = self._batch.now
        request = RidPull(self._calls.new_id(), self.node_id, peer.rid_epoch, peer.rid_cursor)
        self._calls.send(peer.node_id, request, Kind.RIDS)

    # ------------------------------------------------------------------ status

    def status(self, now: float) -> dict[str, object] | None:
        session = self.session
        return None if session is None else {
            "peer": session.peer, "phase": session.phase.value,
            "running_s": round(now - session.started, 3),
            "states_received": session.states_received}


class RepairAnswers:
    """This node's side of the repairs its peers run: answers from the keyspace and the
    request-id log (the steps are :mod:`.repair_session`'s)."""

    def __init__(self, node_id: int, keys: Keyspace, rids: RidLog, batch: Batch,
                 flushed_vector: Callable[[], Applied]) -> None:
        """``flushed_vector``: delta positions as of the last flush, what the hash tree
        reflects; an answer must claim no more than that (rule R5 of :mod:`.node`)."""
        self.node_id = node_id
        self._keys = keys
        self._rids = rids
        self._batch = batch
        self._flushed_vector = flushed_vector

    def answer_buckets(self, client: ClientId, request: SyncBuckets) -> None:
        self._batch.messages.append(ToClient(client, answer_buckets(
            self._keys, request, self.node_id, self._flushed_vector())))

    def answer_segments(self, client: ClientId, request: SyncSegments) -> None:
        self._batch.messages.append(ToClient(client, answer_segments(
            self._keys, request, self.node_id)))

    def answer_keys(self, client: ClientId, request: SyncKeys) -> None:
        answer = replace(answer_keys(self._keys, request, self.node_id),
                         at_ms=self._batch.wall_ms)  # when its states were read
        self._batch.keys += len(answer.states) + len(request.entries)
        self._batch.messages.append(ToClient(client, answer))

    def answer_rids(self, client: ClientId, request: RidPull) -> None:
        entries, cursor, more = self._rids.page(request.epoch, request.after)
        self._batch.messages.append(ToClient(client, RidPage(
            request.id, self.node_id, tuple(entries), self._rids.epoch, cursor, more)))


def _chunks(states: States, size: int) -> list[States]:
    items = list(states.items())
    return [dict(items[i:i + size]) for i in range(0, len(items), size)]


__all__ = ["RepairAnswers", "RepairHost", "Repairer"]
