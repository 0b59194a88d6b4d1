"""The nemesis: faults at random moments, and the same faults as methods for scripts.

Every ``swarm.nemesis_ms`` or so (exponential gaps) it picks one of the actions the
seed's swarm allows: isolate a node, split the cluster in two, cut random one-way
links, heal the partitions, crash a node (in one of the swarm's crash modes, restarted
after a random downtime, now and then from a wiped disk), or pause a node (SIGSTOP: it
keeps its memory, its inputs queue, its clock runs on).  Clocks are set once per node
by :class:`~.cluster.Cluster` (offsets and resolution from the swarm).

:meth:`Nemesis.heal_all` starts the liveness phase: partitions healed, paused nodes
resumed, crashed nodes restarted, and no more faults.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

from .cluster import Cluster, SimNode
from .codes import CrashMode, Fault
from .network import Network
from .scheduler import Scheduler
from .swarm import Swarm

DOWNTIMES_MS = (50, 300, 1500, 4000)
#: A long downtime (swarm ``long_downtimes``): this many ``gc_grace_s`` and more, so that
#: the node's peers collect, and forget the graves of, keys it still holds.
LONG_DOWNTIME_GRACES = 2
#: How old a replayed message is at least (simulated ms): a reorder, a late duplicate,
#: one older than ``max_message_age_s`` and ``gc_grace_s`` as the swarm draws them.
REPLAY_AGES_MS = (100, 1000, 4000, 8000)
PAUSES_MS = (100, 500, 2000)
#: How often a planned restart looks again whether a doomed node has died yet.
RESTART_POLL_MS = 10


class Nemesis:
    def __init__(self, swarm: Swarm, rng: random.Random, scheduler: Scheduler,
                 cluster: Cluster, network: Network, stats: Counter[str],
                 trace: Callable[[str], None] | None) -> None:
        self.swarm = swarm
        self.rng = rng
        self.scheduler = scheduler
        self.cluster = cluster
        self.network = network
        self.stats = stats
        self.trace = trace
        self.stopped = False
        #: Crashed nodes that restart from a wiped disk (when the heal restarts them).
        self._wipe_on_restart: set[int] = set()
        self._pause_token: dict[int, int] = {}
        self.wipes_planned = 0

    def start(self) -> None:
        if self.swarm.nemesis_ms:
            self.scheduler.after(self.rng.randint(0, self.swarm.nemesis_ms), self._tick)

    def _log(self, text: str) -> None:
        if self.trace is not None:
            self.trace(text)

    # ------------------------------------------------------------------ random faults

    def _tick(self) -> None:
        if self.stopped:
            return
        s, rng = self.swarm, self.rng
        actions: list[Fault] = []
        if s.partitions and len(self.cluster.ids) > 1:
            actions += [Fault.ISOLATE, Fault.SPLIT, Fault.ONEWAY, Fault.HEAL, Fault.HEAL]
        if s.crash_modes:
            actions += [Fault.CRASH, Fault.CRASH]
        if s.pauses:
            actions.append(Fault.PAUSE)
        if s.replays and len(self.cluster.ids) > 1:
            actions += [Fault.REPLAY, Fault.REPLAY]
        if actions:
            self._act(rng.choice(actions))
        self.scheduler.after(1 + int(rng.expovariate(1.0 / s.nemesis_ms)), self._tick)

    def _act(self, action: Fault) -> None:
        rng, ids = self.rng, self.cluster.ids
        if action is Fault.HEAL:
            self.heal_partitions()
        elif action is Fault.ISOLATE:
            self.isolate(rng.choice(ids))
        elif action is Fault.SPLIT:
            order = ids[:]
            rng.shuffle(order)
            self.split(order[:rng.randint(1, len(ids) - 1)])
        elif action is Fault.ONEWAY:
            pairs = [(a, b) for a in ids for b in ids if a != b]
            self.cut(rng.sample(pairs, rng.randint(1, len(pairs) - 1)))
        elif action is Fault.CRASH:
            up = [n for n in self.cluster.nodes.values() if n.up]
            if up:
                node = rng.choice(up)
                wipe = self.wipes_planned < self.swarm.max_wipes and rng.random() < 0.3
                self.crash(node.node_id, rng.choice(self.swarm.crash_modes),
                           restart_after_ms=self._downtime_ms(), wipe=wipe)
        elif action is Fault.REPLAY:
            self.replay(rng.choice(REPLAY_AGES_MS))
        else:  # Fault.PAUSE
            up = [n for n in self.cluster.nodes.values() if n.up and not n.paused]
            if up:
                self.pause(rng.choice(up).node_id, rng.randint(1, rng.choice(PAUSES_MS)))

    # ------------------------------------------------------------------ faults (scripts)

    def cut(self, pairs: list[tuple[int, int]]) -> None:
        """Replace the partition by these one-way cuts: (a, b) loses a's messages to b."""
        self.network.cut(pairs)
        self.stats["partitions"] += 1
        self._log(f"PARTITION cuts {sorted(pairs)}")

    def isolate(self, node_id: int) -> None:
        ids = self.cluster.ids
        self.cut([(a, b) for a in ids for b in ids if a != b and node_id in (a, b)])

    def split(self, side: list[int]) -> None:
        ids, inside = self.cluster.ids, set(side)
        self.cut([(a, b) for a in ids for b in ids if (a in inside) != (b in inside)])

    def heal_partitions(self) -> None:
        if self.network.cuts:
            self.stats["heals"] += 1
            self._log("HEAL partitions")
        self.network.heal()

    def crash(self, node_id: int, mode: CrashMode | str = CrashMode.CLEAN,
              restart_after_ms: int | None = None, wipe: bool = False) -> None:
        """Crash a node; restart it ``restart_after_ms`` later (if given), from a wiped
        disk if ``wipe``.  ``torn``, ``midbatch`` and ``commit`` crashes happen at its next
        batch."""
        node = self.cluster.nodes[node_id]
        if not node.up:
            return
        if wipe:
            self.wipes_planned += 1
            self._wipe_on_restart.add(node_id)
        # A doomed node dies at its next batch: that bumps its token once.
        token = node.crash_token + 1
        self.cluster.crash(node, CrashMode(mode))
        if restart_after_ms is not None:
            self.scheduler.after(restart_after_ms, lambda: self._restart_after(node, token))

    def _restart_after(self, node: SimNode, token: int) -> None:
        if self.stopped:
            return
        if node.up and node.doom == CrashMode.COMMIT and node.crash_token == token - 1:
            # A ``commit`` crash waits for a batch that writes (up to COMMIT_CRASH_WAIT
            # batches): the restart follows it, not the plan.
            self.scheduler.after(RESTART_POLL_MS, lambda: self._restart_after(node, token))
        elif not node.up and node.crash_token == token:
            self.restart(node.node_id)

    def restart(self, node_id: int, wipe: bool | None = None) -> None:
        """Restart a crashed node (``wipe``: None restarts it as its crash planned)."""
        if wipe is None:
            wipe = node_id in self._wipe_on_restart
        self._wipe_on_restart.discard(node_id)
        self.cluster.restart(self.cluster.nodes[node_id], wipe)

    def _downtime_ms(self) -> int:
        rng = self.rng
        if self.swarm.long_downtimes and rng.random() < 0.25:
            grace_ms = int(1000 * self.cluster.settings.gc_grace_s)
            return LONG_DOWNTIME_GRACES * grace_ms + rng.randint(0, grace_ms)
        return rng.randint(1, rng.choice(DOWNTIMES_MS))

    def replay(self, min_age_ms: int) -> None:
        """Deliver again one node-to-node message at least ``min_age_ms`` old."""
        packet = self.network.replay(lambda n: self.cluster.nodes[n].life, min_age_ms)
        if packet is not None:
            self._log(f"REPLAY to node {packet.dst}, at least {min_age_ms}ms old: "
                      f"{type(packet.body).__name__}")

    def pause(self, node_id: int, duration_ms: int) -> None:
        node = self.cluster.nodes[node_id]
        token = self._pause_token.get(node_id, 0) + 1
        self._pause_token[node_id] = token
        self.cluster.pause(node)

        def resume() -> None:
            if self._pause_token.get(node_id) == token:
                self.cluster.resume(node)
        self.scheduler.after(duration_ms, resume)

    # ------------------------------------------------------------------ the heal

    def heal_all(self) -> None:
        """No more faults: heal partitions, resume, restart; the network turns reliable."""
        self.stopped = True
        self.network.reliable = True
        self.heal_partitions()
        for node_id in self.cluster.ids:
            node = self.cluster.nodes[node_id]
            self._pause_token[node_id] = self._pause_token.get(node_id, 0) + 1
            if node.up:
                node.doom = None
                self.cluster.resume(node)
            else:
                self.restart(node_id)
