"""The thin I/O shell around :class:`~zcounter.protocol.node.NodeCore`: zmq sockets, the
clock, SQLite, signals and logs.

One thread, one ``zmq.Poller`` loop (no asyncio: simpler to reason about, and pyzmq's
asyncio integration has had missed-wakeup bugs).  Each cycle:

1. wait until a socket is readable or the core's next timer is due;
2. drain every ready socket (up to ``max_batch`` messages each) into the core;
3. ``tick(now)``; take the outputs;
4. hand ``persist`` and the messages to the commit pipeline (:mod:`.committer`): the
   batch is written to the log as one record (group commit) by a committer thread while
   the loop goes on with the next batch, and its replies, answers, requests and
   broadcasts are sent when that commit (and every earlier one) has returned.

The Redis-protocol door (:mod:`.resp`) is part of the same loop: its listening socket and
connections are file descriptors in the same poller, its commands become the same core
requests, and its replies are the core's outputs of step 4 - so they too leave only after
the commit.  Metrics (:mod:`.metrics`) are plain counters kept here, copied out only when
a scrape asks.

The parts, one job each: :mod:`.endpoints` opens the ZeroMQ sockets, :mod:`.loop` runs
the cycles, :mod:`.inbound` reads and decodes (step 2), :mod:`.outbound` encodes and
sends (step 4); this module starts and stops the node around them.

Step 4's order is the durability guarantee: nothing that depends on a write leaves the
process before the write is on disk.  A failed commit stops the node (fail-stop) rather
than acknowledge what is not durable.
"""

from __future__ import annotations

import logging
import secrets
import signal
import sys
import time
from pathlib import Path
from types import FrameType

import zmq

from .._version import __version__
from ..config import ClusterConfig
from ..limits import MAX_UNREAD_CLIENT_BYTES, MAX_UNREAD_PEER_BYTES, PUB_SPARE_CONNECTIONS
from ..model.keyspace import Keyspace
from ..protocol.node import NodeCore
from .auth import Guard
from .committer import SWITCH_INTERVAL_S, Pipeline
from .endpoints import NodeSockets, open_sockets
from .fdbudget import FdBudget, NofileLimit, open_fds, plan, raise_nofile_limit
from .loop import PollLoop, Signals
from .metrics import MetricsServer, NodeMetrics, start_metrics
from .resp import RespDoor, make_door
from .storage import Storage
from .watch import ConnectionWatch

log = logging.getLogger("zcounter.node")


class NodeServer:
    """Runs one node until stopped.  ``run()`` returns the process exit code."""

    def __init__(self, config: ClusterConfig, node_id: int, data_dir: Path | None = None,
                 secret_key: Path | None = None) -> None:
        self.config = config
        self.node_id = node_id
        self.address = config.node(node_id)
        self.data_dir = data_dir or config.default_data_dir(node_id)
        # Key problems stop the node before it touches its data (exit 2).
        self.guard = Guard(config, node_id, secret_key)
        self.signals = Signals()
        #: Set when ``[nodes.N] metrics`` is (request timing costs a dict entry each).
        self.metrics: NodeMetrics | None = None
        self.nofile: NofileLimit | None = None

    def stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        self.signals.stop = True

    def reload(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        """SIGHUP: re-read the clients directory at the next cycle."""
        self.signals.reload = True

    def run(self) -> int:
        # Before anything is opened: the descriptor budget starts from the raised limit.
        self.nofile = raise_nofile_limit()
        storage = Storage.open(self.data_dir, self.node_id)
        ctx = zmq.Context()
        opened: list[zmq.Socket[bytes]] = []
        try:
            self.guard.start(ctx)
            return self._serve(ctx, storage, opened)
        finally:
            for sock in opened:
                sock.close(linger=0)
            self.guard.stop()
            ctx.term()
            storage.close()

    def _load(self, storage: Storage, now: float) -> NodeCore:
        started = time.monotonic()
        keyspace = Keyspace()
        keyspace.load(storage.load_slot_names(), storage.load_states(),
                      storage.load_high_water())
        core = NodeCore(self.node_id, sorted(self.config.nodes), storage.incarnation,
                        secrets.token_hex(6), self.config.settings, now, keyspace=keyspace,
                        rids=storage.load_rids(), fresh=storage.created,
                        republish=storage.recovered_keys)
        log.info("node %d loaded %d keys and %d request ids in %.2fs (%d log records "
                 "replayed)", self.node_id, len(keyspace), len(core.rids),
                 time.monotonic() - started, storage.recovered_records)
        return core

    def _serve(self, ctx: zmq.Context[zmq.Socket[bytes]], storage: Storage,
               opened: list[zmq.Socket[bytes]]) -> int:
        """Open the sockets, load the core, share the descriptors, open the doors, and
        run the loop; close the doors after it."""
        sockets = open_sockets(ctx, self.config, self.node_id, self.guard, opened)
        core = self._load(storage, time.monotonic())
        watch = ConnectionWatch(MAX_UNREAD_CLIENT_BYTES, MAX_UNREAD_PEER_BYTES, core.stats,
                                self.guard.is_peer, self.guard.curve)
        for cap in sockets.caps.values():
            if cap.door == "native":
                cap.observer = watch  # a socket has one monitor: the cap's tells the watch
        pipeline = Pipeline(storage)
        poller = zmq.Poller()
        sockets.register(poller)
        poller.register(pipeline.wake_fd, zmq.POLLIN)
        budget = self._budget(sockets)
        door = make_door(self.config, self.node_id, __version__, budget.resp_clients)
        metrics_server: MetricsServer | None = None
        try:
            if door is not None:
                door.register(poller)
            if self.address.metrics is not None:
                metrics_server = self._start_metrics(pipeline, door, budget)
                if self.metrics is not None:
                    core.collector.observe_delay = self.metrics.collection_delay.observe
            log.info("node %d ready: router %s, pub %s, resp %s, metrics %s, slot %s (%s), "
                     "%d keys, data %s, security %s", self.node_id, self.address.router,
                     self.address.pub, door.endpoint if door else "off",
                     self.address.metrics or "off", core.slot_name,
                     "new incarnation" if storage.created else "restored",
                     len(core.keys), storage.path, self.config.security.mode.value)
            loop = PollLoop(self.node_id, core, sockets, self.guard, poller, pipeline, watch,
                            self.config.settings.max_batch, self.signals, door, self.metrics)
            switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(SWITCH_INTERVAL_S)
            try:
                return loop.run()
            finally:
                sys.setswitchinterval(switch_interval)
                pipeline.close()
                watch.close()
        finally:
            if door is not None:
                door.close()
            if metrics_server is not None:
                metrics_server.close()

    def _budget(self, sockets: NodeSockets) -> FdBudget:
        """Share the descriptors left once storage and every ZeroMQ socket are open
        between the doors, and cap the bound sockets' connections to their shares."""
        nofile = self.nofile or raise_nofile_limit()
        settings = self.config.settings
        peers = len(self.config.peers_of(self.node_id))
        budget = plan(nofile.soft, open_fds(), peers,
                      settings.resp_max_clients if self.address.resp else None,
                      settings.metrics_max_clients if self.address.metrics else None)
        log.info("node %d: %s%s", self.node_id, budget.describe(),
                 f" (soft limit raised from {nofile.before})" if nofile.soft > nofile.before
                 else f" (cannot raise it: {nofile.error})" if nofile.error else "")
        for cap in sockets.caps.values():
            # Peers' DEALERs come to the ROUTER and their SUBs to the PUB (their room
            # is in the per-peer reserve); anyone else to the PUB is not served.
            cap.limit = (budget.native_room + 2 * peers if cap.door == "native"
                         else 2 * peers + PUB_SPARE_CONNECTIONS)
        return budget

    def _start_metrics(self, pipeline: Pipeline, door: RespDoor | None,
                       budget: FdBudget) -> MetricsServer | None:
        """``/metrics``: the figures the loop keeps, and its HTTP door."""
        metrics = self.metrics = NodeMetrics(__version__)
        metrics_server = start_metrics(self.config, self.node_id, metrics,
                                       budget.metrics_clients)
        histogram = metrics.commit_duration

        def committed(seconds: float) -> None:
            histogram.observe(seconds)
            metrics.commits += 1
        pipeline.on_commit = committed
        if door is not None:
            door.door.observe = metrics.request_duration.observe
        return metrics_server


def install_signal_handlers(server: NodeServer) -> None:
    signal.signal(signal.SIGTERM, server.stop)
    signal.signal(signal.SIGINT, server.stop)
    signal.signal(signal.SIGHUP, server.reload)
