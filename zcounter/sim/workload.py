"""Simulated clients: one logical operation at a time each, like :mod:`zcounter.client`.

Each operation goes to one node drawn at random and names keys from the run's small key
set, so updates to the same key collide across nodes:

* increments and decrements (``Add``; random ``by``, every ``wait`` level, a request id,
  retried with the same id at the same node after a timeout or a retryable refusal; a
  share carry no request id and are never retried, the core's hot path);
* resets (rarer; always with a request id);
* reads of one or several keys at every ``read`` level.

A *session* client sends, for the keys of the request, the states it has seen (``seen``)
and joins into them the states every reply returns, exactly as
:meth:`zcounter.client.Client._observe` does.  Other clients ask for states in replies
now and then (so their reads can be checked too) but never send ``seen``.

An operation ends ``ok`` (a Counted reply), ``indeterminate`` (some attempt was applied,
its level not confirmed), ``fail`` (every attempt definitely refused) or ``unknown``
(an attempt timed out: it may or may not have been applied).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ..model.expiry import META
from ..model.pncounter import MAX_STEP, Record, merge_into
from ..protocol.messages import (
    Add,
    ClientRequest,
    Counted,
    Expire,
    ExpireMode,
    Get,
    Level,
    Refused,
    Reset,
    Ttl,
)
from .codes import Action, OpKind, Outcome
from .history import Attempt, History, Op
from .network import Kind, Network, Packet, client_endpoint
from .oracle import SimFailure, check_includes, required_for
from .scheduler import Scheduler
from .swarm import Swarm

LEVELS: tuple[Level, ...] = (Level.LOCAL, Level.MAJORITY, Level.ALL)
KINDS: tuple[Action, ...] = tuple(Action)
MODES: tuple[ExpireMode | None, ...] = (None, None, *ExpireMode)


@dataclass
class SimClient:
    index: int
    session: bool
    #: Scripted clients run the operations a test submits, nothing else.
    scripted: bool = False
    seen: dict[str, dict[str, Record]] = field(default_factory=dict)
    current: Attempt | None = None
    #: Bumped whenever the client's pending timer becomes void.
    token: int = 0

    def observe(self, states: dict[str, dict[str, Record]]) -> None:
        for key, state in states.items():
            mine = self.seen.setdefault(key, {})
            merge_into(mine, state)


class Workload:
    def __init__(self, swarm: Swarm, rng: random.Random, scheduler: Scheduler,
                 network: Network, history: History, life_of: Callable[[int], int],
                 nodes: list[int], stats: Counter[str],
                 trace: Callable[[str], None] | None,
                 wall_of: Callable[[int], int] = lambda node: 0) -> None:
        self.swarm = swarm
        self.rng = rng
        self.scheduler = scheduler
        self.network = network
        self.history = history
        self.life_of = life_of
        self.nodes = nodes
        self.stats = stats
        self.trace = trace
        #: A node's wall clock now (unix ms): absolute deadlines are drawn around it.
        self.wall_of = wall_of
        self.clients = [SimClient(i, rng.random() < swarm.p_session)
                        for i in range(swarm.clients)]
        #: Set by the heal phase: operations in flight finish, nothing new starts.
        self.stopping = False
        self._next_tag = 1

    def start(self) -> None:
        for client in self.clients:
            self._arm(client, self.rng.randint(0, 100))

    def busy(self) -> bool:
        return any(c.current is not None for c in self.clients)

    # ------------------------------------------------------------------ operations

    def submit(self, node: int, kind: OpKind | str, keys: tuple[str, ...], amount: int = 0,
               level: Level = Level.LOCAL, timeout_ms: int = 1000, session: bool = False,
               retries: int = 1) -> Op:
        """Run one operation now from a new scripted client (for scenarios)."""
        client = SimClient(len(self.clients), session, scripted=True)
        self.clients.append(client)
        op_kind = OpKind(kind)
        op = self.history.new_op(Op(
            len(self.history.ops), client.index, node, op_kind, keys, level, timeout_ms,
            retries, amount,
            None if op_kind is OpKind.READ else f"s{client.index}-{len(self.history.ops)}",
            True))
        self._send(client, op)
        return op

    def _new_op(self, client: SimClient) -> None:
        s, rng = self.swarm, self.rng
        index = len(self.history.ops)
        kind = rng.choices(KINDS, s.mix + s.expiry_mix)[0]
        node = rng.choice(self.nodes)
        timeout = rng.choice(s.timeouts_ms)
        states = client.session or rng.random() < s.p_states
        retries = rng.randint(0, s.max_retries)
        if kind is Action.READ:
            count = rng.randint(1, min(s.read_keys_max, len(s.keys)))
            op = Op(index, client.index, node, OpKind.READ, tuple(rng.sample(s.keys, count)),
                    rng.choices(LEVELS, s.read_weights)[0], timeout, retries, states=states)
        elif kind is Action.TTL:
            op = Op(index, client.index, node, OpKind.TTL, (rng.choice(s.keys),),
                    rng.choices(LEVELS, s.read_weights)[0], timeout, retries, states=states)
        elif kind is Action.EXPIRE:
            op = Op(index, client.index, node, OpKind.EXPIRE, (rng.choice(s.keys),),
                    rng.choices(LEVELS, s.wait_weights)[0], timeout, retries,
                    rid=f"c{client.index}-{index}", states=states)
            self._draw_expiry(op)
        else:
            rid: str | None = f"c{client.index}-{index}"
            key = rng.choice(s.keys)
            level = rng.choices(LEVELS, s.wait_weights)[0]
            amount = 0
            if kind is not Action.RESET:
                by = rng.randint(1, s.by_max)
                amount = by if kind is Action.INCREMENT else -by
                if s.p_no_rid and rng.random() < s.p_no_rid:
                    # Without a request id the ledger tells applications apart by
                    # (key, amount): make it unique.  Never retried (it could count twice).
                    while not self.history.ridless_free(key, amount) and abs(amount) < MAX_STEP:
                        amount += 1 if amount > 0 else -1
                    if self.history.ridless_free(key, amount):
                        rid, retries = None, 0
            op = Op(index, client.index, node, kind.kind, (key,), level, timeout, retries,
                    amount, rid, states)
            if amount and s.p_ttl and rng.random() < s.p_ttl:
                op.ttl_ms = rng.choice(s.ttls_ms)
        self.history.new_op(op)
        self._send(client, op)

    def _draw_expiry(self, op: Op) -> None:
        """PERSIST, a ttl from the node's now (EXPIRE), or a deadline (EXPIREAT) around
        the node's wall clock, some already passed (the key expires at once)."""
        rng = self.rng
        op.mode = rng.choice(MODES)
        choice = rng.random()
        if choice < 0.2:
            op.mode = None  # PERSIST takes no mode
        elif choice < 0.6:
            op.ttl_ms = rng.choice(self.swarm.ttls_ms)
        else:
            op.at_ms = self.wall_of(op.node) + rng.randint(-500, 2 * max(self.swarm.ttls_ms))

    def _send(self, client: SimClient, op: Op) -> None:
        tag = self._next_tag
        self._next_tag += 1
        seen = ({k: dict(client.seen[k]) for k in op.keys if k in client.seen}
                if client.session else {})
        request: ClientRequest
        if op.kind is OpKind.READ:
            request = Get(tag, op.keys, op.level, op.timeout_ms, seen, op.states)
        elif op.kind is OpKind.RESET:
            request = Reset(tag, op.key, op.rid, op.level, op.timeout_ms, seen, op.states)
        elif op.kind is OpKind.TTL:
            request = Ttl(tag, op.key, op.level, op.timeout_ms, seen, op.states)
        elif op.kind is OpKind.EXPIRE:
            request = Expire(tag, op.key, op.at_ms, None if op.at_ms is None and not op.ttl_ms
                             else ExpireMode(op.mode) if op.mode else None, op.rid, op.level,
                             op.timeout_ms, seen, op.states, op.ttl_ms or None)
        else:
            request = Add(tag, op.key, op.amount, op.rid, op.level, op.timeout_ms, seen,
                          op.states, op.ttl_ms)
        n = len(self.nodes)
        required = (required_for(op.level.needed(n), n, self.history.required, op.keys)
                    if op.kind in (OpKind.READ, OpKind.TTL) else {})
        attempt = Attempt(op, tag, self.scheduler.now_ms, required, self.history.wipes, seen)
        self.history.attempts[tag] = attempt
        op.attempts += 1
        client.current = attempt
        client.token += 1
        self._arm(client, op.timeout_ms)
        if self.trace is not None:
            self.trace(f"SEND op {op.index} try {op.attempts} -> node {op.node}: {request}")
        self.network.send(Packet(Kind.REQUEST, client_endpoint(client.index), op.node,
                                 self.life_of(op.node), request, ("c", client.index)))

    def _end(self, client: SimClient, op: Op, outcome: Outcome) -> None:
        if outcome in (Outcome.FAIL, Outcome.UNKNOWN) and op.indeterminate:
            outcome = Outcome.INDETERMINATE  # an earlier attempt was applied
        elif outcome is Outcome.FAIL and op.timed_out:
            outcome = Outcome.UNKNOWN  # an earlier attempt may have been applied
        op.outcome = outcome
        client.current = None
        client.token += 1
        self.stats[f"ops_{outcome}"] += 1
        if self.trace is not None:
            self.trace(f"END op {op.index}: {outcome}")
        if not self.stopping and not client.scripted:
            think = self.rng.randint(0, self.swarm.think_ms) if self.swarm.think_ms else 0
            self._arm(client, 1 + think)

    def _arm(self, client: SimClient, delay_ms: int) -> None:
        token = client.token
        self.scheduler.after(delay_ms, lambda: self._timer(client, token))

    def _timer(self, client: SimClient, token: int) -> None:
        if token != client.token:
            return
        attempt = client.current
        if attempt is None:
            if not self.stopping and not client.scripted:
                self._new_op(client)
            return
        op = attempt.op
        op.timed_out += 1
        if op.attempts <= op.retries and not self.stopping:
            self._send(client, op)
        else:
            self._end(client, op, Outcome.UNKNOWN)

    # ------------------------------------------------------------------ replies

    def on_reply(self, packet: Packet) -> None:
        client = self.clients[-packet.dst - 1]
        reply = packet.body
        attempt = client.current
        if attempt is None or attempt.tag != reply.id:
            return  # a late reply to an attempt the client gave up on
        op = attempt.op
        if isinstance(reply, Counted):
            if client.session:
                client.observe(reply.states)
            if not op.is_write:
                self._check_read(attempt, reply)
            elif attempt.acked is not None and attempt.acked_ms > self.history.last_wipe_ms:
                target = dict(attempt.acked.target)
                if attempt.acked.meta is not None:
                    target[META] = attempt.acked.meta
                self.history.acknowledged(op.level.needed(len(self.nodes)), op.key, target)
            self._end(client, op, Outcome.OK)
            return
        assert isinstance(reply, Refused)
        if reply.code.applied:
            op.indeterminate = True
        if reply.code.retryable and op.attempts <= op.retries and not self.stopping:
            self._send(client, op)
        else:
            self._end(client, op, Outcome.FAIL)

    def _check_read(self, attempt: Attempt, reply: Counted) -> None:
        """A read holds every write acknowledged before it began at an intersecting
        level (unless a wipe since may have taken a copy away)."""
        if not attempt.required or not reply.states:
            return
        if attempt.wipes_at_send != self.history.wipes:
            return
        self.stats["quorum_reads_checked"] += 1
        op = attempt.op
        problem = check_includes(attempt.required, reply.states,
                                 f"op {op.index}: read={op.level.value} at node {reply.node}"
                                 " missed a write acknowledged before it began",
                                 attempt.replied_wall_ms,
                                 {k: self.history.ledger_floor(k) for k in attempt.required},
                                 self.history.graves.get(reply.node, {}))
        if problem:
            raise SimFailure(problem)
