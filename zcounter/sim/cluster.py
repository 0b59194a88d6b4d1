"""The nodes: real :class:`~zcounter.protocol.node.NodeCore` objects, driven exactly as
:mod:`zcounter.runtime.server` drives them.

One *batch* per node per simulated instant at which something reached it (or its timer
fell due): hand it every input that arrived, ``tick(now)``, ``take_outputs()``, and hand
``persist`` and the messages to the runtime's own commit policy
(:class:`~zcounter.protocol.commit.CommitPolicy`), which says what to commit to the
node's :class:`~.disk.Disk` and which messages may go; commits return at once here.  A
node wakes at ``next_deadline()`` or when its deferred changes fall due, read on its own
clock (offset, coarse) and capped like the runtime's poll timeout.  A process start
rebuilds the core from what the disk holds, with a fresh epoch; a fresh disk (first
start, or a wipe) starts it ``fresh``.

Crashes (see :mod:`.disk` for what survives):

* ``clean``: between two batches;
* ``torn``: the next batch commits, sends only a prefix of its messages, and dies;
* ``midbatch``: the next batch consumes its inputs and dies before its commit;
* ``commit``: the next batch that writes something (see
  :meth:`Cluster._aim_commit_crash`) dies inside its commit, at one of its first
  storage operations (a write torn at a random byte), or right after it: nothing of
  the batch is sent, and the recovery decides whether its commit happened;
* ``power``: between two batches, and the files lose what was not flushed.

Applications are observed through :class:`TracedKeyspace`: the keyspace a core is
built on, which notes every update and reset the core makes through it.  The notes of a
batch count only once that batch is committed (:meth:`Observer.committed`).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol, cast

from ..config import Settings
from ..model.expiry import META, ExpireMode
from ..model.keyspace import Keyspace, header
from ..model.pncounter import Record
from ..protocol.commit import CommitPolicy, Step
from ..protocol.messages import ClientReply, Hold, Holding, RidEntry
from ..protocol.node import NodeCore
from ..protocol.outputs import Message, Persist, Publish, ToClient, ToPeer
from .codes import CrashMode
from .disk import Disk, Image
from .files import Crash
from .network import Kind, Network, Packet, client_endpoint
from .oracle import SimFailure
from .scheduler import Scheduler
from .swarm import Swarm

#: The cores' clock origin: arbitrary, like ``time.monotonic()``.
CLOCK_ORIGIN_S = 1000.0
#: The nodes' wall clocks read this unix time (ms) at simulated time 0, plus each
#: node's constant offset (swarm ``wall_skew``): 2023-11-14, far from 0 and 2**63.
EPOCH_MS = 1_700_000_000_000
#: Batches a ``commit`` crash waits for one that writes something (a node commits in
#: about one batch in five: seeds 0-99, 3 nodes, 300 steps).
COMMIT_CRASH_WAIT = 32

@dataclass(frozen=True, slots=True)
class Note:
    """An update or a reset a core applied through its keyspace."""

    key: str
    #: Signed step of an update; 0 for a reset or an expiry change.
    amount: int
    #: What proves it: an update's slot with its new ``p`` (or ``n``) alone; the
    #: records a reset wrote (``(p, n, p, n)`` for every slot it knew); {} for an
    #: expiry change.
    target: dict[str, Record]
    #: The node's wall clock (unix ms) as the core passed it.
    now_ms: int = 0
    #: An update's whole record after the step (``p, n, bp, bn, b``): a base it starts
    #: from (a new life's rebase, a high-water start) and its birth are values it made.
    record: tuple[int, ...] = ()
    #: The key's meta ``(F, S, D)`` after the change, when it wrote the register.
    meta: tuple[int, ...] | None = None
    #: An expiry change (Expire), not a reset.
    expire: bool = False
    #: A fold (``Lives._fold``): the holder saw the key's current deadline pass at
    #: ``now_ms`` and raised the floor to it (``meta`` = ``(deadline, 0, 0)``): a meta
    #: change no request made.
    fold: bool = False


class TracedKeyspace(Keyspace):
    """A :class:`Keyspace` that notes the updates, resets, expiry changes and collections
    applied through it (with the wall time of each, as the core passed it)."""

    def __init__(self, collected: dict[str, dict[str, Record]] | None = None,
                 folds: dict[str, int] | None = None) -> None:
        super().__init__()
        self.notes: list[Note] = []
        #: The state of every key collected and not yet committed (the checker takes
        #: them with the commit that removes them: a deferred one may come later).
        self.collected: dict[str, dict[str, Record]] = {} if collected is None else collected
        #: The wall time of the :meth:`dead` call under way (a fold happens inside it).
        self._dead_now = 0
        #: Every fold as applied (shared by the run: :attr:`.History.folds_seen`).
        self.folds: dict[str, int] = {} if folds is None else folds

    def add(self, key: str, slot: int, amount: int, now_ms: int,
            ttl_ms: int = 0) -> tuple[int, int, int, int, int]:
        rec = super().add(key, slot, amount, now_ms, ttl_ms)
        proof = (rec[0], 0, 0, 0) if amount > 0 else (0, rec[1], 0, 0)
        meta = self._meta(key) if ttl_ms else None
        self.notes.append(Note(key, amount, {self.slots.names[slot]: proof}, now_ms,
                               tuple(rec), meta))
        return rec

    def reset(self, key: str, now_ms: int) -> dict[str, Record]:
        written = super().reset(key, now_ms)
        # Noted even when it wrote nothing (a key that does not exist): the op applied.
        meta = written.get(META)
        self.notes.append(Note(key, 0, {s: r for s, r in written.items() if s != META},
                               now_ms, (), None if meta is None else tuple(meta)))
        return written

    def expire(self, key: str, at_ms: int | None, mode: ExpireMode | None,
               now_ms: int) -> bool:
        mark = len(self.notes)
        changed = super().expire(key, at_ms, mode, now_ms)
        # A deadline at or before now is an observed reset (the model's expire calls
        # reset): one application, the expire's, whose target holds the bases it wrote.
        written: dict[str, Record] = {}
        for inner in self.notes[mark:]:
            written.update(inner.target)
        del self.notes[mark:]
        if changed:
            self.notes.append(Note(key, 0, written, now_ms, (), self._meta(key), expire=True))
        return changed

    def dead(self, now_ms: int, limit: int) -> list[str]:
        self._dead_now = now_ms
        return super().dead(now_ms, limit)

    def fold_passed(self, keys: Iterable[str], now_ms: int) -> None:
        # The intake folds too, before a merge (seed 5086): its folds happen at its now.
        self._dead_now = now_ms
        super().fold_passed(keys, now_ms)

    def _fold(self, key: str, deadline: int) -> None:
        super()._fold(key, deadline)
        self.folds[key] = max(self.folds.get(key, 0), deadline)
        self.notes.append(Note(key, 0, {}, self._dead_now, (), (deadline, 0, 0), fold=True))

    def collect(self, keys: Iterable[str]) -> list[tuple[str, bytes]]:
        keys = list(keys)
        states = [(key, self.state(key)) for key in keys]
        removed = super().collect(keys)
        gone = {key for key, _ in removed}
        self.collected.update((key, state) for key, state in states if key in gone)
        return removed

    def _meta(self, key: str) -> tuple[int, ...]:
        return tuple(self.state(key).get(META, (0, 0, 0)))


@dataclass(frozen=True, slots=True)
class HoldAsked:
    """A Hold as its node decided it: the keys asked, what it held of each then (state
    and key hash; {} and 0 for none), and its wall clock."""

    keys: tuple[tuple[str, int], ...]
    held: dict[str, tuple[dict[str, Record], int]]
    wall_ms: int


class Observer(Protocol):
    """Who watches the nodes run (:class:`~.checker.Checker`)."""

    def committed(self, node: SimNode, core: NodeCore, persist: Persist, notes: list[Note],
                  rids: list[RidEntry], before: dict[str, dict[str, Record]]) -> None: ...

    def batch_done(self, node: SimNode, core: NodeCore, now: float,
                   deadline: float) -> None: ...

    def replying(self, node: SimNode, core: NodeCore, reply: ClientReply) -> None: ...

    def copies_removed(self, node: SimNode, before: Image, wiped: bool) -> None: ...

    def holding(self, node: SimNode, core: NodeCore, asked: HoldAsked,
                reply: Holding) -> None: ...

    def log(self, text: str) -> None: ...


@dataclass
class SimNode:
    node_id: int
    disk: Disk
    offset_s: float
    res_ms: int
    #: This node's wall clock minus the true one (ms): within +-max_clock_skew_s / 2,
    #: so any two nodes differ by at most max_clock_skew_s.
    wall_offset_ms: int = 0
    core: NodeCore | None = None
    keys: TracedKeyspace | None = None
    #: Bumped by every process start: packets sent to an earlier life are lost.
    life: int = 0
    wake_at: int = -1
    inbox: list[Packet] = field(default_factory=list)
    #: Crash mode applied by the next batch (``torn``, ``midbatch``; ``commit``: the
    #: next that writes something).
    doom: CrashMode | None = None
    #: Batches a ``commit`` doom has waited for one that writes something.
    doom_waited: int = 0
    paused: bool = False
    #: Bumped by every crash: a restart scheduled for an earlier crash is void.
    crash_token: int = 0
    #: When this node's disk was wiped (simulated ms; for traces and tests).
    wipes_ms: list[int] = field(default_factory=list)
    #: Request ids of the client writes handed to this life: what it can apply (a
    #: learned id of an earlier life's write may prove the very same state).
    rids_delivered: set[str] = field(default_factory=set)
    #: The fsynced images of the disks wiped away: a copy a node confirmed before a
    #: wipe still counted towards the acknowledgements it backed.
    wiped: list[Image] = field(default_factory=list)
    #: What is written when (the runtime's policy; one per process life): a batch that
    #: acknowledged nothing waits in its ``deferred`` until the next commit or DEFER_S,
    #: and a crash loses it.
    policy: CommitPolicy = field(default_factory=CommitPolicy)
    #: The notes of the batches whose changes wait in the policy's ``deferred`` (a
    #: collection round's folds: they acknowledge nothing): they count with the commit
    #: that writes them, and a crash loses them with the changes.
    deferred_notes: list[Note] = field(default_factory=list)
    #: Keys this process collected, with their states, until the commit that removes
    #: them (:class:`TracedKeyspace`); a crash loses what was not committed.
    collected: dict[str, dict[str, Record]] = field(default_factory=dict)
    #: The Hold requests this process was asked and has not answered, by (asker,
    #: request id): the keys asked, and what the node held of each when it decided
    #: (its state and key hash, and its wall clock) - the answer leaves after the
    #: batch's commit, and later inputs of that batch may start a new life.
    #: A list, answered in order: a duplicated Hold is asked twice (bin/sim --seed 97:
    #: yes to the first, a step of the key, no to the copy).
    holds_asked: dict[tuple[object, int], list[HoldAsked]] = field(default_factory=dict)

    @property
    def up(self) -> bool:
        return self.core is not None

    @property
    def deferred(self) -> Persist | None:
        return self.policy.deferred

    def pending_root(self) -> int:
        """The hash-tree root of what the node would load if its deferred changes were
        written: what its memory must equal after every batch."""
        image = self.disk.current
        root = image.root
        if self.deferred is not None:
            for key, packed in self.deferred.states.items():
                root ^= image.key_hash(key) ^ header(packed)[0]
            for key in self.deferred.removed:  # collected (never also in its states)
                root ^= image.key_hash(key)
        return root


class Cluster:
    def __init__(self, size: int, swarm: Swarm, settings: Settings, rng: random.Random,
                 scheduler: Scheduler, network: Network, observer: Observer,
                 stats: Counter[str]) -> None:
        self.ids = list(range(1, size + 1))
        self.swarm = swarm
        self.settings = settings
        self.rng = rng
        self.scheduler = scheduler
        self.network = network
        self.observer = observer
        self.stats = stats
        #: Every fold any node applied (the driver shares the history's).
        self.folds_seen: dict[str, int] = {}
        self.nodes: dict[int, SimNode] = {}
        self._touched: dict[int, SimNode] = {}
        half_skew_ms = int(500 * settings.max_clock_skew_s) if swarm.wall_skew else 0
        for node_id in self.ids:
            offset = rng.uniform(-500.0, 500.0) if swarm.skew else 0.0
            self.nodes[node_id] = SimNode(node_id, self.new_disk(node_id),
                                          CLOCK_ORIGIN_S + offset, swarm.clock_res_ms)
        for node in self.nodes.values():  # drawn after: the offsets above stay as they were
            if half_skew_ms:
                node.wall_offset_ms = rng.randint(-half_skew_ms, half_skew_ms)

    def draw_hex(self) -> str:
        """12 hex digits from the run's RNG (incarnations and epochs)."""
        return f"{self.rng.getrandbits(48):012x}"

    def new_disk(self, node_id: int) -> Disk:
        """Fresh storage: its incarnation, and how far its checkpoints trail the log."""
        return Disk(node_id, self.draw_hex(), self.rng.randint(0, 2))

    def wall_ms(self, node: SimNode) -> int:
        """What the node's wall clock reads now (unix ms; the runtime's ``time.time()``)."""
        return EPOCH_MS + self.scheduler.now_ms + node.wall_offset_ms

    def clock(self, node: SimNode) -> float:
        """What the node's monotonic clock reads now."""
        ms = self.scheduler.now_ms
        return node.offset_s + (ms - ms % node.res_ms) / 1000.0

    # ------------------------------------------------------------------ lifecycle

    def start(self, node: SimNode) -> None:
        # As the runtime's server loads a recovered Storage (runtime/server.py _load).
        storage = node.disk.storage
        node.life += 1
        node.collected = {}
        keys = TracedKeyspace(node.collected, self.folds_seen)
        keys.load(storage.load_slot_names(), storage.load_states(),
                  high_water=storage.load_high_water())
        node.keys = keys
        node.core = NodeCore(node.node_id, self.ids, storage.incarnation, self.draw_hex(),
                             self.settings, self.clock(node), keyspace=keys,
                             rids=storage.load_rids(), fresh=storage.created,
                             republish=storage.recovered_keys)
        node.rids_delivered = set()
        node.holds_asked = {}
        node.policy = CommitPolicy()
        node.deferred_notes = []
        node.inbox = []
        node.doom = None
        node.paused = False
        self.observer.log(f"START node {node.node_id} life {node.life}, slot "
                          f"{node.core.slot_name}{' (fresh)' if node.core.bootstrapping else ''}"
                          f", {len(keys)} keys")
        # The runtime's first loop iteration: the heartbeat is due at once.
        self.run_batch(node)

    def crash(self, node: SimNode, mode: CrashMode) -> None:
        """Crash ``node`` now (``clean``, ``power``) or at its next batch (``torn``,
        ``midbatch``, ``commit``)."""
        if not node.up or node.doom == CrashMode.COMMIT:
            return  # (a commit crash waits for a batch that writes: let it land)
        if mode.at_next_batch:
            node.doom, node.doom_waited = mode, 0
            return
        self._die(node, mode)

    def _die(self, node: SimNode, mode: CrashMode,
             in_flight: _InFlight | None = None) -> None:
        """The process is gone; its storage recovers now (:meth:`.disk.Disk.crash`)."""
        self.stats["crashes"] += 1
        self.stats[f"crashes_{mode}"] += 1
        self.observer.log(f"CRASH node {node.node_id} ({mode})")
        core = node.core
        node.core = None
        node.keys = None
        node.inbox = []
        node.doom = None
        node.paused = False
        node.crash_token += 1
        node.policy = CommitPolicy()  # its deferred changes were never written: lost
        node.deferred_notes = []
        before = node.disk.current
        if node.disk.crash(mode is CrashMode.POWER, in_flight.persist if in_flight else None):
            assert in_flight is not None and core is not None
            self.stats["interrupted_commits_recovered"] += 1
            self.observer.committed(node, core, in_flight.persist, in_flight.notes,
                                    in_flight.rids, in_flight.before)
        if mode is CrashMode.POWER:
            self.observer.copies_removed(node, before, wiped=False)

    def restart(self, node: SimNode, wipe: bool) -> None:
        if node.up:
            return
        if wipe:
            before = node.disk.current
            node.wiped.append(node.disk.durable)
            node.disk.close()
            node.disk = self.new_disk(node.node_id)
            node.wipes_ms.append(self.scheduler.now_ms)
            self.stats["wipes"] += 1
            self.observer.log(f"WIPE node {node.node_id}: new incarnation "
                              f"{node.disk.incarnation}")
            self.observer.copies_removed(node, before, wiped=True)
        self.stats["restarts"] += 1
        self.start(node)

    def pause(self, node: SimNode) -> None:
        if node.up:
            node.paused = True
            self.stats["pauses"] += 1
            self.observer.log(f"PAUSE node {node.node_id}")

    def resume(self, node: SimNode) -> None:
        if node.up and node.paused:
            node.paused = False
            self.observer.log(f"RESUME node {node.node_id} ({len(node.inbox)} inputs queued)")
            self.run_batch(node)

    # ------------------------------------------------------------------ inputs

    def accept(self, packet: Packet) -> SimNode | None:
        """A packet reaches node ``packet.dst``: queue it for the node's next batch."""
        node = self.nodes[packet.dst]
        if node.core is None or node.life != packet.life:
            self.stats["stale_life"] += 1
            return None
        if not self.network.arrives(packet):
            return None
        node.inbox.append(packet)
        self._touched[node.node_id] = node
        return node

    def woken(self, node_id: int, life: int) -> None:
        """Node ``node_id``'s timer fell due (ignored if it has been re-armed since)."""
        node = self.nodes[node_id]
        if (node.core is not None and node.life == life and not node.paused
                and node.wake_at == self.scheduler.now_ms):
            self._touched[node_id] = node

    def run_touched(self) -> None:
        """End of an instant: one batch for every node that got inputs or woke."""
        touched, self._touched = self._touched, {}
        for node_id in sorted(touched):
            self.run_batch(touched[node_id])

    # ------------------------------------------------------------------ one batch

    def run_batch(self, node: SimNode) -> None:
        """One poll cycle of the runtime: inputs, tick, outputs, commit, then send."""
        core, keys = node.core, node.keys
        if core is None or keys is None or node.paused:
            return
        self.stats["batches"] += 1
        now = self.clock(node)
        inputs, node.inbox = node.inbox, []
        keys.notes.clear()
        core.set_wall(self.wall_ms(node))
        for packet in inputs:
            body = packet.body
            if packet.kind is Kind.REQUEST:
                rid = getattr(body, "rid", None)
                if rid is not None:
                    node.rids_delivered.add(rid)
                core.handle_request(packet.reply_to, body, now)
                if isinstance(body, Hold):
                    node.holds_asked.setdefault((packet.reply_to, body.id), []).append(
                        HoldAsked(body.keys, {k: (keys.state(k), keys.key_hash(k)
                                                  if k in keys else 0)
                                              for k, _ in body.keys}, self.wall_ms(node)))
            elif packet.kind is Kind.BROADCAST:
                core.handle_broadcast(body, now)
            else:
                core.handle_peer_reply(body, now)
        # The runtime's order: the pipeline's timer, then the core's.
        self._run_step(node, core, node.policy.tick(now))
        core.tick(now)
        doom = None if node.doom is None else CrashMode(node.doom)  # scripts set strings
        if doom is CrashMode.MIDBATCH:
            # Inputs consumed, nothing committed, nothing sent.
            self._die(node, doom)
            return
        out = core.take_outputs()
        persist = out.persist
        if persist is None and keys.notes:
            raise SimFailure(f"node {node.node_id} applied {keys.notes} and persisted nothing")
        step = node.policy.submit(persist, out.messages, now)
        if doom is CrashMode.COMMIT:
            doom = self._aim_commit_crash(node, step)
        messages = self._run_step(node, core, step, keys.notes,
                                  persist.rids if persist is not None else [])
        if messages is None:
            return  # died inside the commit
        if doom is CrashMode.COMMIT:
            self._die(node, doom)  # the commit returned (or there was none): send nothing
            return
        deadline = core.next_deadline()
        self.observer.batch_done(node, core, now, deadline)
        if doom is CrashMode.TORN:
            messages = messages[:self.rng.randint(0, len(messages))]
        for message in messages:
            self._emit(node, core, message)
        if doom is CrashMode.TORN:
            self._die(node, doom)
            return
        self._schedule_wake(node, min(deadline, node.policy.deadline()))

    def _aim_commit_crash(self, node: SimNode, step: Step) -> CrashMode | None:
        """A ``commit`` crash lands in the first batch that writes something, or after
        :data:`COMMIT_CRASH_WAIT` batches that wrote nothing (then right after one):
        arm the files to die at one of the commit's first storage operations (a write
        torn at a random byte; the fdatasync after it; a rotation's steps).  None while
        it waits.  Why: about four batches in five write nothing (heartbeats, replies),
        and dying after one of those is a clean crash: armed at the next batch, 1 crash
        in 96 of this mode landed inside a write (module docstring)."""
        if not step.commit and node.doom_waited < COMMIT_CRASH_WAIT:
            node.doom_waited += 1
            return None
        files = node.disk.files
        files.crash_at = files.ops + self.rng.randint(1, 3)
        files.torn_bytes = self.rng.randint(0, 64)
        return CrashMode.COMMIT

    def _run_step(self, node: SimNode, core: NodeCore, step: Step,
                  notes: list[Note] | None = None,
                  rids: list[RidEntry] | None = None) -> list[Message] | None:
        """Do what the policy says, as the runtime's pipeline does with a disk that
        returns at once: each commit, then the messages it releases (to send).  None if
        the node died inside a commit."""
        messages = step.send
        if step.commit is None and notes:
            node.deferred_notes += notes  # deferred (rule 3): they count once written
        while step.commit is not None:
            # Only the commit that carries this batch can start here: nothing else waits.
            # Every commit writes the deferred changes first (rule 4), their notes too.
            notes, node.deferred_notes = node.deferred_notes + (notes or []), []
            if not self._commit(node, core, step.commit, notes, rids or []):
                return None
            notes = rids = None
            step = node.policy.completed()
            messages += step.send
        return messages

    def write_deferred(self, node: SimNode) -> None:
        """Write ``node``'s deferred changes now."""
        if node.core is not None:
            self._run_step(node, node.core, node.policy.flush())

    def _commit(self, node: SimNode, core: NodeCore, persist: Persist,
                notes: list[Note], rids: list[RidEntry]) -> bool:
        """Commit; False if the process died inside (a ``commit`` crash)."""
        image = node.disk.current
        before = {key: image.state(key) for key in persist.states}
        try:
            node.disk.commit(persist)
        except Crash:
            self.stats["commits_interrupted"] += 1
            self._die(node, CrashMode.COMMIT, _InFlight(persist, notes, rids, before))
            return False
        self.observer.committed(node, core, persist, notes, rids, before)
        return True

    def _schedule_wake(self, node: SimNode, deadline: float) -> None:
        res = node.res_ms
        # The first instant at which the node's (coarse) clock reads >= deadline.
        wake = math.ceil(round((deadline - node.offset_s) * 1000.0, 6))
        wake = -(-wake // res) * res
        now = self.scheduler.now_ms
        if self.swarm.poll_cap_ms is not None:
            wake = min(wake, now + self.swarm.poll_cap_ms)
        wake = max(wake, now + 1)
        if wake != node.wake_at:
            node.wake_at = wake
            life, node_id = node.life, node.node_id
            self.scheduler.at(wake, _Wake(self, node_id, life))

    def _emit(self, node: SimNode, core: NodeCore, message: Message) -> None:
        src = node.node_id
        send = self.network.send
        if isinstance(message, ToClient):
            cid = message.client
            assert isinstance(cid, tuple)
            if cid[0] == "c":
                reply = cast(ClientReply, message.reply)
                self.observer.replying(node, core, reply)
                send(Packet(Kind.CLIENT_REPLY, src, client_endpoint(cid[1]), 0, reply))
            else:
                _, peer, life = cid
                if isinstance(message.reply, Holding):
                    pending = node.holds_asked.get((cid, message.reply.id))
                    asked = pending.pop(0) if pending else None
                    if not pending:
                        node.holds_asked.pop((cid, message.reply.id), None)
                    if asked is not None:
                        self.observer.holding(node, core, asked, message.reply)
                send(Packet(Kind.PEER_REPLY, src, peer, life, message.reply))
        elif isinstance(message, ToPeer):
            dst = self.nodes[message.peer]
            send(Packet(Kind.REQUEST, src, dst.node_id, dst.life, message.request,
                        ("p", src, node.life)))
        else:
            assert isinstance(message, Publish)
            for dst in self.nodes.values():
                if dst is not node:
                    send(Packet(Kind.BROADCAST, src, dst.node_id, dst.life, message.message))


@dataclass(frozen=True, slots=True)
class _InFlight:
    """The commit a crash interrupted: applied if the recovery finds it written."""

    persist: Persist
    notes: list[Note]
    rids: list[RidEntry]
    before: dict[str, dict[str, Record]]


@dataclass(slots=True)
class _Wake:
    """A node's timer (its next_deadline) falls due."""

    cluster: Cluster
    node_id: int
    life: int

    def __call__(self) -> None:
        self.cluster.woken(self.node_id, self.life)
