"""The client-request path: apply or answer each request, or hold it in :mod:`.pending`.

A write (:class:`~.messages.Add`, :class:`~.messages.Reset`,
:class:`~.messages.Expire`) is refused ``busy`` before
anything is applied if holding it would pass the caps; a repeat of a request id already
applied is answered as a duplicate (:meth:`ClientRequests._known_rid`); a write the node
must first catch up for (the session saw more, or the node bootstraps) is held as a
read and applied when that read is done; otherwise it is applied at once, and answered
at once (``wait=local``) or held as a wait.  Reads (:class:`~.messages.Get`,
:class:`~.messages.Ttl`) at ``read=local`` are answered at once unless gated the same
way.  Everything that depends on time reads the batch's wall clock (:attr:`_wall`, unix
ms, set by the runtime): an expired key reads as never written.  :meth:`settle` answers
what is held once its condition holds, :meth:`expire` what ran out of time.  Which
peers to push to and fetch from for held requests is :mod:`.replication`'s job.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from ..config import Settings
from ..model.expiry import META
from ..model.keyspace import Keyspace
from ..model.pncounter import Overflow, Record, State, exists, merge
from .batch import Batch
from .messages import (
    MAX_TTL_MS,
    Add,
    Confirm,
    Counted,
    ErrorCode,
    Expire,
    Get,
    Held,
    KeysPage,
    Level,
    ListKeys,
    Ping,
    Pong,
    Refused,
    Reset,
    States,
    Tag,
    Ttl,
)
from .outputs import ClientId, ToClient
from .pending import Pending, Read, Wait
from .rids import RidLog
from .stats import NodeStats

_NO_STATES: States = {}


@dataclass(slots=True)
class Bootstrap:
    """A fresh node knows nothing its peers hold (after a wipe, not even its own old
    slot).  Answering from that would show a count going backwards, so until its first
    repair completes every request first fetches its keys from a peer (one round trip),
    or, if no peer answers, waits one peer timeout (``until``)."""

    active: bool
    until: float
    #: Some peer has answered a request of ours (then a bootstrapping node keeps
    #: waiting for peers, however long its first repair takes).
    peer_answered: bool = False

    @classmethod
    def of(cls, fresh: bool, now: float, timeout_s: float) -> Bootstrap:
        return cls(True, now + timeout_s) if fresh else cls(False, -math.inf)

    def wait_for_peers(self, now: float) -> bool:
        """While bootstrapping: hold requests for a peer's answer, unless no peer has
        answered anything within one peer timeout of the start (then serve alone)."""
        return self.peer_answered or now < self.until


def budget_s(timeout_ms: int) -> float:
    """How long the node may work on a request: most of the client's timeout, so the
    answer (even a negative one) arrives before the client gives up."""
    return timeout_ms / 1000.0 * 0.8


#: A client request this module answers with :class:`Counted`.
Counting = Add | Reset | Expire | Get | Ttl
Write = Add | Reset | Expire


def op_name(request: Counting) -> str:
    if isinstance(request, Add):
        return "increment" if request.amount > 0 else "decrement"
    if isinstance(request, Expire):
        return "expire" if request.at_ms is not None or request.ttl_ms is not None else "persist"
    return {Reset: "reset", Get: "get", Ttl: "ttl"}[type(request)]


def keys_text(keys: tuple[str, ...]) -> str:
    shown = ", ".join(repr(k) for k in keys[:3])
    return shown + (f" and {len(keys) - 3} more keys" if len(keys) > 3 else "")


class ClientRequests:
    """Client requests of one node: applied, answered, refused or held."""

    def __init__(self, node_id: int, cluster_size: int, slot: int, slot_name: str,
                 settings: Settings, keys: Keyspace, rids: RidLog, pending: Pending,
                 bootstrap: Bootstrap, batch: Batch, stats: NodeStats) -> None:
        self.node_id = node_id
        self._cluster_size = cluster_size
        self._slot = slot
        self._slot_name = slot_name
        self._settings = settings
        self._keys = keys
        self._rids = rids
        self._pending = pending
        self._bootstrap = bootstrap
        self._batch = batch
        self._stats = stats
        #: (operation, outcome) -> count: outcome is "ok", "duplicate" or an error code.
        self.requests: Counter[tuple[str, str]] = Counter()
        #: Merges a retried request id's target (the core sets the intake's, which
        #: screens targets of collected keys).
        self.merge_target: Callable[[str, dict[str, Record]], object] = keys.merge
        #: A collected key's grave (its dead state) or None; the core sets the
        #: collector's (sessions behind a collected key, :meth:`_covers`).
        self.grave_of: Callable[[str], State | None] | None = None

    # ------------------------------------------------------------------ answers

    @property
    def _wall(self) -> int:
        """The batch's wall clock, unix ms: what expiry is measured against."""
        return self._batch.wall_ms

    def _reply_counts(self, client: ClientId, request: Counting,
                      duplicate: bool = False, changed: bool = False) -> None:
        """Answer with the counts of the request's keys; an Expire with ``changed`` (1
        or 0), a Ttl with its key's pttl and deadline."""
        keys: tuple[str, ...]
        exists: tuple[bool, ...] = ()
        wall = self._wall
        if type(request) is Add or type(request) is Reset:
            # One key: no generator on the per-increment path.
            keys = (request.key,)
            counts: tuple[int, ...] = (self._keys.value(request.key, wall),)
        elif isinstance(request, Get):
            keys = request.keys
            value = self._keys.value
            counts = tuple(value(k, wall) for k in keys)
            if request.session:
                exists = tuple(self._keys.exists(k, wall) for k in keys)
        elif isinstance(request, Expire):
            keys = (request.key,)
            counts = (int(changed),)
        else:
            keys = (request.key,)
            deadline = self._keys.deadline(request.key, wall)
            counts = (deadline - wall if deadline > 0 else deadline, deadline)
        states = ({k: self._keys.state(k) for k in keys} if request.session else _NO_STATES)
        # Positional: this is the per-request hot path.
        self._batch.messages.append(ToClient(client, Counted(
            request.id, self.node_id, counts, states, duplicate, exists)))
        self.requests[(op_name(request), "duplicate" if duplicate else "ok")] += 1

    def refuse(self, client: ClientId, tag: Tag, code: ErrorCode, message: str,
               op: str = "invalid") -> None:
        """Answer a request with an error (also used by the runtime for requests it could
        not decode, and for roles: ``forbidden``)."""
        self.requests[(op, code.value)] += 1
        self._batch.messages.append(ToClient(client, Refused(tag, self.node_id, code,
                                                             message)))

    def _held(self, client: ClientId, req: Confirm, nodes: int) -> None:
        self._batch.messages.append(ToClient(client, Held(req.id, self.node_id, req.key,
                                                          nodes)))
        self.requests[("confirm", "ok" if nodes >= req.nodes else "timeout")] += 1

    # ------------------------------------------------------------------ requests

    def list_keys(self, client: ClientId, request: ListKeys) -> None:
        if self._bootstrap.active:
            # A partial keyspace would read as keys missing; the client retries.
            self.refuse(client, request.id, ErrorCode.UNAVAILABLE,
                        f"node {self.node_id} is still receiving the keyspace from its "
                        f"peers ({len(self._keys)} keys so far); try again or ask another "
                        "node", "keys")
            return
        page, more = self._keys.list_keys(request.prefix, request.after, request.limit,
                                          self._wall)
        self._batch.messages.append(ToClient(client, KeysPage(request.id, self.node_id,
                                                              tuple(page), more)))
        self.requests[("keys", "ok")] += 1

    def ping(self, client: ClientId, request: Ping) -> None:
        self._batch.messages.append(ToClient(client, Pong(request.id, self.node_id)))
        self.requests[("ping", "ok")] += 1

    def add(self, client: ClientId, req: Add, caught_up: bool = False) -> None:
        if self._answered_first(client, req):
            return
        key = req.key
        if not caught_up and (req.seen or self._bootstrap.active) and self._gated(req):
            self._start_read(client, req, (key,), 1)
            return
        wall = self._wall
        try:
            rec = self._keys.add(key, self._slot, req.amount, wall, req.ttl_ms)
        except Overflow:
            self.refuse(client, req.id, ErrorCode.OVERFLOW,
                        f"{key!r}: its total of {'increments' if req.amount > 0 else 'decrements'}"
                        f" would pass 2**63-1 (count now {self._keys.value(key, wall)})",
                        op_name(req))
            return
        self._batch.sync = True
        if req.amount > 0:
            self._stats.increments += 1
        else:
            self._stats.decrements += 1
        rid = req.rid
        if rid is None and req.wait is Level.LOCAL:
            self._reply_counts(client, req)  # the hot path: nothing to remember
            return
        target: dict[str, Record] = {
            self._slot_name: (rec[0], 0, 0, 0) if req.amount > 0 else (0, rec[1], 0, 0)}
        if req.ttl_ms:
            # The expiry is part of what was asked: a wait covers it, a retry's answer too.
            target.update(self._meta(key))
        if rid is not None:
            self._remember(rid, key, target)
        self._acknowledge(client, req, target, duplicate=False)

    def reset(self, client: ClientId, req: Reset, caught_up: bool = False) -> None:
        if self._answered_first(client, req):
            return
        key = req.key
        if not caught_up and self._gated(req):
            self._start_read(client, req, (key,), 1)
            return
        target = self._keys.reset(key, self._wall)
        self._batch.sync = True
        self._stats.resets += 1
        if req.rid is not None:
            self._remember(req.rid, key, target)
        self._acknowledge(client, req, target, duplicate=False)

    def set_expiry(self, client: ClientId, req: Expire, caught_up: bool = False) -> None:
        """Set, change (``mode`` permitting) or remove the key's expiry: a change of its
        meta, replicated and exactly-once like a reset."""
        if self._answered_first(client, req):
            return
        key = req.key
        if not caught_up and self._gated(req):
            self._start_read(client, req, (key,), 1)
            return
        wall = self._wall
        at = req.at_ms if req.ttl_ms is None else wall + req.ttl_ms
        if at is not None:
            if at > wall + MAX_TTL_MS:
                self.refuse(client, req.id, ErrorCode.BAD_REQUEST,
                            f"invalid expire time: {key!r} would expire "
                            f"{(at - wall) / 86_400_000:.0f} days from now at node "
                            f"{self.node_id}; the limit is {MAX_TTL_MS // 86_400_000} days "
                            "(10 years)", op_name(req))
                return
            # A deadline of 0 is "no expiry" in the key's register; any past time
            # expires the key at once, as Redis does: 1 is such a time.
            at = max(at, 1)
        target: dict[str, Record] = {}
        if req.also_xx and self._keys.deadline(key, wall) < 0:
            pass  # XX: the key has no expiry (or does not exist): nothing changes
        elif self._keys.expire(key, at, req.mode, wall):
            self._batch.sync = True
            # A deadline at or before now is an observed reset (the model's expire
            # resets): what it wrote is every record's bases as well as the meta, and a
            # wait must cover them (bin/sim --seed 7: a wait=majority EXPIRE in the past
            # acknowledged while no peer held the reset, only the meta).
            target = self._keys.state(key) if at is not None and at <= wall else (
                self._meta(key))
        if req.rid is not None:
            self._remember(req.rid, key, target)
        self._acknowledge(client, req, target, duplicate=False)

    def _answered_first(self, client: ClientId, req: Add | Reset | Expire) -> bool:
        """A write answered before anything is applied: refused ``busy`` (checked first:
        a write's wait cannot be refused once applied), or a known request id."""
        if req.wait is not Level.LOCAL and self._refused_busy(client, req.id, op_name(req)):
            return True
        return self._known_rid(client, req)

    def _remember(self, rid: str, key: str, target: dict[str, Record]) -> None:
        """An applied write's request id: in the window now, persisted with the batch."""
        self._rids.remember(rid, key, target, self._batch.now)
        self._batch.rids.append((rid, key, target))

    def _meta(self, key: str) -> dict[str, Record]:
        """What a change of ``key``'s expiry wrote: its meta entry (the state holds one
        once its register was ever set); a peer holding it holds the change."""
        state = self._keys.state(key)
        meta = state.get(META)
        return {META: meta} if meta is not None else state

    def get(self, client: ClientId, req: Get) -> None:
        needed = req.read.needed(self._cluster_size)
        if needed == 1 and not self._gated(req):
            self._reply_counts(client, req)
        else:
            self._start_read(client, req, req.keys, needed)

    def ttl(self, client: ClientId, req: Ttl) -> None:
        needed = req.read.needed(self._cluster_size)
        if needed == 1 and not self._gated(req):
            self._reply_counts(client, req)
        else:
            self._start_read(client, req, (req.key,), needed)

    def confirm(self, client: ClientId, req: Confirm) -> None:
        """Wait until ``req.nodes`` nodes hold what this node holds of the key now: the
        wait of a ``wait=majority|all`` write, for writes already applied and answered
        (Redis's WAIT at the RESP door).  The target is the whole state, so the pushes
        that serve waits (they send the whole state) are what satisfies it."""
        target = self._keys.state(req.key)
        if not target or req.nodes <= 1:
            # Nothing to hold is held everywhere; one node is this one, and the answer
            # leaves only after the batch (so every write it covers) is committed.
            self._held(client, req, self._cluster_size if not target else 1)
            return
        if self._refused_busy(client, req.id, "confirm"):
            return
        self._pending.add_wait(Wait(client, req, target, req.nodes,
                                    self._batch.now + req.timeout_ms / 1000.0,
                                    duplicate=False))

    def _known_rid(self, client: ClientId, request: Write) -> bool:
        """Answer a request whose id was already applied; False if the id is new."""
        rid = request.rid
        if rid is None:
            return False
        known = self._rids.get(rid)
        if known is None:
            return False
        key, target = known
        if key != request.key:
            self.refuse(client, request.id, ErrorCode.BAD_REQUEST,
                        f"request id {rid!r} was already used for key {key!r}",
                        op_name(request))
            return True
        self._stats.duplicates += 1
        # A learned id's state normally arrived with it; if not, its target is a true
        # lower bound of a real state, so merging it is safe.
        self.merge_target(key, target)
        self._acknowledge(client, request, target, duplicate=True)
        return True

    def _acknowledge(self, client: ClientId, req: Write, target: dict[str, Record],
                     duplicate: bool) -> None:
        """An Expire's answer is whether it changed something: whether it wrote a
        target (a retry's target is the first attempt's).  One that changed nothing
        has nothing to replicate: answered at once whatever its level."""
        if req.wait is Level.LOCAL or (not target and isinstance(req, Expire)):
            self._reply_counts(client, req, duplicate, bool(target))
            return
        self._pending.add_wait(Wait(client, req, target, req.wait.needed(self._cluster_size),
                                    self._batch.now + budget_s(req.timeout_ms), duplicate))

    def _covers(self, key: str, seen: State) -> bool:
        """Whether a session that has seen ``seen`` of ``key`` may be answered here
        (:meth:`.Keyspace.covers`), or the key's grave covers it: a session that saw the
        key live, before a reset it never saw, is not behind a node that collected the
        key - no node holds the old records any more, and the death every node held
        covers them (CI, test_keys_decrements_and_resets_converge_on_all_nodes: refused
        ``behind`` 1 run in 3).  Only within ``gc_grace_s``: past it, the grave is gone."""
        wall = self._wall
        if self._keys.covers(key, seen, wall):
            return True
        grave = self.grave_of(key) if self.grave_of is not None else None
        if grave is None:
            return False
        joined = merge(grave, seen)
        return not exists(joined, wall) and self._keys.covers(key, joined, wall)

    def _gated(self, request: Counting) -> bool:
        """True when the request must first catch up (session or bootstrap)."""
        if self._bootstrap.active:
            return True
        seen = request.seen
        if seen:
            return not all(self._covers(k, st) for k, st in seen.items())
        return False

    def _refused_busy(self, client: ClientId, tag: Tag, op: str) -> bool:
        """Refuse with ``busy`` (True) if holding one more request for ``client`` would
        pass the per-connection or the per-node cap on held requests."""
        pending = self._pending
        s = self._settings
        mine = pending.per_client.get(client, 0)
        if mine < s.max_held_per_connection and len(pending) < s.max_held_per_node:
            return False
        self._stats.held_refused += 1
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

    def _start_read(self, client: ClientId, req: Counting, keys: tuple[str, ...],
                    needed: int) -> None:
        if self._refused_busy(client, req.id, op_name(req)):
            return  # nothing was applied yet: a gated write is applied after its read
        now = self._batch.now
        bootstrap = self._bootstrap
        min_peers = 1 if bootstrap.active and bootstrap.wait_for_peers(now) else 0
        self._pending.add_read(Read(client, req, keys, needed, min_peers,
                                    now + budget_s(req.timeout_ms),
                                    self._pending.next_stamp()))

    # ------------------------------------------------------------------ held requests

    def _read_done(self, read: Read) -> bool:
        fresh = len(read.fresh)
        if fresh + 1 < read.needed:
            return False
        if fresh < read.min_peers and self._bootstrap.wait_for_peers(self._batch.now):
            return False
        seen = read.request.seen
        return not seen or all(self._covers(k, st) for k, st in seen.items())

    def settle(self) -> None:
        """Answer every pending wait and read whose condition now holds."""
        pending = self._pending
        if pending.reads:
            for read in pending.take_done(self._read_done):
                req = read.request
                if isinstance(req, Add):
                    self.add(read.client, req, caught_up=True)
                elif isinstance(req, Reset):
                    self.reset(read.client, req, caught_up=True)
                elif isinstance(req, Expire):
                    self.set_expiry(read.client, req, caught_up=True)
                else:
                    self._reply_counts(read.client, req)
        if pending.waits:
            for wait in pending.take_confirmed():
                if isinstance(wait.request, Confirm):
                    self._held(wait.client, wait.request, len(wait.holders) + 1)
                else:
                    self._reply_counts(wait.client, wait.request, wait.duplicate,
                                       bool(wait.target))

    def expire(self, now: float) -> None:
        """Answer every pending wait and read whose time ran out."""
        waits, reads = self._pending.take_expired(now)
        for wait in waits:
            if isinstance(wait.request, Confirm):
                # Not an error: WAIT answers how many nodes it reached.
                self._held(wait.client, wait.request, len(wait.holders) + 1)
                continue
            self.refuse(
                wait.client, wait.request.id, ErrorCode.INDETERMINATE,
                f"applied at node {self.node_id}, but only {len(wait.holders) + 1} of the "
                f"{wait.needed} nodes required confirmed {wait.key!r} in time; it may still "
                "spread", op_name(wait.request))
        for read in reads:
            self._expire_read(read)

    def _expire_read(self, read: Read) -> None:
        req = read.request
        if isinstance(req, Write) and req.rid is not None and req.rid in self._rids:
            # Another attempt with this request id was applied while this one waited
            # to catch up: "nothing was applied" would be false for the id.  Found by
            # the simulator (seed 6 of 5 nodes in its first version: a late first
            # attempt applied at a bootstrapping node, then its retry's wait expired
            # "unavailable"); pinned by tests/sim/test_regressions.py.
            self.refuse(read.client, req.id, ErrorCode.INDETERMINATE,
                        f"request id {req.rid!r} was applied at node {self.node_id} by an "
                        "earlier attempt; its level was not confirmed in time", op_name(req))
            return
        if req.seen and not all(self._covers(k, st) for k, st in req.seen.items()):
            self.refuse(read.client, req.id, ErrorCode.BEHIND,
                        f"node {self.node_id} is behind what this session has seen of "
                        f"{keys_text(read.keys)} and could not catch up in time"
                        + ("" if not isinstance(req, Write) else "; nothing was applied"),
                        op_name(req))
        else:
            self.refuse(read.client, req.id, ErrorCode.UNAVAILABLE,
                        f"only {len(read.fresh) + 1} of the {read.needed} nodes required "
                        f"answered for {keys_text(read.keys)} in time"
                        + ("" if not isinstance(req, Write) else "; nothing was applied"),
                        op_name(req))
