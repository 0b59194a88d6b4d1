"""Replication layers 1 and 3 (see :mod:`.node`): deltas and heartbeats on PUB/SUB,
merges and fetches between peers for the requests :mod:`.pending` holds.

:class:`Replication` publishes, at the end of each batch, the delta of the records this
node changed (numbered ``seq`` within its ``epoch``), a chunk of the keys its log
replayed at start, and the heartbeat when due; it merges the deltas peers publish and
tracks the gaps in their streams (:class:`~.peers.Stream`).  For held requests it pushes
the keys of waits to the peers that have not confirmed them (``Merge``) and fetches the
keys of reads from the peers whose fresh answer a read still needs (``Fetch``), and it
answers both for its peers.  Layer 2, repair, is :mod:`.repair`'s.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..config import Settings
from ..limits import MAX_KEYS_PER_PEER_MESSAGE as MAX_KEYS_PER_MESSAGE
from ..model.keyspace import Keyspace
from ..model.pncounter import dominates
from .batch import Batch, Call, Calls, Kind
from .intake import Intake
from .messages import (
    Applied,
    Confirm,
    Delta,
    Fetch,
    Heartbeat,
    Merge,
    States,
    StatesReply,
)
from .outputs import ClientId, Publish, ToClient
from .peers import Peer, vector
from .pending import Pending
from .rids import RidLog
from .stats import NodeStats


class Replication:
    def __init__(self, node_id: int, epoch: str, settings: Settings, keys: Keyspace,
                 peers: dict[int, Peer], rids: RidLog, pending: Pending, intake: Intake,
                 batch: Batch, calls: Calls, stats: NodeStats,
                 republish: Iterable[str] = ()) -> None:
        self.node_id = node_id
        self.epoch = epoch
        #: Our last delta's number within ``epoch``.
        self.seq = 0
        self._settings = settings
        self._keys = keys
        self._peers = peers
        self._rids = rids
        self._pending = pending
        self._intake = intake
        self._batch = batch
        self._calls = calls
        self._stats = stats
        self._republish = list(republish)
        self._heartbeat_due = True
        self.next_heartbeat = batch.now
        #: Delta positions as of the last flush: what the hash tree reflects.  A repair
        #: answer must claim no more than that, or a delta merged in the same batch (not
        #: yet in the tree) would be claimed and never sent.
        self.flushed_vector: Applied = self.vector()

    def vector(self) -> Applied:
        """How far this node holds every origin's deltas (its own included)."""
        return vector((self.epoch, self.seq), self.node_id, self._peers)

    # ------------------------------------------------------------------ deltas

    def on_delta(self, peer: Peer, delta: Delta) -> bool:
        """Merge a peer's delta; False if it was dropped."""
        if self._intake.accept(delta.states, delta.origin, delta.at_ms) is None:
            return False
        self._intake.learn_rids(delta.rids)
        if not peer.stream.applied(delta.epoch, delta.seq):
            peer.flag = True  # a gap: deltas of this peer were lost
        return True

    def tick(self, now: float) -> None:
        if now >= self.next_heartbeat:
            self._heartbeat_due = True
            self.next_heartbeat = now + self._settings.heartbeat_interval_s

    def publish(self, local: States, republish: bool) -> None:
        """End of a batch: publish ``local`` (the records this node changed), a chunk of
        the keys to republish (if ``republish``), and the heartbeat when due."""
        keys = self._keys
        messages = self._batch.messages
        wall = self._batch.wall_ms  # when the states below are read
        if self._republish and republish:
            # A chunk per batch: deltas stay bounded and the loop stays responsive.
            chunk = self._republish[:MAX_KEYS_PER_MESSAGE]
            del self._republish[:MAX_KEYS_PER_MESSAGE]
            self.seq += 1
            messages.append(Publish(Delta(self.node_id, self.epoch, self.seq,
                                          {k: keys.state(k) for k in chunk}, at_ms=wall)))
            self._stats.deltas_sent += 1
        if local:
            self.seq += 1
            messages.append(Publish(Delta(self.node_id, self.epoch, self.seq, local,
                                          tuple(self._batch.rids), wall)))
            self._stats.deltas_sent += 1
            self._batch.rids = []
        self.flushed_vector = self.vector()
        if self._heartbeat_due:
            self._heartbeat_due = False
            messages.append(Publish(Heartbeat(
                self.node_id, self.epoch, self.seq, keys.tree.root, len(keys),
                self.vector(), self._rids.epoch, self._rids.next, wall)))
            self._stats.heartbeats_sent += 1

    # ------------------------------------------------------------------ peers' requests

    def answer_fetch(self, client: ClientId, request: Fetch) -> None:
        states = {k: st for k in request.keys if (st := self._keys.state(k))}
        self._batch.keys += len(states)
        self._batch.messages.append(ToClient(client, StatesReply(
            request.id, self.node_id, states, self._batch.wall_ms)))

    def answer_merge(self, client: ClientId, request: Merge) -> bool:
        """Merge a peer's push and answer with what we hold; False if it was dropped."""
        # The answer tells the sender we hold these durably: an fsync must precede
        # it even if nothing grows (what we hold may sit in unsynced commits).
        self._batch.sync = True
        if self._intake.accept(request.states, request.origin, request.at_ms) is None:
            return False
        self._intake.learn_rids(request.rids)
        held = {k: self._keys.state(k) for k in request.states}
        self._batch.messages.append(ToClient(client, StatesReply(
            request.id, self.node_id, held, self._batch.wall_ms)))
        return True

    # ------------------------------------------------------------------ our requests

    def on_states(self, peer: Peer, call: Call, reply: StatesReply) -> bool:
        """A peer answered a fetch or a merge of ours; False if the answer was dropped."""
        if self._intake.accept(reply.states, reply.node, reply.at_ms, solicited=True) is None:
            return False
        if call.kind is Kind.FETCH:
            peer.fetch_rtt = self._batch.now - call.sent
            peer.fresh_as_of = max(peer.fresh_as_of, call.stamp)
            self._pending.answered(peer.node_id, call.stamp, call.keys)
        else:
            self._pending.held(peer.node_id, reply.states, dominates)
        return True

    def push_and_fetch(self, now: float, fresh_only: bool) -> None:
        """Fetch for pending reads and push for pending waits.  ``fresh_only`` (end of a
        batch): only what has not been asked yet; otherwise (tick) also re-send what is
        unanswered after ``retry_interval_s``."""
        if self._pending.reads:
            self._fetch(now, fresh_only)
        if self._pending.waits:
            self._push(now, fresh_only)

    def _fetch(self, now: float, fresh_only: bool) -> None:
        interval = self._settings.retry_interval_s
        pending = self._pending
        oldest = min(r.stamp for r in pending.reads)
        # Every key of every pending read, in as many Fetches as it takes: a read
        # whose keys were cut off one Fetch could never become fresh (a Get of 5,001+
        # keys, or concurrent reads of more keys than that, expired "unavailable").
        keys = pending.read_keys()
        chunks = [tuple(keys[i:i + MAX_KEYS_PER_MESSAGE])
                  for i in range(0, len(keys), MAX_KEYS_PER_MESSAGE)]
        for peer_id in pending.stale_peers(self._peers):
            peer = self._peers[peer_id]
            # A read counts only answers to fetches sent after it began.
            if peer.fetch_stamp < oldest or (
                    not fresh_only
                    and now - peer.last_fetch >= max(interval, min(
                        2 * peer.fetch_rtt, self._settings.peer_timeout_s))):
                stamp = pending.next_stamp()
                peer.fetch_stamp, peer.last_fetch = stamp, now
                for chunk in chunks:
                    self._stats.fetches_sent += 1
                    self._calls.send(peer_id, Fetch(self._calls.new_id(), self.node_id,
                                                    chunk), Kind.FETCH, stamp, chunk)

    def _push(self, now: float, fresh_only: bool) -> None:
        interval = self._settings.retry_interval_s
        pending = self._pending
        for peer_id, peer in self._peers.items():
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
            self._stats.merges_sent += 1
            # Each key's state once, however many waits hold it: 10,000 held confirms
            # of one key made every tick look the same state up 5,000 times per peer
            # (tick + outputs 98 -> 14 ms median; docs/measurements/held_tick.py).
            state = self._keys.state
            self._calls.send(peer_id, Merge(self._calls.new_id(), self.node_id,
                                            {k: state(k) for k in {w.key: None for w in waits}},
                                            rids, self._batch.wall_ms), Kind.MERGE)
