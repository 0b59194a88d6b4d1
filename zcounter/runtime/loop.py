"""The node's poll loop: one cycle per batch, in phases (:mod:`.server` says why one
thread and one ``zmq.Poller``).

1. :meth:`PollLoop._timeout_ms`: sleep in ``poll`` until a socket is readable or the
   first timer is due (the core's, the pipeline's deferred write, the connection
   watch's, the RESP door's accept pause), at most :data:`MAX_POLL_S`;
2. :meth:`PollLoop._read`: drain every ready socket (up to ``max_batch`` messages each:
   :mod:`.inbound`), and the RESP door's descriptors, monitors and the committer's wake
   pipe (whose released messages are sent at once);
3. :meth:`PollLoop._housekeep`: reload client keys, redial, check the connection
   watch, pump the RESP door;
4. :meth:`PollLoop._observe`: batch size, and a metrics snapshot if a scrape asked;
5. :meth:`PollLoop._commit`: the core's timers, its outputs handed to the commit
   pipeline (:mod:`.committer`); what it releases is sent (:mod:`.outbound`).

A failed commit stops the loop (exit 1) without sending what depended on it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import zmq

from ..protocol.node import NodeCore
from ..protocol.outputs import LogLevel
from .auth import CLIENT_KEYS_RELOAD_S, Guard
from .committer import Pipeline
from .endpoints import NodeSockets
from .inbound import Inbound
from .metrics import NodeMetrics
from .outbound import Outbound
from .resp import RespDoor
from .storage import StorageError
from .watch import ConnectionWatch

log = logging.getLogger("zcounter.node")

#: Upper bound on one poll, so a stop signal is noticed promptly.
MAX_POLL_S = 0.1
_LOG_LEVELS = {LogLevel.DEBUG: logging.DEBUG, LogLevel.INFO: logging.INFO,
               LogLevel.WARNING: logging.WARNING}


@dataclass
class Signals:
    """What the signal handlers ask of the loop, read once per cycle."""

    #: SIGTERM, SIGINT: finish the commits in flight and stop.
    stop: bool = False
    #: SIGHUP: re-read the clients directory at the next cycle.
    reload: bool = False


class PollLoop:
    """Runs the cycles of one node until :attr:`Signals.stop`.  Loop thread only."""

    def __init__(self, node_id: int, core: NodeCore, sockets: NodeSockets, guard: Guard,
                 poller: zmq.Poller, pipeline: Pipeline, watch: ConnectionWatch,
                 max_batch: int, signals: Signals, door: RespDoor | None = None,
                 metrics: NodeMetrics | None = None) -> None:
        self.node_id = node_id
        self.core = core
        self.sockets = sockets
        self.guard = guard
        self.poller = poller
        self.pipeline = pipeline
        self.watch = watch
        self.signals = signals
        self.door = door
        self.metrics = metrics
        self.inbound = Inbound(core, guard, sockets.router, sockets.sub, sockets.peer_of,
                               max_batch, watch, metrics)
        self.out = Outbound(sockets.router, sockets.pub, sockets.dealers, core.stats, door,
                            metrics)
        self._next_reload = time.monotonic() + CLIENT_KEYS_RELOAD_S

    def run(self) -> int:
        """The cycles, then the shutdown; returns the exit code."""
        signals = self.signals
        poller = self.poller
        door = self.door
        metrics = self.metrics
        try:
            while not signals.stop:
                ready = poller.poll(self._timeout_ms())
                now = time.monotonic()
                # The batch's wall clock (expiry, issue 21), before any of its inputs.
                self.core.set_wall(time.time_ns() // 1_000_000)
                if door is not None:
                    door.start_cycle()
                received, drained = self._read(ready, now)
                self._housekeep(now, drained)
                if metrics is not None:
                    self._observe(metrics, received, now)
                self._commit(now)
        except StorageError as exc:
            # Only the pipeline raises it (a commit in either thread failed): stop
            # without sending its replies (fail-stop, WRITEUP section 4.6).
            log.error("node %d: cannot commit to %s (%s); stopping without acknowledging "
                      "the batch", self.node_id, self.pipeline.storage.path, exc)
            return 1
        return self._shutdown()

    def _timeout_ms(self) -> int:
        """How long ``poll`` may sleep: until the first timer, at most MAX_POLL_S."""
        door = self.door
        deadline = min(self.core.next_deadline(), self.pipeline.deadline(),
                       self.watch.deadline)
        if door is not None:
            deadline = min(deadline, door.deadline)
        timeout_ms = max(0.0, min(deadline - time.monotonic(), MAX_POLL_S)) * 1000
        if door is not None and door.busy:
            timeout_ms = 0.0  # requests of the door wait for this cycle
        # Round up: pyzmq truncates to whole ms, and a 0 ms poll for a timer due in
        # 0.4 ms would spin.
        return math.ceil(timeout_ms)

    def _read(self, ready: list[tuple[zmq.Socket[bytes] | int, int]],
              now: float) -> tuple[int, bool]:
        """Step 2: how many messages were read, and whether the ROUTER has no complete
        message queued (True when it was not ready, or was read until empty)."""
        inbound = self.inbound
        router = self.sockets.router
        caps = self.sockets.caps
        monitors = self.sockets.redial.monitors
        wake = self.pipeline.wake_fd
        received = 0
        drained = True
        set_wall = self.core.set_wall
        for sock, events in ready:
            # Each socket's messages read at their own time, not the cycle's first
            # socket's (the ROUTER refreshes it per request: .inbound).
            set_wall(time.time_ns() // 1_000_000)
            if sock == wake:
                self.out.send(self.pipeline.completed())
                continue
            if type(sock) is int:
                if self.door is not None:
                    self.door.on_event(sock, events, self.core, now)
                continue
            assert isinstance(sock, zmq.Socket)
            if sock in caps:
                caps[sock].on_event(now)
            elif sock in monitors:
                self.sockets.redial.on_event(sock, now)
            elif sock is router:
                count, drained = inbound.read_router(now)
                received += count
            else:
                received += inbound.read_peer(sock, now)
        return received, drained

    def _housekeep(self, now: float, drained: bool) -> None:
        """Step 3: what runs once per cycle whatever was read."""
        guard = self.guard
        signals = self.signals
        if guard.curve and (signals.reload or now >= self._next_reload):
            guard.reload_clients(reason="SIGHUP" if signals.reload else "periodic")
            signals.reload = False
            self._next_reload = now + CLIENT_KEYS_RELOAD_S
        self.sockets.redial.tick(now)
        self.watch.check(now, drained)
        if self.door is not None:
            self.core.set_wall(time.time_ns() // 1_000_000)  # RESP commands read now
            self.door.pump(self.core, now)

    def _observe(self, metrics: NodeMetrics, received: int, now: float) -> None:
        """Step 4 (metrics served): the batch's size; a snapshot if a scrape waits."""
        if received:
            metrics.batch_messages.observe(received)
        if metrics.wanted:
            caps_now: dict[str, int] = {}
            for cap in self.sockets.caps.values():
                caps_now[f"{cap.door}_max_clients"] = cap.limit
                caps_now[f"{cap.door}_rejected"] = sum(cap.rejected.values())
            door = self.door
            metrics.publish(self.core, now, door.snapshot if door else None, caps_now)

    def _commit(self, now: float) -> None:
        """Step 5: timers, then the batch's outputs to the commit pipeline."""
        pipeline = self.pipeline
        core = self.core
        pipeline.tick(now)
        core.tick(now)
        batch = core.take_outputs()
        for line in batch.logs:
            log.log(_LOG_LEVELS[line.level], line.text)
        # Persist before send: the batch's messages leave only once it (and every batch
        # before it) is durable - the pipeline holds them until then.  A batch that must
        # be synced, with nothing in flight and no input waiting, is committed here
        # (Pipeline.commit_here says why).
        persist = batch.persist
        if (persist is not None and persist.sync and pipeline.idle
                and not self.poller.poll(0)):
            self.out.send(pipeline.commit_here(persist, batch.messages))
        else:
            self.out.send(pipeline.submit(persist, batch.messages, now))

    def _shutdown(self) -> int:
        """Let the commits in flight finish and their replies go out."""
        try:
            self.out.send(self.pipeline.drain())
        except StorageError as exc:
            log.error("node %d: cannot commit to %s (%s)", self.node_id,
                      self.pipeline.storage.path, exc)
            return 1
        log.info("node %d stopping (%d keys)", self.node_id, len(self.core.keys))
        return 0
