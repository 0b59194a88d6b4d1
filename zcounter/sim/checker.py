"""The state checker: the Observer of the nodes (cf. TigerBeetle's state_checker.zig).

As the nodes run, it turns what they commit into the ledger (:mod:`.history`) - every
update and reset each batch applied, attributed to the operation that asked for it -
and runs the per-batch and per-reply checks of :mod:`.oracle` on the nodes' memory,
their disks and the replies they emit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from ..model.pncounter import BN, BP, N, P, Record
from ..protocol.messages import Counted, Holding, Refused, RidEntry
from ..protocol.node import NodeCore
from ..protocol.outputs import Persist
from . import lives
from .cluster import HoldAsked, Note, SimNode
from .codes import Copy, OpKind
from .disk import Image
from .history import App, Attempt, History, Op
from .lives import META
from .oracle import (
    SimFailure,
    check_chain,
    check_counts,
    check_grows,
    check_includes,
    check_reset_observed,
    check_ttl,
    holds,
    short,
    unknown_value,
)
from .scheduler import Scheduler


def _freeze(target: dict[str, Record]) -> tuple[tuple[str, Record], ...]:
    return tuple(sorted(target.items()))


def _holds(state: dict[str, Record], target: dict[str, Record]) -> bool:
    """``state`` holds ``target``'s records and (if it has one) its meta."""
    if not holds(state, target):
        return False
    meta = target.get(META)
    if meta is None:
        return True
    have = lives.split(state)[1]
    return lives.join_meta(have, lives.split({META: meta})[1]) == have


def _holds_app(state: dict[str, Record], app: App) -> bool:
    target = dict(app.target)
    if app.meta is not None:
        target[META] = app.meta
    return _holds(state, target)


class Checker:
    def __init__(self, history: History, scheduler: Scheduler, stats: Counter[str],
                 trace: Callable[[str], None] | None) -> None:
        self.history = history
        self.scheduler = scheduler
        self.stats = stats
        self._trace = trace
        #: Set by the driver once the cluster exists.
        self.nodes: dict[int, SimNode] = {}
        #: When a commit last changed a state or a request id (convergence timing).
        self.last_change_ms = 0
        #: A node's wall clock now (set by the driver: the cluster's).
        self.wall: Callable[[SimNode], int] = lambda node: 0
        #: Per node, per key: the join of every state it collected of the key (its
        #: graves as the oracle keeps them: forever, across restarts and wipes).
        self.graves: dict[int, dict[str, dict[str, Record]]] = history.graves

    def log(self, text: str) -> None:
        if self._trace is not None:
            self._trace(f"{self.scheduler.now_ms:>8}ms {text}")

    def committed(self, node: SimNode, core: NodeCore, persist: Persist,
                  notes: list[Note], rids: list[RidEntry],
                  before: dict[str, dict[str, Record]]) -> None:
        """A batch was committed at ``node``: record its applications, check its states.
        ``rids``: the request ids the batch itself remembered (the commit may carry
        earlier, deferred batches' too)."""
        if notes:
            self._record(node, core, rids, notes)
        image = node.disk.current
        known = self.history.known
        now = self.wall(node)
        graves = self.graves.setdefault(node.node_id, {})
        removed = set(getattr(persist, "removed", ()))
        # Collected, then written again in a batch this commit writes too: the commit
        # carries the new state only (Persist.merge), the collection happened all the
        # same (bin/sim --seed 5058: collected in a deferred batch, stepped in the next).
        removed |= {key for key in persist.states if key in node.collected}
        for key in sorted(removed):
            self._collected(node, key, now)
        for key in persist.states:
            after = image.state(key)
            problem = (check_grows({} if key in removed else before[key], after)
                       or unknown_value(key, after, known))
            if not problem and key in graves:
                problem = lives.check_no_resurrection(graves[key], after, now)
            if problem:
                raise SimFailure(f"node {node.node_id} committed {short(key)}: {problem}")
        if persist.states or persist.rids or removed:
            self.last_change_ms = self.scheduler.now_ms

    def _collected(self, node: SimNode, key: str, now: int) -> None:
        """``node`` committed the collection of ``key``: what it collected was dead at
        its now, and no node holds a state of the key (in memory or durably) that the
        collected death would change: every node that said "I hold it dead" did."""
        state = node.collected.pop(key, None)
        where = f"node {node.node_id} collected {short(key)}"
        if state is None:
            raise SimFailure(f"node {node.node_id} removed {short(key)} from its storage "
                             "but never collected it")
        problem = lives.check_collected_dead(state, now)
        if problem:
            raise SimFailure(f"{where}: {problem}")
        graves = self.graves.setdefault(node.node_id, {})
        graves[key] = dict(lives.join(graves.get(key, {}), state))  # type: ignore[arg-type]
        self.stats["collections_checked"] += 1
        for other in self.nodes.values():
            if other is node:
                continue
            held = [("in memory", other.core.keys.state(key))] if other.core is not None else []
            held += [("on disk", other.disk.current.state(key)),
                     ("durably", other.disk.durable.state(key))]
            for how, have in held:
                if not have:
                    continue
                problem = lives.check_no_resurrection(state, have, self.wall(other))
                if problem:
                    raise SimFailure(f"{where} while node {other.node_id} held it {how} in "
                                     f"a state the death changes (a Hold answered yes "
                                     f"without holding it dead?): {problem}")

    def _record(self, node: SimNode, core: NodeCore, remembered: list[RidEntry],
                notes: list[Note]) -> None:
        """Turn a committed batch's notes into applications of the ledger."""
        history, now = self.history, self.scheduler.now_ms
        where = f"node {node.node_id}"
        # The batch remembered a request id for every write it applied: index those this
        # process was handed by what they prove.  Ids learned from peers are other
        # applications - even of this node's writes in an earlier life, whose proof can
        # be exactly this batch's (bin/sim --seed 4001 --nodes 5: a wiped node learned
        # the id of the reset it had applied before the wipe, then reset the same state).
        own: dict[tuple[str, tuple[tuple[str, Record], ...]], list[str]] = {}
        for rid, key, target in remembered:
            if rid in node.rids_delivered:
                own.setdefault((key, _freeze(target)), []).append(rid)
        for note in notes:
            key, amount, target = note.key, note.amount, note.target
            if note.fold:
                self._fold(node, core, note, now)
                continue
            kind = OpKind.EXPIRE if note.expire else OpKind.RESET if amount == 0 else OpKind.ADD
            op = self._op_of(own, note, kind)
            if (op is None or op.node != node.node_id or op.key != key or op.kind is not kind
                    or op.amount != amount):
                raise SimFailure(f"{where} applied {kind} {amount:+d} to {short(key)} and no "
                                 "request explains it (a request id not remembered?)")
            problem = self._learn(key, note, node.node_id)
            if problem:
                raise SimFailure(f"{where}, {short(key)}: {problem}")
            app = App(op.index, node.node_id, core.slot_name, key, amount, target, now,
                      note.record, note.meta, note.expire, note.now_ms)
            for prev in op.apps:
                if prev.node != node.node_id or prev.slot == app.slot:
                    raise SimFailure(f"{where}: op {op.index} (rid {op.rid}) applied again: "
                                     f"{prev} then {app}")
            history.add_app(app)
            self.stats["resets_applied" if amount == 0 else "updates_applied"] += 1
            if self._trace is not None:
                self.log(f"APPLY op {op.index} at node {node.node_id}: {short(key)} "
                         f"{'reset ' if amount == 0 else f'{amount:+d} '}-> {target}")

    def _fold(self, node: SimNode, core: NodeCore, note: Note, now: int) -> None:
        """A holder folded the key's deadline into its floor (``Lives._fold``): a meta
        change of the ledger no request made (op -1), which every node's floor must come
        to include - the deadline some register wrote, passed at the node's clock."""
        assert note.meta is not None
        deadline = note.meta[0]
        if deadline not in self.history.known.get((note.key, META, 2), ()):
            raise SimFailure(f"node {node.node_id} folded {short(note.key)}'s floor to "
                             f"{deadline}, which no expiry change wrote")
        if deadline > note.now_ms:
            raise SimFailure(f"node {node.node_id} folded {short(note.key)}'s deadline "
                             f"{deadline} into its floor before it passed (now {note.now_ms})")
        self.history.add_app(App(-1, node.node_id, core.slot_name, note.key, 0, {}, now, (),
                                 note.meta, True, note.now_ms))
        self.stats["folds"] += 1
        if self._trace is not None:
            self.log(f"FOLD at node {node.node_id}: {short(note.key)} F -> {deadline}")

    def _op_of(self, own: dict[tuple[str, tuple[tuple[str, Record], ...]], list[str]],
               note: Note, kind: OpKind) -> Op | None:
        history = self.history
        if kind is OpKind.EXPIRE:
            # An Expire's id proves the meta it wrote (whatever the entry's form): the
            # first id this process was handed for an expire of the key, not yet used -
            # one whose entry names the meta this one wrote first: an Expire that changed
            # nothing in the same batch remembers its id too (bin/sim --seed 5068).
            meta = None if note.meta is None else tuple(note.meta)
            for exact in (True, False):
                for (key, entry), pending in own.items():
                    if exact and meta not in [tuple(r) for s, r in entry if s == META]:
                        continue
                    for i, rid in enumerate(pending):
                        op = history.by_rid.get(rid)
                        if key == note.key and op is not None and op.kind is OpKind.EXPIRE:
                            return history.by_rid[pending.pop(i)]
            return None
        target = dict(note.target)
        if note.meta is not None:
            # An increment with a ttl remembers the key's meta beside its record (the
            # expiry is part of what it asked, requests.py add); a reset that cleared
            # a deadline wrote the meta too.
            target[META] = note.meta
        found = own.get((note.key, _freeze(target)), [])
        for i, rid in enumerate(found):
            # Of the ids proving this target, one of the note's kind: an Expire that
            # changed nothing and a reset of a key that no longer exists both prove {}
            # (bin/sim --seed 179: a reset, a PERSIST and a reset in one batch).
            op = history.by_rid.get(rid)
            if op is not None and op.kind is kind:
                return history.by_rid[found.pop(i)]
        return history.ridless.get((note.key, note.amount)) if note.amount else None

    def _check_rebase(self, key: str, slot: str, whole: tuple[int, ...], now: int,
                      node_id: int) -> str | None:
        """A step that moved its record into a new life (a later birth: the bases jump to
        the totals) must have had a reason in the ledger: a floor, or a deadline passed
        at the node's ``now``, above the old birth."""
        if len(whole) <= 4:
            return None
        fid = (key, slot, 4)
        old, self.history.top[fid] = self.history.top.get(fid), whole[4]
        if old is None or whole[4] <= old:
            return None
        if key in self.graves.get(node_id, {}) or key in self.nodes[node_id].collected:
            # The node collected the key: its first step starts a fresh record at its
            # high-water, born now (ttl-spec 1 step 2; bin/sim --seed 33; the collection
            # may be in the same commit, deferred).
            return None
        # (A floor may lie ahead of this node's clock: a faster one folded it.)
        ends = [e for a in self.history.apps if a.key == key and a.meta is not None
                for e in (a.meta[0], a.meta[2] if a.meta[2] <= now else 0)]
        ends.append(self.history.folds_seen.get(key, 0))  # perhaps not yet committed
        if any(e > old for e in ends):
            return None
        return (f"{slot}'s record moved from the life born at {old} to one born at "
                f"{whole[4]} (now {now}), but no floor or passed deadline in the ledger "
                f"lies between")

    def _learn(self, key: str, note: Note, node_id: int) -> str | None:
        """Check a note against the ledger and learn the values it produced."""
        history, amount, target = self.history, note.amount, note.target
        problem = None
        if amount:
            ((slot, rec),) = target.items()
            f = P if amount > 0 else N
            fid = (key, slot, f)
            whole = note.record
            base = whole[BP if f == P else BN] if len(whole) > BN else None
            problem = check_chain(history.top.get(fid, 0), amount, rec[f], base)
            history.top[fid] = rec[f]
            history.learn(fid, rec[f])
            # A new life's rebase or a high-water start: values this step made.
            for i, v in enumerate(whole):
                history.learn((key, slot, i), v)
            problem = problem or self._check_rebase(key, slot, whole, note.now_ms, node_id)
        else:  # a reset, or an Expire (its target holds bases if it reset: a past time)
            problem = check_reset_observed(key, target, history.known)
            for s, r in target.items():
                history.learn((key, s, BP), r[BP])
                history.learn((key, s, BN), r[BN])
        if note.meta is not None:
            for i, v in enumerate(note.meta):
                # F is some deadline (rule R), learned as one.
                history.learn((key, META, 2 if i == 0 else i), v)
        return problem

    def batch_done(self, node: SimNode, core: NodeCore, now: float, deadline: float) -> None:
        # What the node answers from must be what it committed (or deferred: a batch
        # that acknowledged nothing): a change left out of ``persist`` would be lost by
        # the next crash, after replies that showed it.
        if core.keys.tree.root != node.pending_root():
            deferred = node.deferred.states if node.deferred is not None else {}
            diff = [k for k in sorted(core.keys.iter_keys()) if k not in deferred
                    and core.keys.state(k) != node.disk.current.state(k)]
            raise SimFailure(f"node {node.node_id}: memory differs from what it committed "
                             f"(keys {[short(k) for k in diff]})")
        # The runtime polls with timeout max(0, deadline - now): a deadline in the past
        # right after tick() would make it spin at 100% CPU.
        if deadline < now - 1e-9:
            raise SimFailure(f"node {node.node_id}: next_deadline() is {now - deadline:.4f}s "
                             "in the past after tick() (the runtime would busy-loop)")

    def replying(self, node: SimNode, core: NodeCore, reply: object) -> None:
        """Checks that need the node's state at the moment it answers a client."""
        attempt = self.history.attempts.get(reply.id)  # type: ignore[attr-defined]
        if attempt is None:
            raise SimFailure(f"node {node.node_id} answered an unknown tag {reply!r}")
        op = attempt.op
        where = f"node {node.node_id}, op {op.index} ({op.kind} of {tuple(map(short, op.keys))})"
        if isinstance(reply, Counted):
            now = attempt.replied_wall_ms = self.wall(node)
            if op.kind is OpKind.TTL:
                problem = check_ttl(op.key, reply.counts, reply.states.get(op.key), now)
            elif op.kind is OpKind.EXPIRE:
                problem = None if reply.counts in ((0,), (1,)) else f"Expire counted {reply.counts}"
            else:
                problem = check_counts(op.keys, reply.counts, reply.states, now)
            if not problem and attempt.seen:
                self.stats["session_checks"] += 1
                problem = check_includes(attempt.seen, reply.states,
                                         "answered older than the session had seen", now,
                                         {k: self.history.ledger_floor(k)
                                          for k in attempt.seen},
                                         self.graves.get(node.node_id, {}))
            if problem:
                raise SimFailure(f"{where}: {problem}")
            if op.is_write:
                self._check_ack(node, core, op, reply, attempt)
        elif isinstance(reply, Refused) and op.is_write:
            if reply.code.applied:
                grave = self.graves.get(node.node_id, {}).get(op.key, {})
                if not op.apps or not any(holds(s, op.apps[-1].target) for s in (
                        node.disk.current.state(op.key), grave)):
                    raise SimFailure(f"{where}: answered {reply.code.value}, yet it is not "
                                     "applied durably here")
            elif any(a.slot == core.slot_name for a in op.apps):
                raise SimFailure(f"{where}: refused ({reply.code.value}) although applied "
                                 f"here: {op.apps}")

    def _check_ack(self, node: SimNode, core: NodeCore, op: Op, reply: Counted,
                   attempt: Attempt) -> None:
        where = f"node {node.node_id}, op {op.index} ({op.kind} of {short(op.key)})"
        if op.kind is OpKind.EXPIRE and reply.counts == (0,):
            # Changed nothing (no such key, or its mode said no): nothing to replicate,
            # answered at once whatever its level (requests.py _acknowledge).
            self.stats["expires_unchanged"] += 1
            return
        if not op.apps:
            raise SimFailure(f"{where}: acknowledged (wait={op.level.value}) but never applied")
        app = op.apps[-1]
        # A write the node collected since (reset or expired, dead everywhere: a wait
        # for all may end after the collection) is held in its grave (bin/sim --seed 30).
        grave = self.graves.get(node.node_id, {}).get(op.key, {})
        joined = lives.join(grave, reply.states.get(op.key, {}))
        if reply.states and not _holds_app({s: tuple(r) for s, r in joined.items()}, app):
            raise SimFailure(f"{where}: the reply's state does not hold its own write")
        needed = core.needed(op.level)
        # A node counts if it holds the write fsynced, or held it fsynced on a disk
        # wiped since: the holder confirmed a durable copy, a wipe is data loss
        # (bin/sim --seed 33 --nodes 5: a holder wiped before the wait=all ack).
        target = dict(app.target)
        if app.meta is not None:
            target[META] = app.meta
        held = {n.node_id: self._held(n, op.key, target, core.wall_ms)
                for n in self.nodes.values()}
        now = sum(1 for h in held.values() if h is Copy.FSYNCED)
        if now + sum(1 for h in held.values() if h is Copy.WIPED) < needed:
            raise SimFailure(f"{where}: wait={op.level.value} acknowledged with only {now} "
                             f"fsynced copies of {app.target} "
                             f"({ {n: str(h) for n, h in held.items()} })")
        self.stats["acks_checked"] += 1
        if now >= needed:
            # Later reads at an intersecting level must include it (see Workload): only
            # while the copies that back it exist (every wipe clears the requirement).
            attempt.acked = app
            attempt.acked_ms = self.scheduler.now_ms

    def _held(self, node: SimNode, key: str, target: dict[str, Record], now: int) -> Copy:
        disk = node.disk
        if _holds(disk.durable.state(key), target):
            return Copy.FSYNCED
        grave = self.graves.get(node.node_id, {}).get(key)
        if grave is not None and (_holds(grave, target) or not lives.exists(
                lives.join(grave, target), now)):
            # Collected with the write in it: every node held it durably, dead.  Or a
            # write into the life the grave ended, taken by a node whose clock had not
            # reached the deadline yet (skew): the death every node holds covers it - it
            # never counts again anywhere (bin/sim --seed 1022: +2 born before the folded
            # floor, acknowledged at wait=all by two nodes that had collected the key).
            return Copy.FSYNCED
        if any(_holds(image.state(key), target) for image in node.wiped):
            return Copy.WIPED
        return Copy.UNSYNCED if _holds(disk.current.state(key), target) else Copy.NONE

    def holding(self, node: SimNode, core: NodeCore, asked: HoldAsked,
                reply: Holding) -> None:
        """``node`` answers a Hold: each yes must hold - the node holds the key with that
        hash, dead at its own now, or collected it (ttl-spec 4, the premise of every
        collection)."""
        keys = asked.keys
        if len(reply.ok) != len(keys):
            raise SimFailure(f"node {node.node_id} answered {len(reply.ok)} to a Hold of "
                             f"{len(keys)} keys")
        now = asked.wall_ms
        graves = self.graves.get(node.node_id, {})
        for (key, digest), ok in zip(keys, reply.ok, strict=True):
            if not ok:
                continue
            self.stats["holds_checked"] += 1
            state, key_hash = asked.held[key]
            if not state:
                if key in graves or key in node.collected:
                    continue
                raise SimFailure(f"node {node.node_id} said it holds {short(key)} dead, but "
                                 "it holds nothing of it and never collected it")
            if key_hash != digest or lives.exists(state, now):
                raise SimFailure(f"node {node.node_id} said it holds {short(key)} dead with "
                                 f"hash {digest:016x}, but holds {state} (hash "
                                 f"{key_hash:016x}, "
                                 f"{'live' if lives.exists(state, now) else 'dead'} at {now})")

    def copies_removed(self, node: SimNode, before: Image, wiped: bool) -> None:
        images = [n.disk.current for n in self.nodes.values()]
        self.history.copies_removed(before.all_states(), (i.all_states() for i in images))
        self.history.rids_removed(before.rids, images)
        if wiped:
            self.history.wiped(self.scheduler.now_ms)
