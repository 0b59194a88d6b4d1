"""Deterministic simulation testing of the real :class:`~zcounter.node.NodeCore`.

Theory of operation
-------------------
One :class:`Simulation` per seed.  It owns a ``random.Random(seed)`` and a simulated
clock in integer milliseconds, and nothing else in it may be random or timed: no wall
clock, no zmq, no disk, no set iteration, no global ``random``.  Replaying a seed
therefore replays the run bit for bit (``bin/sim --seed S --nodes N``).

*Nodes* are real ``NodeCore`` objects driven exactly as :mod:`zcounter.runtime` drives
them: every input that arrives at one instant forms a batch; then ``tick(now)``,
``take_outputs()``, commit ``persist`` to a simulated storage, and only then send the
messages.  A node wakes at ``next_deadline()`` (optionally capped like the runtime's
poll timeout).  Storage holds exactly what was committed; a crash loses the core's
memory, a *torn* crash happens after a commit but sends only a prefix of the batch, a
*mid-batch* crash consumes inputs without committing, and a *wipe* restart starts from
empty storage with a fresh incarnation drawn from the simulation's RNG.

*The network* turns ``ToClient``/``ToPeer``/``Publish`` into ``handle_request``/
``handle_peer_reply``/``handle_broadcast`` at another node (or a client) after a random
delay, so messages reorder; it drops, duplicates, and honours directed link cuts (one
isolated node, two sides, random one-way cuts).  Every message is addressed to the
receiver's *life* (incremented by each restart): like a TCP connection, nothing sent to
a process arrives at its successor.  A sample of messages goes through the real wire
codec (encode, decode, compare) and the decoded copy is delivered.

*Swarm testing*: the fault mix itself (drop/duplicate rates, delays, whether partitions,
crashes, wipes happen and how often, client mix, timeouts, sessions) is drawn from the
seed, so different seeds explore different corners rather than one average.

*Clients* run one logical operation at a time against a random node: increments (random
``by`` and ``wait``, a request id, retried on timeout with the same id to the same node)
and reads (random ``read``).  Some clients are sessions (send ``seen``).  Each logical
operation ends ok, failed (a definite refusal), indeterminate (applied, replication not
confirmed: counted as applied) or unknown (no reply in time).

*Oracle*.  After every batch: a node's slots only grow (a wipe resets it), its value
never exceeds the sum of all increments attempted, ``next_deadline()`` is not in the past
(else the runtime would spin), a ``wait=k`` acknowledgement is backed by k durable
copies, refusals are never applied, a node's reads never go down between its own wipes,
a session never sees a count older than it saw, and a ``read=majority`` started after a
``wait=majority`` acknowledgement includes that write.  After a heal phase (partitions
healed, nodes restarted, no drops, no new operations) every node must converge within
``convergence_bound_ms``; then all states must be equal, every slot value must be the
boundary of an applied increment, every acknowledged increment must be included (unless
every durable copy was wiped), no logical operation may be counted twice, and
``sum(ok) <= final <= sum(ok) + sum(unknown)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import itertools
import math
import random
import sys
import time
import traceback
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import click

from .config import Settings
from .node import NodeCore, Persist, Publish, ToClient, ToPeer
from .wire import (
    Broadcast,
    ClientRequest,
    GetCount,
    Increment,
    Level,
    PeerReply,
    PeerRequest,
    Pull,
    Push,
    Reply,
    Slots,
    decode_broadcast,
    decode_peer_reply,
    decode_reply,
    decode_request,
    encode_broadcast,
    encode_peer_reply,
    encode_peer_request,
    encode_reply,
    encode_request,
)

DEFAULT_STEPS = 1500
#: The cores' clock origin: arbitrary, like ``time.monotonic()``.
CLOCK_ORIGIN_S = 1000.0
LEVEL_NAMES: tuple[Level, ...] = ("local", "majority", "all")
#: Refusals that say nothing was applied (``indeterminate`` is not one of them).
_APPLIED_ERRORS = ("indeterminate",)


class SimFailure(AssertionError):
    """An invariant did not hold; the message says which and where."""


def replay_command(seed: int, nodes: int, steps: int) -> str:
    cmd = f"bin/sim --seed {seed} --nodes {nodes}"
    return cmd if steps == DEFAULT_STEPS else f"{cmd} --steps {steps}"


# --------------------------------------------------------------------------- swarm


@dataclass(frozen=True)
class Swarm:
    """The fault and workload mix of one run, drawn from its seed."""

    clients: int
    p_increment: float
    wait_weights: tuple[int, int, int]
    read_weights: tuple[int, int, int]
    by_max: int
    timeouts_ms: tuple[int, ...]
    max_retries: int
    think_ms: int
    p_session: float
    p_drop: float
    p_dup: float
    base_delay_ms: int
    jitter_ms: int
    p_slow: float
    slow_ms: int
    nemesis_ms: int  # mean gap between fault actions; 0 disables the nemesis
    partitions: bool
    crashes: bool
    max_wipes: int
    p_codec: float
    poll_cap_ms: int | None
    skew: bool
    #: Node clock resolution: 1 ms, or coarse like Windows' 15.6 ms monotonic clock.
    clock_res_ms: int = 1

    @classmethod
    def draw(cls, rng: random.Random) -> Swarm:
        def weights() -> tuple[int, int, int]:
            return (rng.randint(0, 4), rng.randint(0, 4), rng.randint(1, 4))

        faults = rng.random() < 0.9
        return cls(
            clients=rng.randint(1, 6),
            p_increment=rng.choice((0.3, 0.6, 0.8, 1.0)),
            wait_weights=weights(),
            read_weights=weights(),
            by_max=rng.choice((1, 5, 1000, 2**32)),
            timeouts_ms=tuple(sorted(rng.sample((150, 300, 600, 1000, 2000), 2))),
            max_retries=rng.randint(0, 2),
            think_ms=rng.choice((0, 10, 100)),
            p_session=rng.choice((0.0, 0.5, 1.0)),
            p_drop=rng.choice((0.0, 0.01, 0.05, 0.2)) if faults else 0.0,
            p_dup=rng.choice((0.0, 0.01, 0.1)) if faults else 0.0,
            base_delay_ms=rng.randint(1, 5),
            jitter_ms=rng.choice((0, 5, 30)),
            p_slow=rng.choice((0.0, 0.02, 0.1)) if faults else 0.0,
            slow_ms=rng.choice((100, 400)),
            nemesis_ms=rng.choice((150, 400, 1200)) if faults else 0,
            partitions=rng.random() < 0.7,
            crashes=rng.random() < 0.7,
            max_wipes=rng.choice((0, 0, 1, 2)),
            p_codec=rng.choice((0.0, 0.02, 0.2)),
            poll_cap_ms=rng.choice((None, 100)),
            skew=rng.random() < 0.5,
            clock_res_ms=rng.choice((1, 1, 1, 16, 100)),
        )

    @classmethod
    def calm(cls, **changes: object) -> Swarm:
        """No random faults at all; for scripted scenarios (pass ``changes`` to vary)."""
        base = cls(clients=3, p_increment=0.7, wait_weights=(1, 1, 1), read_weights=(1, 1, 1),
                   by_max=5, timeouts_ms=(300, 1000), max_retries=1, think_ms=10, p_session=0.5,
                   p_drop=0.0, p_dup=0.0, base_delay_ms=2, jitter_ms=5, p_slow=0.0,
                   slow_ms=100, nemesis_ms=0, partitions=False, crashes=False, max_wipes=0,
                   p_codec=0.1, poll_cap_ms=None, skew=False)
        return dataclasses.replace(base, **changes)  # type: ignore[arg-type]

    def max_delay_ms(self) -> int:
        return self.base_delay_ms + self.jitter_ms + (self.slow_ms if self.p_slow else 0)


# --------------------------------------------------------------------------- events

ClientId = Hashable


@dataclass(slots=True)
class ReqIn:
    node: int
    life: int
    src: int | None
    client: ClientId
    request: ClientRequest | PeerRequest


@dataclass(slots=True)
class BcastIn:
    node: int
    life: int
    src: int
    message: Broadcast


@dataclass(slots=True)
class PReplyIn:
    node: int
    life: int
    src: int
    reply: PeerReply


@dataclass(slots=True)
class ClientIn:
    client: int
    src: int
    reply: Reply


@dataclass(slots=True)
class Wake:
    node: int
    life: int


@dataclass(slots=True)
class ClientTimer:
    client: int
    token: int


@dataclass(slots=True)
class NemesisTick:
    pass


@dataclass(slots=True)
class Restart:
    node: int
    token: int
    wipe: bool


@dataclass(slots=True)
class Scripted:
    action: Callable[[Simulation], None]


NodeInput = ReqIn | BcastIn | PReplyIn
Payload = (ReqIn | BcastIn | PReplyIn | ClientIn | Wake | ClientTimer | NemesisTick | Restart
           | Scripted)
Event = tuple[int, int, Payload]


# --------------------------------------------------------------------------- nodes


@dataclass
class SimStorage:
    """What a node's SQLite database would hold: exactly the committed batches."""

    incarnation: str
    slots: dict[str, int] = field(default_factory=dict)
    rids: dict[str, tuple[str, int]] = field(default_factory=dict)  # insertion = rowid order
    #: True until the first start that opens it, like Storage.created.
    fresh: bool = True

    def commit(self, persist: Persist) -> None:
        for slot, value in persist.slots.items():
            if value > self.slots.get(slot, 0):
                self.slots[slot] = value
        for rid, slot, value in persist.rids:
            self.rids.setdefault(rid, (slot, value))
        for rid in persist.forget:
            self.rids.pop(rid, None)


@dataclass
class SimNode:
    node_id: int
    storage: SimStorage
    clock_offset_s: float
    core: NodeCore | None = None
    life: int = 0
    wake_at: int = -1
    pending: list[NodeInput] = field(default_factory=list)
    #: Slot values seen after the last batch (they may only grow until a wipe).
    last_slots: dict[str, int] = field(default_factory=dict)
    #: Highest count this node answered a read with since its last wipe.
    read_floor: int = 0
    #: Highest value of each slot ever committed here, wipes included: durability witness.
    durable_high: dict[str, int] = field(default_factory=dict)
    crash_token: int = 0
    restart_wipe: bool = False
    wipes_ms: list[int] = field(default_factory=list)

    @property
    def up(self) -> bool:
        return self.core is not None


# --------------------------------------------------------------------------- clients


@dataclass(slots=True)
class App:
    """An increment applied at ``node``: it raised ``slot`` from ``value - by`` to ``value``."""

    rid: str
    node: int
    slot: str
    value: int
    by: int
    at_ms: int


@dataclass
class Op:
    """One logical client operation (all its attempts share ``rid`` and ``node``)."""

    index: int
    client: int
    node: int
    request: Increment | GetCount
    retries: int
    outcome: str = "pending"  # ok | indeterminate | fail | unknown
    attempts: int = 0
    timed_out: int = 0

    @property
    def is_increment(self) -> bool:
        return isinstance(self.request, Increment)


@dataclass(slots=True)
class Attempt:
    op: Op
    tag: int
    sent_ms: int
    #: Slot values a quorum read must include: majority-acknowledged writes before it.
    required: Slots | None
    wipes_at_send: int
    node_life: int
    #: The application an ok reply to this attempt acknowledged (set when it is sent).
    acked: App | None = None


@dataclass
class SimClient:
    index: int
    session: bool
    seen: dict[str, int] = field(default_factory=dict)
    current: Attempt | None = None
    token: int = 0
    last_session_read: int = 0


# --------------------------------------------------------------------------- results


@dataclass
class SimResult:
    seed: int
    nodes: int
    steps: int
    swarm: Swarm
    ok: bool
    failure: str | None
    sim_ms: int
    events: int
    ops: int
    outcomes: dict[str, int]
    final_count: int | None
    converge_ms: int | None
    fingerprint: str
    stats: dict[str, int]

    @property
    def replay(self) -> str:
        return replay_command(self.seed, self.nodes, self.steps)


# --------------------------------------------------------------------------- the simulator


class Simulation:
    """One seeded run.  ``run()`` never raises for a protocol failure: see ``SimResult``."""

    def __init__(self, seed: int, nodes: int = 3, steps: int = DEFAULT_STEPS,
                 swarm: Swarm | None = None, settings: Settings | None = None,
                 trace: Callable[[str], None] | None = None,
                 script: list[tuple[int, Callable[[Simulation], None]]] | None = None) -> None:
        """``script``: (simulated ms, action) pairs run at those times, for focused tests;
        the actions use the public fault methods (``isolate``, ``crash``, ...)."""
        if nodes < 1:
            raise ValueError("need at least one node")
        self.seed = seed
        self.n = nodes
        self.steps = steps
        self.rng = random.Random(seed)
        self.swarm = swarm if swarm is not None else Swarm.draw(self.rng)
        self.settings = settings or Settings()
        self.trace = trace
        self.script = script or []
        self.cluster = list(range(1, nodes + 1))
        self.now_ms = 0
        self._seq = 0
        self._heap: list[Event] = []
        self.nodes: dict[int, SimNode] = {}
        for node_id in self.cluster:
            offset = self.rng.uniform(-500.0, 500.0) if self.swarm.skew else 0.0
            self.nodes[node_id] = SimNode(node_id, SimStorage(self._incarnation()),
                                          CLOCK_ORIGIN_S + offset)
        self.clients = [SimClient(i, self.rng.random() < self.swarm.p_session)
                        for i in range(self.swarm.clients)]
        self.cuts: set[tuple[int, int]] = set()
        self.healing = False
        self.heal_ms = 0
        self.ops: list[Op] = []
        self.attempts: dict[int, Attempt] = {}
        self._next_tag = 1
        self.apps: dict[str, list[App]] = {}
        self.boundaries: dict[str, set[int]] = {}
        #: Per slot: values above this were lost with every durable copy (wipes).
        self.loss_floor: dict[str, int] = {}
        self.wipes = 0
        self.last_wipe_ms = -1
        #: Per slot, the highest value of a wait>=majority write acknowledged to a client
        #: (applied after the last wipe): later quorum reads must include it.
        self.required: dict[str, int] = {}
        self.attempted_total = 0
        self.events = 0
        self.last_change_ms = 0
        self.stats: dict[str, int] = {
            "dropped": 0, "duplicated": 0, "cut": 0, "stale_life": 0, "codec_roundtrips": 0,
            "crashes": 0, "torn_crashes": 0, "midbatch_crashes": 0, "restarts": 0,
            "wipes": 0, "partitions": 0, "heals": 0, "excused_by_wipe": 0,
            "reapplied_after_wipe": 0, "quorum_reads_checked": 0, "session_checks": 0,
            "batches": 0,
        }

    # ------------------------------------------------------------------ plumbing

    def _incarnation(self) -> str:
        return f"{self.rng.getrandbits(48):012x}"

    def _log(self, text: str) -> None:
        if self.trace is not None:
            self.trace(f"{self.now_ms:>8}ms {text}")

    def _fail(self, text: str) -> SimFailure:
        return SimFailure(f"t={self.now_ms}ms: {text}")

    def _push(self, at_ms: int, payload: Payload) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at_ms, self._seq, payload))

    def _delay(self) -> int:
        s = self.swarm
        delay = s.base_delay_ms + (self.rng.randint(0, s.jitter_ms) if s.jitter_ms else 0)
        if s.p_slow and self.rng.random() < s.p_slow:
            delay += self.rng.randint(1, s.slow_ms)
        return delay

    def _transmit(self, src: int | None, dst: int | None, payload: Payload) -> None:
        """Put one message on the wire from node ``src`` to node ``dst`` (None: a client)."""
        if src is not None and dst is not None and (src, dst) in self.cuts:
            self.stats["cut"] += 1
            return
        s = self.swarm
        if not self.healing and s.p_drop and self.rng.random() < s.p_drop:
            self.stats["dropped"] += 1
            return
        self._push(self.now_ms + self._delay(), payload)
        # A client's request travels on its own TCP connection, which never duplicates;
        # its retries are modelled by the client.  (A duplicated request could be refused
        # "behind" in one copy and applied in the other: refusals hold per delivery.)
        if s.p_dup and src is not None and self.rng.random() < s.p_dup:
            self.stats["duplicated"] += 1
            self._push(self.now_ms + self._delay(), payload)

    def _core_now(self, node: SimNode) -> float:
        res = self.swarm.clock_res_ms
        return node.clock_offset_s + (self.now_ms - self.now_ms % res) / 1000.0

    # ------------------------------------------------------------------ codec sampling

    def _codec(self, payload: Payload) -> Payload:
        """Round-trip a message through the real wire codec; deliver the decoded copy."""
        if not self.swarm.p_codec or self.rng.random() >= self.swarm.p_codec:
            return payload
        self.stats["codec_roundtrips"] += 1
        original: object
        decoded: object
        new: Payload
        if isinstance(payload, ReqIn):
            req = payload.request
            data = (encode_peer_request(req) if isinstance(req, (Pull, Push))
                    else encode_request(req))
            original, request = req, decode_request([data])
            decoded = request
            new = ReqIn(payload.node, payload.life, payload.src, payload.client, request)
        elif isinstance(payload, BcastIn):
            original = payload.message
            message = decode_broadcast(encode_broadcast(payload.message))
            decoded = message
            new = BcastIn(payload.node, payload.life, payload.src, message)
        elif isinstance(payload, PReplyIn):
            original = payload.reply
            peer_reply = decode_peer_reply(encode_peer_reply(payload.reply))
            decoded = peer_reply
            new = PReplyIn(payload.node, payload.life, payload.src, peer_reply)
        elif isinstance(payload, ClientIn):
            original, reply = payload.reply, decode_reply(encode_reply(payload.reply))
            decoded = reply
            new = ClientIn(payload.client, payload.src, reply)
        else:
            return payload
        if decoded != original:
            raise self._fail(f"wire codec changed a message: {original!r} -> {decoded!r}")
        return new

    # ------------------------------------------------------------------ node lifecycle

    def _start(self, node: SimNode) -> None:
        st = node.storage
        node.life += 1
        node.core = NodeCore(node.node_id, self.cluster, st.incarnation, self.settings,
                             self._core_now(node), slots=dict(st.slots),
                             rids=[(r, s, v) for r, (s, v) in st.rids.items()],
                             fresh=st.fresh)
        st.fresh = False
        node.pending = []
        restored = node.core.counter.slots()
        for slot, value in node.last_slots.items():
            if restored.get(slot, 0) < value:
                raise self._fail(f"node {node.node_id} restarted with {slot}={restored.get(slot)}"
                                 f" but had committed {value}")
        node.last_slots = restored
        # The runtime ticks right after building the core.
        self._flush(node)

    def _crash(self, node: SimNode, mode: str) -> None:
        core = node.core
        assert core is not None
        if mode == "torn":
            self.stats["torn_crashes"] += 1
            self._flush(node, torn=True)
        elif mode == "midbatch":
            # The batch's inputs were consumed but nothing was committed or sent.
            self.stats["midbatch_crashes"] += 1
            for item in node.pending:
                self._dispatch(core, item, self._core_now(node))
        self.stats["crashes"] += 1
        self._log(f"CRASH node {node.node_id} ({mode})")
        node.core = None
        node.pending = []
        node.crash_token += 1

    def _wipe(self, node: SimNode) -> None:
        """Replace the node's storage with an empty one (a new incarnation)."""
        self.stats["wipes"] += 1
        self.wipes += 1
        node.wipes_ms.append(self.now_ms)
        self.last_wipe_ms = self.now_ms
        self.required = {}
        for slot, value in node.storage.slots.items():
            others = max((o.storage.slots.get(slot, 0) for o in self.nodes.values()
                          if o is not node), default=0)
            if value > others:
                self.loss_floor[slot] = min(self.loss_floor.get(slot, others), others)
        node.storage = SimStorage(self._incarnation())
        node.last_slots = {}
        node.read_floor = 0
        self._log(f"WIPE node {node.node_id}: new incarnation {node.storage.incarnation}")

    # ------------------------------------------------------------------ node batches

    def _dispatch(self, core: NodeCore, item: NodeInput, now: float) -> None:
        if isinstance(item, ReqIn):
            core.handle_request(item.client, item.request, now)
        elif isinstance(item, BcastIn):
            core.handle_broadcast(item.message, now)
        else:
            core.handle_peer_reply(item.reply, now)

    def _flush(self, node: SimNode, torn: bool = False) -> None:
        """One runtime poll cycle: inputs, tick, take outputs, commit, then send."""
        core = node.core
        assert core is not None
        now = self._core_now(node)
        self.stats["batches"] += 1
        pending, node.pending = node.pending, []
        for item in pending:
            self._dispatch(core, item, now)
        core.tick(now)
        out = core.take_outputs()
        if out.persist:
            node.storage.commit(out.persist)
            for slot, value in out.persist.slots.items():
                if value > node.durable_high.get(slot, 0):
                    node.durable_high[slot] = value
            for rid, slot, value in out.persist.rids:
                if slot == core.slot:
                    self._record_app(node, rid, slot, value)
        self._check_node(node, core, now)
        messages = out.messages
        if torn:
            messages = messages[:self.rng.randint(0, len(messages))]
        for message in messages:
            self._emit(node, core, message)
        if not torn:
            deadline = core.next_deadline()
            wake = math.ceil(round((deadline - node.clock_offset_s) * 1000.0, 6))
            if self.swarm.poll_cap_ms is not None:
                wake = min(wake, self.now_ms + self.swarm.poll_cap_ms)
            wake = max(wake, self.now_ms + 1)
            if wake != node.wake_at:
                node.wake_at = wake
                self._push(wake, Wake(node.node_id, node.life))

    def _record_app(self, node: SimNode, rid: str, slot: str, value: int) -> None:
        op = self.ops[int(rid.rsplit("-", 1)[1])]
        by = op.request.by if isinstance(op.request, Increment) else 0
        apps = self.apps.setdefault(rid, [])
        if any(a.slot == slot for a in apps):
            raise self._fail(f"request id {rid} applied twice in slot {slot}")
        apps.append(App(rid, node.node_id, slot, value, by, self.now_ms))
        self.boundaries.setdefault(slot, set()).add(value)
        self._log(f"APPLY {rid} at node {node.node_id}: {slot} -> {value} (+{by})")

    def _check_node(self, node: SimNode, core: NodeCore, now: float) -> None:
        slots = core.counter.slots()
        for slot, value in node.last_slots.items():
            if slots.get(slot, 0) < value:
                raise self._fail(f"node {node.node_id}: slot {slot} went down from {value} to "
                                 f"{slots.get(slot, 0)}")
        if slots != node.last_slots:
            node.last_slots = slots
            if self.healing:
                self.last_change_ms = self.now_ms
        if core.value > self.attempted_total:
            raise self._fail(f"node {node.node_id} counts {core.value}, more than the "
                             f"{self.attempted_total} ever attempted")
        # The runtime polls with timeout max(0, deadline - now): a deadline in the past
        # right after tick() would make it spin at 100% CPU.
        if core.next_deadline() < now - 1e-6:
            raise self._fail(f"node {node.node_id}: next_deadline() is "
                             f"{now - core.next_deadline():.3f}s in the past after tick()"
                             " (the runtime would busy-loop)")

    def _emit(self, node: SimNode, core: NodeCore, message: ToClient | ToPeer | Publish) -> None:
        src = node.node_id
        if isinstance(message, ToClient):
            cid = message.client
            assert isinstance(cid, tuple)
            if cid[0] == "c":
                reply = message.reply
                assert isinstance(reply, Reply)
                self._check_reply_emitted(node, core, reply)
                self._transmit(src, None, self._codec(ClientIn(cid[1], src, reply)))
            else:
                peer_reply = message.reply
                assert isinstance(peer_reply, PeerReply)
                _, peer, life = cid
                self._transmit(src, peer, self._codec(PReplyIn(peer, life, src, peer_reply)))
        elif isinstance(message, ToPeer):
            dst = self.nodes[message.peer]
            self._transmit(src, dst.node_id, self._codec(
                ReqIn(dst.node_id, dst.life, src, ("p", src, node.life), message.request)))
        else:
            for dst in self.nodes.values():
                if dst is not node:
                    self._transmit(src, dst.node_id,
                                   self._codec(BcastIn(dst.node_id, dst.life, src,
                                                       message.message)))

    def _app_at(self, rid: str | None, slot: str) -> App | None:
        if rid is None:
            return None
        for app in self.apps.get(rid, ()):
            if app.slot == slot:
                return app
        return None

    def _check_reply_emitted(self, node: SimNode, core: NodeCore, reply: Reply) -> None:
        """Checks that need the node's state at the moment it answers a client."""
        attempt = self.attempts.get(reply.id) if isinstance(reply.id, int) else None
        if attempt is None:
            raise self._fail(f"node {node.node_id} answered an unknown tag {reply.id!r}")
        req = attempt.op.request
        where = f"node {node.node_id}, op {attempt.op.index}"
        if isinstance(req, Increment):
            app = self._app_at(req.rid, core.slot)
            if app is None and req.rid is not None and (reply.ok or reply.error in _APPLIED_ERRORS):
                # A duplicate of an application at another node (its id came by replication).
                app = next(iter(self.apps.get(req.rid, ())), None)
            if reply.ok or reply.error in _APPLIED_ERRORS:
                if app is None:
                    raise self._fail(f"{where}: increment {req.rid} acknowledged "
                                     f"({reply.error or 'ok'}) but never applied here")
            elif app is not None:
                raise self._fail(f"{where}: increment {req.rid} refused ({reply.error}) "
                                 f"although applied at {app.slot}={app.value}")
            if reply.ok:
                assert app is not None and reply.slots is not None
                if reply.slots.get(app.slot, 0) < app.value:
                    raise self._fail(f"{where}: ok reply does not include its own increment")
                attempt.acked = app
                needed = core.needed(req.wait)
                holders = sum(1 for n in self.nodes.values()
                              if n.durable_high.get(app.slot, 0) >= app.value)
                if holders < needed:
                    raise self._fail(f"{where}: wait={req.wait} acknowledged with only "
                                     f"{holders} durable copies of {app.slot}={app.value}")
        elif reply.ok:
            assert reply.count is not None
            if reply.count < node.read_floor:
                raise self._fail(f"{where}: read {reply.count} after answering "
                                 f"{node.read_floor} (no wipe in between)")
            node.read_floor = reply.count
            if reply.count > self.attempted_total:
                raise self._fail(f"{where}: read {reply.count} > attempted total")
        if reply.ok and req.seen and reply.slots is not None:
            self.stats["session_checks"] += 1
            for slot, value in req.seen.items():
                if reply.slots.get(slot, 0) < value:
                    raise self._fail(f"{where}: answered older than the session had seen "
                                     f"({slot}: {reply.slots.get(slot, 0)} < {value})")

    # ------------------------------------------------------------------ clients

    def _start_op(self, client: SimClient) -> None:
        s, rng = self.swarm, self.rng
        index = len(self.ops)
        node = rng.choice(self.cluster)
        timeout = rng.choice(s.timeouts_ms)
        seen = dict(client.seen) if client.session else {}
        request: Increment | GetCount
        if rng.random() < s.p_increment:
            level = rng.choices(LEVEL_NAMES, s.wait_weights)[0]
            request = Increment(0, rng.randint(1, s.by_max), f"c{client.index}-{index}",
                                level, timeout, seen)
        else:
            level = rng.choices(LEVEL_NAMES, s.read_weights)[0]
            request = GetCount(0, level, timeout, seen)
        op = Op(index, client.index, node, request, rng.randint(0, s.max_retries))
        self.ops.append(op)
        self._send_attempt(client, op)

    def _send_attempt(self, client: SimClient, op: Op) -> None:
        tag = self._next_tag
        self._next_tag += 1
        base = op.request
        request: Increment | GetCount
        if isinstance(base, Increment):
            request = Increment(tag, base.by, base.rid, base.wait, base.timeout_ms, base.seen)
            self.attempted_total += base.by
        else:
            request = GetCount(tag, base.read, base.timeout_ms, base.seen)
        required = (dict(self.required) if isinstance(base, GetCount)
                    and base.read != "local" else None)
        dst = self.nodes[op.node]
        attempt = Attempt(op, tag, self.now_ms, required, self.wipes, dst.life)
        self.attempts[tag] = attempt
        op.attempts += 1
        client.current = attempt
        client.token += 1
        self._push(self.now_ms + base.timeout_ms, ClientTimer(client.index, client.token))
        self._log(f"SEND op {op.index} try {op.attempts} -> node {op.node}: {request}")
        self._transmit(None, dst.node_id,
                       self._codec(ReqIn(dst.node_id, dst.life, None, ("c", client.index),
                                         request)))

    def _end_op(self, client: SimClient, op: Op, outcome: str) -> None:
        if outcome == "fail" and op.timed_out:
            # An earlier attempt might have been applied somewhere we cannot see.
            outcome = "unknown"
        op.outcome = outcome
        client.current = None
        client.token += 1
        self._log(f"END op {op.index}: {outcome}")
        if not self.healing:
            think = self.rng.randint(0, self.swarm.think_ms) if self.swarm.think_ms else 0
            self._push(self.now_ms + 1 + think, ClientTimer(client.index, client.token))

    def _on_client_reply(self, event: ClientIn) -> None:
        client = self.clients[event.client]
        reply = event.reply
        attempt = client.current
        if attempt is None or attempt.tag != reply.id:
            return  # a late reply to an attempt the client gave up on
        op = attempt.op
        req = op.request
        if reply.ok:
            assert reply.slots is not None and reply.count is not None
            if client.session:
                for slot, value in reply.slots.items():
                    if value > client.seen.get(slot, 0):
                        client.seen[slot] = value
            if isinstance(req, GetCount):
                if client.session:
                    if reply.count < client.last_session_read:
                        raise self._fail(f"session {client.index} read {reply.count} after "
                                         f"{client.last_session_read}")
                    client.last_session_read = reply.count
                if attempt.required is not None and attempt.wipes_at_send == self.wipes:
                    self.stats["quorum_reads_checked"] += 1
                    for slot, value in attempt.required.items():
                        if reply.slots.get(slot, 0) < value:
                            raise self._fail(
                                f"op {op.index}: read={req.read} at node {event.src} returned "
                                f"{slot}={reply.slots.get(slot, 0)}, missing a write acknowledged"
                                f" with wait>=majority before the read began ({value})")
            elif req.wait != "local":
                app = attempt.acked
                if (app is not None and app.at_ms > self.last_wipe_ms
                        and app.value > self.required.get(app.slot, 0)):
                    self.required[app.slot] = app.value
            self._end_op(client, op, "ok")
        elif reply.error in _APPLIED_ERRORS:
            self._end_op(client, op, "indeterminate")
        else:
            self._end_op(client, op, "fail")

    def _on_client_timer(self, event: ClientTimer) -> None:
        client = self.clients[event.client]
        if event.token != client.token:
            return
        attempt = client.current
        if attempt is None:
            if not self.healing:
                self._start_op(client)
            return
        op = attempt.op
        op.timed_out += 1
        if op.attempts <= op.retries and not self.healing:
            self._send_attempt(client, op)
        else:
            self._end_op(client, op, "unknown")

    # ------------------------------------------------------------------ nemesis

    def _nemesis(self) -> None:
        s, rng = self.swarm, self.rng
        if self.healing:
            return
        actions: list[str] = []
        if s.partitions and self.n > 1:
            actions += ["isolate", "split", "oneway", "heal", "heal"]
        if s.crashes:
            actions += ["crash", "crash"]
        if actions:
            self._nemesis_action(rng.choice(actions))
        self._push(self.now_ms + 1 + int(rng.expovariate(1.0 / s.nemesis_ms)), NemesisTick())

    def _nemesis_action(self, action: str) -> None:
        rng = self.rng
        if action == "heal":
            self.heal_partitions()
        elif action == "isolate":
            self.isolate(rng.choice(self.cluster))
        elif action == "split":
            order = self.cluster[:]
            rng.shuffle(order)
            self.split(order[:rng.randint(1, self.n - 1)])
        elif action == "oneway":
            pairs = [(a, b) for a in self.cluster for b in self.cluster if a != b]
            self.cut(rng.sample(pairs, rng.randint(1, len(pairs) - 1)))
        elif action == "crash":
            up = [n for n in self.nodes.values() if n.up]
            if not up:
                return
            node = rng.choice(up)
            mode = rng.choice(("clean", "clean", "torn", "midbatch"))
            wipe = self.wipes < self.swarm.max_wipes and rng.random() < 0.3
            downtime = rng.choice((50, 300, 1500, 4000))
            self.crash(node.node_id, mode, restart_after_ms=rng.randint(1, downtime), wipe=wipe)

    # ------------------------------------------------------------------ faults (public)

    def heal_partitions(self) -> None:
        if self.cuts:
            self.stats["heals"] += 1
            self._log("HEAL partitions")
        self.cuts = set()

    def cut(self, pairs: list[tuple[int, int]]) -> None:
        """Replace the partition with these one-way cuts: (a, b) loses a's messages to b."""
        self.cuts = set(pairs)
        self.stats["partitions"] += 1
        self._log(f"PARTITION cuts {sorted(self.cuts)}")

    def isolate(self, node_id: int) -> None:
        self.cut([(a, b) for a in self.cluster for b in self.cluster
                  if a != b and node_id in (a, b)])

    def split(self, side: list[int]) -> None:
        inside = set(side)
        self.cut([(a, b) for a in self.cluster for b in self.cluster
                  if (a in inside) != (b in inside)])

    def crash(self, node_id: int, mode: str = "clean", restart_after_ms: int | None = None,
              wipe: bool = False) -> None:
        """Crash a node (``clean``, ``torn`` or ``midbatch``); optionally restart it later,
        with its storage or (``wipe``) without."""
        node = self.nodes[node_id]
        if not node.up:
            return
        self._crash(node, mode)
        node.restart_wipe = wipe
        if restart_after_ms is not None:
            self._push(self.now_ms + restart_after_ms,
                       Restart(node.node_id, node.crash_token, wipe))

    def restart(self, node_id: int, wipe: bool = False) -> None:
        self._restart(self.nodes[node_id], wipe)

    def _restart(self, node: SimNode, wipe: bool) -> None:
        if node.up:
            return
        if wipe:
            self._wipe(node)
        self.stats["restarts"] += 1
        self._log(f"RESTART node {node.node_id}{' (wiped)' if wipe else ''}")
        self._start(node)

    # ------------------------------------------------------------------ the loop

    def convergence_bound_ms(self) -> int:
        """How long after the heal the cluster has to converge.

        Operations still in flight at the heal may apply until their timeouts run out;
        then a digest mismatch is seen within one heartbeat and repaired by a pull within a
        snapshot interval, each hop taking at most the maximum network delay.  Three
        snapshot intervals of slack cover a repair that needs two rounds (a node learns a
        slot from one peer, then another peer learns it from that node).
        """
        st = self.settings
        return (max(self.swarm.timeouts_ms) + 4 * self.swarm.max_delay_ms()
                + int(1000 * (st.heartbeat_interval_s + 3 * st.snapshot_interval_s)))

    def _heal(self) -> None:
        self.healing = True
        self.heal_ms = self.now_ms
        self.last_change_ms = self.now_ms
        self.cuts = set()
        self._log("HEAL PHASE: partitions healed, drops off, crashed nodes restarted")
        for node in self.nodes.values():
            if not node.up:
                self._restart(node, node.restart_wipe)

    def _converged(self) -> bool:
        cores = [n.core for n in self.nodes.values()]
        if any(c is None for c in cores):
            return False
        first = cores[0]
        assert first is not None
        d = first.counter.digest()
        if any(c is not None and c.counter.digest() != d for c in cores[1:]):
            return False
        if any(c.current is not None for c in self.clients):
            return False
        # Nothing still in flight may carry state beyond what everybody holds.
        for _, _, payload in self._heap:
            slots: Slots | None = None
            if isinstance(payload, BcastIn):
                slots = payload.message.slots
            elif isinstance(payload, PReplyIn):
                slots = payload.reply.slots
            elif isinstance(payload, ReqIn) and not isinstance(payload.request,
                                                               (Increment, GetCount)):
                slots = getattr(payload.request, "slots", None)
            if slots and not first.counter.dominates(slots):
                return False
        return True

    def _step(self) -> None:
        """Process every event of the next instant, then one batch per touched node."""
        t = self._heap[0][0]
        self.now_ms = t
        touched: dict[int, SimNode] = {}
        while self._heap and self._heap[0][0] == t:
            _, _, ev = heapq.heappop(self._heap)
            self.events += 1
            if isinstance(ev, (ReqIn, BcastIn, PReplyIn)):
                node = self.nodes[ev.node]
                if node.core is None or node.life != ev.life:
                    self.stats["stale_life"] += 1
                    continue
                if ev.src is not None and (ev.src, ev.node) in self.cuts:
                    self.stats["cut"] += 1
                    continue
                node.pending.append(ev)
                touched[ev.node] = node
            elif isinstance(ev, Wake):
                node = self.nodes[ev.node]
                if node.core is not None and node.life == ev.life and node.wake_at == t:
                    touched[ev.node] = node
            elif isinstance(ev, ClientIn):
                self._on_client_reply(ev)
            elif isinstance(ev, ClientTimer):
                self._on_client_timer(ev)
            elif isinstance(ev, NemesisTick):
                self._nemesis()
            elif isinstance(ev, Scripted):
                if not self.healing:
                    ev.action(self)
            elif isinstance(ev, Restart):
                node = self.nodes[ev.node]
                if node.crash_token == ev.token:
                    self._restart(node, ev.wipe)
        for node_id in sorted(touched):
            node = touched[node_id]
            if node.core is not None:
                self._flush(node)

    def run(self) -> SimResult:
        failure: str | None = None
        converge_ms: int | None = None
        try:
            self._log(f"seed {self.seed}, {self.n} nodes, swarm {self.swarm}")
            for node in self.nodes.values():
                self._start(node)
            for client in self.clients:
                self._push(self.rng.randint(0, 100), ClientTimer(client.index, client.token))
            if self.swarm.nemesis_ms:
                self._push(self.rng.randint(0, self.swarm.nemesis_ms), NemesisTick())
            for at_ms, action in self.script:
                self._push(at_ms, Scripted(action))
            for _ in range(self.steps):
                self._step()
            self._heal()
            deadline = self.heal_ms + self.convergence_bound_ms()
            while True:
                self._step()
                if self._converged():
                    converge_ms = self.last_change_ms - self.heal_ms
                    break
                if self.now_ms > deadline:
                    raise self._fail(
                        f"no convergence within {self.convergence_bound_ms()}ms of the heal: "
                        + "; ".join(f"node {n.node_id}: {n.last_slots}"
                                    for n in self.nodes.values()))
            self._final_oracle()
        except SimFailure as exc:
            failure = str(exc)
        except Exception:  # a crash of the core under test is a finding too
            failure = f"t={self.now_ms}ms: exception\n{traceback.format_exc()}"
        return self._result(failure, converge_ms)

    # ------------------------------------------------------------------ final oracle

    def _final_oracle(self) -> None:
        cores = [n.core for n in self.nodes.values()]
        first = cores[0]
        assert first is not None
        final = first.counter.slots()
        for core in cores[1:]:
            assert core is not None
            if core.counter.slots() != final:
                raise self._fail("converged digests but different states")
        # Each slot holds the running total of its own increments, so its final value
        # must be exactly where one of them left it: no partial or invented increments.
        for slot, value in final.items():
            if value and value not in self.boundaries.get(slot, ()):
                raise self._fail(f"final {slot}={value} is not the result of any increment")
        lower = upper = 0
        for op in self.ops:
            req = op.request
            if not isinstance(req, Increment):
                continue
            assert req.rid is not None
            apps = self.apps.get(req.rid, [])
            included = [a for a in apps if final.get(a.slot, 0) >= a.value]
            extra = len(included) - 1
            if extra > 0:
                # Known limitation: the request-id window lives on the node's disk, and a
                # pull reply carries no ids, so a retry that reaches a wiped node applies
                # again in its new incarnation.  Excuse exactly that, nothing else.
                if not all(a.node == included[0].node for a in included) or not all(
                        any(p.at_ms < w < a.at_ms for w in self.nodes[a.node].wipes_ms)
                        for p, a in itertools.pairwise(included)):
                    raise self._fail(f"op {op.index} ({req.rid}) counted {len(included)} "
                                     f"times: {included}")
                self.stats["reapplied_after_wipe"] += extra
            if op.outcome == "fail" and apps:
                raise self._fail(f"op {op.index} refused but applied: {apps}")
            if extra > 0:
                upper += extra * req.by
            if op.outcome in ("ok", "indeterminate"):
                upper += req.by
                excused = bool(apps) and all(a.value > self.loss_floor.get(a.slot, math.inf)
                                             for a in apps)
                if excused:
                    self.stats["excused_by_wipe"] += 1
                else:
                    lower += req.by
                    if not included:
                        raise self._fail(f"op {op.index} ({req.rid}, {op.outcome}) is missing "
                                         f"from the final state; applied as {apps}")
            elif op.outcome == "unknown":
                upper += req.by
        total = sum(final.values())
        if not lower <= total <= upper:
            raise self._fail(f"final count {total} outside [sum(ok)={lower}, "
                             f"sum(ok)+sum(unknown)={upper}]")

    def _result(self, failure: str | None, converge_ms: int | None) -> SimResult:
        outcomes: dict[str, int] = {}
        for op in self.ops:
            outcomes[op.outcome] = outcomes.get(op.outcome, 0) + 1
        first = self.nodes[1].core
        final = first.counter.value if first is not None and failure is None else None
        h = hashlib.blake2b(digest_size=8)
        h.update(repr((failure, self.now_ms, self.events, sorted(outcomes.items()),
                       [sorted(n.storage.slots.items()) for n in self.nodes.values()],
                       self.rng.getrandbits(64))).encode())
        return SimResult(self.seed, self.n, self.steps, self.swarm, failure is None, failure,
                         self.now_ms, self.events, len(self.ops), outcomes, final, converge_ms,
                         h.hexdigest(), dict(self.stats))


def run_seed(seed: int, nodes: int = 3, steps: int = DEFAULT_STEPS,
             trace: Callable[[str], None] | None = None) -> SimResult:
    return Simulation(seed, nodes, steps, trace=trace).run()


# --------------------------------------------------------------------------- CLI


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--seeds", "count", type=int, default=100, show_default=True,
              help="How many consecutive seeds to run.")
@click.option("--seed", "single", type=int, default=None,
              help="Run exactly this seed (replay a failure).")
@click.option("--start", type=int, default=0, show_default=True, help="First seed.")
@click.option("--nodes", type=int, default=3, show_default=True, help="Cluster size.")
@click.option("--steps", type=int, default=DEFAULT_STEPS, show_default=True,
              help="Simulated instants before the heal phase.")
@click.option("-v", "--verbose", is_flag=True, help="Print the swarm and every event.")
def main(count: int, single: int | None, start: int, nodes: int, steps: int,
         verbose: bool) -> None:
    """Deterministic simulation of a zcounter cluster: real node cores, simulated network,
    disks, crashes and clients.  Exits 1 if any seed breaks an invariant."""
    seeds = [single] if single is not None else list(range(start, start + count))

    def trace(line: str) -> None:
        click.echo(line)

    failures: list[SimResult] = []
    ops = sim_ms = 0
    converge_max = 0
    began = time.perf_counter()  # throughput reporting only; the simulation never reads it
    for seed in seeds:
        result = run_seed(seed, nodes, steps, trace if verbose else None)
        ops += result.ops
        sim_ms += result.sim_ms
        converge_max = max(converge_max, result.converge_ms or 0)
        if verbose or single is not None:
            click.echo(f"seed {seed}: {'ok' if result.ok else 'FAIL'}, {result.ops} ops "
                       f"{result.outcomes}, final {result.final_count}, converged "
                       f"{result.converge_ms}ms after heal, fingerprint {result.fingerprint}")
            click.echo(f"  swarm: {result.swarm}")
            click.echo(f"  stats: {result.stats}")
        if not result.ok:
            failures.append(result)
            click.echo(f"FAIL seed {seed} ({nodes} nodes): {result.failure}", err=True)
            click.echo(f"  replay: {result.replay}", err=True)
    elapsed = max(time.perf_counter() - began, 1e-9)
    click.echo(f"{len(seeds)} seeds x {nodes} nodes, {len(failures)} failed: "
               f"{len(seeds) / elapsed:.1f} seeds/s, {ops / elapsed:.0f} ops/s "
               f"({ops} client ops, {sim_ms / 1000:.0f} simulated s, "
               f"slowest convergence {converge_max}ms) in {elapsed:.1f}s")
    if failures:
        click.echo("replay with: " + ", ".join(f.replay for f in failures[:5]), err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
