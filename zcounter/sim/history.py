"""The ledger: what the clients asked for, what each node applied, what the faults lost.

The oracle (:mod:`.oracle`) judges the nodes against this ledger, so it is kept by the
simulator from what it *observes*, never from what the nodes claim:

* an :class:`Op` is one logical client operation; all its attempts share its request id
  and its node;
* an :class:`App` is one application of an update or a reset, observed through the
  keyspace the node runs on (:class:`~.cluster.TracedKeyspace`) and recorded only when
  the batch that made it is committed: "applied" means *committed at the node that
  applied it*.  A batch lost in a ``midbatch`` crash applied nothing; a ``torn`` one
  applied everything it committed, whatever it managed to send.  Its ``target`` is the
  partial state that proves it (an update: its slot's new ``p`` or ``n``; a reset: the
  records it wrote, i.e. what it observed);
* ``floors``: where a wipe or a power loss removed the last stored copy of a value, the
  highest value of that field still stored anywhere.  The final state may lack
  applications above a floor (their every copy is gone), nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..model.pncounter import BN, BP, N, P, Record, merge_into
from ..protocol.messages import Level
from . import lives
from .codes import OpKind, Outcome
from .disk import Image

#: (key, slot, field index) - one field of one record of one key.
FieldId = tuple[str, str, int]
States = dict[str, dict[str, Record]]


@dataclass(slots=True)
class App:
    op: int
    node: int
    #: The applying node's slot (its incarnation at the time).
    slot: str
    key: str
    #: Signed step of an update; 0 for a reset.
    amount: int
    target: dict[str, Record]
    at_ms: int
    #: An update's record after the step (``p, n, bp, bn, b``); () otherwise.
    record: tuple[int, ...] = ()
    #: The key's meta after the change, when it wrote the register; else None.
    meta: tuple[int, ...] | None = None
    #: An expiry change (Expire), not a reset.
    is_meta: bool = False
    #: The applying node's wall clock (ms) at the application.
    wall_ms: int = 0

    @property
    def is_reset(self) -> bool:
        return self.amount == 0 and not self.is_meta

    @property
    def birth(self) -> int:
        """The update's record's birth: the life it belongs to."""
        return self.record[4] if len(self.record) > 4 else 0

    @property
    def field(self) -> int:
        return P if self.amount > 0 else N

    @property
    def boundary(self) -> int:
        return self.target[self.slot][self.field]


@dataclass
class Op:
    """One logical operation: ``kind`` is ``add`` (``amount`` < 0: a decrement),
    ``reset`` or ``read``."""

    index: int
    client: int
    node: int
    kind: OpKind
    keys: tuple[str, ...]
    level: Level
    timeout_ms: int
    retries: int
    amount: int = 0
    rid: str | None = None
    #: Ask for the keys' states in replies (sessions always do).
    states: bool = False
    #: An increment's ttl (0: none); an Expire's deadline (None: PERSIST) and mode.
    ttl_ms: int = 0
    at_ms: int | None = None
    mode: str | None = None
    outcome: Outcome = Outcome.PENDING
    attempts: int = 0
    timed_out: int = 0
    #: Some attempt was answered ``indeterminate`` (applied at the node).
    indeterminate: bool = False
    apps: list[App] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Scripted tests may name them as plain strings.
        self.kind, self.outcome = OpKind(self.kind), Outcome(self.outcome)

    @property
    def key(self) -> str:
        return self.keys[0]

    @property
    def is_write(self) -> bool:
        return self.kind not in (OpKind.READ, OpKind.TTL)


@dataclass(slots=True)
class Attempt:
    op: Op
    tag: int
    sent_ms: int
    #: What a read must include: states of its keys acknowledged before it was sent
    #: at a wait level that intersects its read level (see :func:`.oracle.required_for`).
    required: States
    wipes_at_send: int
    seen: States
    #: Set when a node emits an ``ok`` acknowledgement of this attempt's write backed by
    #: fsynced copies that still exist: later reads must include it.
    acked: App | None = None
    acked_ms: int = -1
    #: The answering node's wall clock when it emitted its (last) Counted reply.
    replied_wall_ms: int = 0


class History:
    def __init__(self, cluster_size: int) -> None:
        self.n = cluster_size
        self.ops: list[Op] = []
        self.by_rid: dict[str, Op] = {}
        #: Updates sent without a request id, by (key, signed amount): unique by choice.
        self.ridless: dict[tuple[str, int], Op] = {}
        self.attempts: dict[int, Attempt] = {}
        self.apps: list[App] = []
        #: Values every field may hold: update boundaries (p, n) and reset bases (bp, bn).
        self.known: dict[FieldId, set[int]] = {}
        #: The highest boundary of each slot's updates (its chain, see record_update).
        self.top: dict[FieldId, int] = {}
        self.floors: dict[FieldId, int] = {}
        #: Per key, the highest deadline some node folded into its floor (Lives._fold),
        #: as applied, committed or not: a fold travels in repair pages before its
        #: deferred commit, and outlives a crash that loses it at the folding node.
        self.folds_seen: dict[str, int] = {}
        #: Per node, per key: the join of every state it collected of the key (the
        #: checker's graves: forever, across restarts and wipes).
        self.graves: dict[int, dict[str, dict[str, Record]]] = {}
        #: Per key, every register applied with its writer's earliest wall clock, and
        #: the end of a life computed from them (:meth:`ledger_floor`; None: redo).
        self._registers: dict[str, dict[tuple[int, int], int]] = {}
        self._ended: dict[str, int] = {}
        #: Request ids whose every stored copy a wipe or a power loss removed.
        self.lost_rids: set[str] = set()
        #: wait level (nodes needed) -> key -> join of acknowledged targets.
        self.required: dict[int, States] = {}
        self.wipes = 0
        self.last_wipe_ms = -1

    # ------------------------------------------------------------------ operations

    def new_op(self, op: Op) -> Op:
        self.ops.append(op)
        if op.rid is not None:
            self.by_rid[op.rid] = op
        elif op.kind is OpKind.ADD:
            self.ridless[(op.key, op.amount)] = op
        return op

    def ridless_free(self, key: str, amount: int) -> bool:
        return (key, amount) not in self.ridless

    # ------------------------------------------------------------------ applications

    def is_known(self, fid: FieldId, value: int) -> bool:
        return value == 0 or value in self.known.get(fid, ())

    def learn(self, fid: FieldId, value: int) -> None:
        self.known.setdefault(fid, set()).add(value)

    def add_app(self, app: App) -> None:
        self.apps.append(app)
        if app.meta is not None and (app.meta[1] or app.meta[2]):
            regs = self._registers.setdefault(app.key, {})
            reg = (app.meta[1], app.meta[2])
            wall = min(regs.get(reg, app.wall_ms), app.wall_ms)
            if regs.get(reg) != wall:
                regs[reg] = wall
                self._ended.pop(app.key, None)
        if app.op >= 0:  # a fold (op -1) is no request's
            self.ops[app.op].apps.append(app)

    def ledger_floor(self, key: str) -> int:
        """The highest end of a life the ledger knows of ``key`` so far: a deadline a
        holder folded (committed or not), or one that had passed when the next register
        was written (:func:`.lives.ended_lives`: the spec makes that life dead whatever
        the delivery order, though no node may have folded it yet)."""
        regs = self._registers.get(key, {})
        ended = self._ended.get(key)
        if ended is None:
            ended = self._ended[key] = lives.ended_lives(
                ((0, s, d), w) for (s, d), w in regs.items())
        return max(ended, self.folds_seen.get(key, 0))

    # ------------------------------------------------------------------ losses

    def copies_removed(self, before: States, stores: Iterable[States]) -> None:
        """A node's stored states went from ``before`` to what it holds now (a wipe or
        a power loss); ``stores``: every node's stored states now, that node's included.
        Where ``before`` held the only copy of a value, lower the field's floor."""
        stores = list(stores)
        for key, state in before.items():
            for slot, rec in state.items():
                if slot == "~":
                    # The meta's last copy gone: the final meta may be older.
                    if not any(s.get(key, {}).get(slot) == rec for s in stores):
                        self.floors[(key, slot, 0)] = 0
                    continue
                for f in (P, N, BP, BN):
                    value = rec[f]
                    if not value:
                        continue
                    left = max((s.get(key, {}).get(slot, (0, 0, 0, 0))[f] for s in stores),
                               default=0)
                    if left < value:
                        fid = (key, slot, f)
                        self.floors[fid] = min(self.floors.get(fid, left), left)

    def rids_removed(self, before: Iterable[str], images: Sequence[Image]) -> None:
        """A node's stored request ids went from ``before`` to what it holds now: an id
        no store holds any more is lost (nodes that hold its write may never learn it)."""
        for rid in before:
            if not any(rid in image.rids for image in images):
                self.lost_rids.add(rid)

    def wiped(self, now_ms: int) -> None:
        self.wipes += 1
        self.last_wipe_ms = now_ms
        # A wiped node may be part of any later quorum without the writes it held.
        self.required = {}

    # ------------------------------------------------------------------ reads

    def acknowledged(self, needed: int, key: str, target: dict[str, Record]) -> None:
        """A write of ``key`` acknowledged at a level of ``needed`` nodes."""
        per_key = self.required.setdefault(needed, {})
        mine = per_key.setdefault(key, {})
        merge_into(mine, target)
