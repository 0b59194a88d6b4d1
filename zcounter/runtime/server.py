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

Step 4's order is the durability guarantee: nothing that depends on a write leaves the
process before the write is on disk.  A failed commit stops the node (fail-stop) rather
than acknowledge what is not durable.
"""

from __future__ import annotations

import logging
import math
import secrets
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import cast

import zmq

from .._version import __version__
from ..config import ClusterConfig
from ..errors import ConfigError, ProtocolError
from ..limits import (
    HANDSHAKE_TIMEOUT_MS,
    MAX_FRAMES_PER_MESSAGE,
    MAX_UNREAD_CLIENT_BYTES,
    MAX_UNREAD_PEER_BYTES,
    PUB_SPARE_CONNECTIONS,
)
from ..model.keyspace import Keyspace
from ..protocol.codec import (
    MAX_PEER_MESSAGE_BYTES,
    Forbidden,
    decode_broadcast,
    decode_peer_reply,
    decode_request,
    encode_broadcast,
    encode_peer_reply,
    encode_peer_request,
    encode_reply,
    request_tag,
)
from ..protocol.messages import (
    PEER_REQUESTS,
    Delta,
    ErrorCode,
    RidPage,
    StatesReply,
    SyncDiff,
    SyncStates,
)
from ..protocol.node import NodeCore
from ..protocol.outputs import LogLevel, Message, Publish, ToClient, ToPeer
from ..protocol.resp import RespClient
from ..protocol.stats import NodeStats
from .auth import CLIENT_KEYS_RELOAD_S, Guard, Redial
from .committer import SWITCH_INTERVAL_S, Pipeline
from .fdbudget import NofileLimit, open_fds, plan, raise_nofile_limit
from .metrics import MetricsServer, NodeMetrics, start_metrics
from .resp import RespDoor, make_door
from .sockets import NOBLOCK, SNDMORE_NOBLOCK, tune, tune_router
from .storage import Storage, StorageError
from .watch import ConnectionWatch
from .zmqcap import AcceptCap

log = logging.getLogger("zcounter.node")

#: Upper bound on one poll, so a stop signal is noticed promptly.
MAX_POLL_S = 0.1
#: At most one log line per this long for sends that failed otherwise than EAGAIN or
#: EHOSTUNREACH.
SEND_FAILED_LOG_S = 60.0
#: ``zmq.Frame.get`` option naming the descriptor a message came from, as a plain int.
_SRCFD = int(zmq.SRCFD)
_PEER_REPLY_TYPES = (StatesReply, SyncDiff, SyncStates, RidPage)
_LOG_LEVELS = {LogLevel.DEBUG: logging.DEBUG, LogLevel.INFO: logging.INFO,
               LogLevel.WARNING: logging.WARNING}


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
        self._stop = False
        self._reload = False
        #: Set when ``[nodes.N] metrics`` is (request timing costs a dict entry each).
        self.metrics: NodeMetrics | None = None
        self.nofile: NofileLimit | None = None
        #: The connection caps of the bound sockets (ROUTER, PUB), by monitor socket.
        self.caps: dict[zmq.Socket[bytes], AcceptCap] = {}

    def stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        self._stop = True

    def reload(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        """SIGHUP: re-read the clients directory at the next cycle."""
        self._reload = True

    def _bind(self, sock: zmq.Socket[bytes], endpoint: str, field: str) -> None:
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            raise ConfigError(
                f"{self.config.source}: nodes.{self.node_id}.{field}: cannot bind {endpoint} "
                f"({exc.strerror})") from None

    def run(self) -> int:
        # Before anything is opened: the descriptor budget starts from the raised limit.
        self.nofile = raise_nofile_limit()
        storage = Storage.open(self.data_dir, self.node_id)
        ctx = zmq.Context()
        sockets: list[zmq.Socket[bytes]] = []
        try:
            self.guard.start(ctx)
            return self._serve(ctx, storage, sockets)
        finally:
            for sock in sockets:
                sock.close(linger=0)
            self.guard.stop()
            ctx.term()
            storage.close()

    def _load(self, storage: Storage, now: float) -> NodeCore:
        started = time.monotonic()
        keyspace = Keyspace()
        keyspace.load(storage.load_slot_names(), storage.load_states())
        core = NodeCore(self.node_id, sorted(self.config.nodes), storage.incarnation,
                        secrets.token_hex(6), self.config.settings, now, keyspace=keyspace,
                        rids=storage.load_rids(), fresh=storage.created,
                        republish=storage.recovered_keys)
        log.info("node %d loaded %d keys and %d request ids in %.2fs (%d log records "
                 "replayed)", self.node_id, len(keyspace), len(core.rids),
                 time.monotonic() - started, storage.recovered_records)
        return core

    def _serve(self, ctx: zmq.Context[zmq.Socket[bytes]], storage: Storage,
               sockets: list[zmq.Socket[bytes]]) -> int:
        guard = self.guard
        router = ctx.socket(zmq.ROUTER)
        sockets.append(router)
        # Frames past the peer limit drop the sender's connection; sizes between the
        # client limit and it get a readable error reply from the decoder instead.
        tune_router(router, MAX_PEER_MESSAGE_BYTES)
        guard.serve(router, peers_only=False)
        # Before the bind: libzmq copies a socket's options into its listener then.
        router.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_TIMEOUT_MS)
        self._bind(router, self.address.router, "router")
        pub = ctx.socket(zmq.PUB)
        sockets.append(pub)
        tune(pub)
        guard.serve(pub, peers_only=True)
        pub.setsockopt(zmq.SNDHWM, 100_000)
        pub.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_TIMEOUT_MS)
        self._bind(pub, self.address.pub, "pub")
        sub = ctx.socket(zmq.SUB)
        sockets.append(sub)
        tune(sub)
        # A broadcast is one frame of at most the peer limit; a larger frame drops the
        # publisher's connection before it is read (zmq reconnects).
        sub.setsockopt(zmq.MAXMSGSIZE, MAX_PEER_MESSAGE_BYTES)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        dealers: dict[int, zmq.Socket[bytes]] = {}
        peer_of: dict[zmq.Socket[bytes], int] = {}
        peers = self.config.peers_of(self.node_id)
        redial = Redial(guard)
        redial.watch(sub, {peer: self.config.nodes[peer].pub for peer in peers})
        for peer in peers:
            guard.connect_to(sub, peer)
            sub.connect(self.config.nodes[peer].pub)
            dealer = ctx.socket(zmq.DEALER)
            sockets.append(dealer)
            tune(dealer)
            dealer.setsockopt(zmq.MAXMSGSIZE, MAX_PEER_MESSAGE_BYTES)  # a peer's reply
            guard.connect_to(dealer, peer)
            # Queue only on live connections: a request to a dead peer fails fast and is
            # retried by the core's timers instead of piling up stale work.
            dealer.setsockopt(zmq.IMMEDIATE, 1)
            redial.watch(dealer, {peer: self.config.nodes[peer].router})
            dealer.connect(self.config.nodes[peer].router)
            dealers[peer] = dealer
            peer_of[dealer] = peer
        # Closed with the others (before the context ends), and polled with them.
        sockets += list(redial.monitors)
        # libzmq accepts without a cap: count and shed (limits set with the budget).
        for bound, name in ((router, "native"), (pub, "pub")):
            cap = AcceptCap(bound, name, 1)
            self.caps[cap.monitor] = cap
            sockets.append(cap.monitor)

        core = self._load(storage, time.monotonic())
        watch = ConnectionWatch(MAX_UNREAD_CLIENT_BYTES, MAX_UNREAD_PEER_BYTES, core.stats,
                                self.guard.is_peer, self.guard.curve)
        for cap in self.caps.values():
            if cap.door == "native":
                cap.observer = watch  # a socket has one monitor: the cap's tells the watch
        pipeline = Pipeline(storage)
        poller = zmq.Poller()
        for sock in sockets:
            if sock is not pub:
                poller.register(sock, zmq.POLLIN)
        poller.register(pipeline.wake_fd, zmq.POLLIN)
        # Storage and every ZeroMQ socket are open: what is left is shared by the doors.
        nofile = self.nofile or raise_nofile_limit()
        settings = self.config.settings
        budget = plan(nofile.soft, open_fds(), len(peers),
                      settings.resp_max_clients if self.address.resp else None,
                      settings.metrics_max_clients if self.address.metrics else None)
        log.info("node %d: %s%s", self.node_id, budget.describe(),
                 f" (soft limit raised from {nofile.before})" if nofile.soft > nofile.before
                 else f" (cannot raise it: {nofile.error})" if nofile.error else "")
        for cap in self.caps.values():
            # Peers' DEALERs come to the ROUTER and their SUBs to the PUB (their room
            # is in the per-peer reserve); anyone else to the PUB is not served.
            cap.limit = (budget.native_room + 2 * len(peers) if cap.door == "native"
                         else 2 * len(peers) + PUB_SPARE_CONNECTIONS)
        door = make_door(self.config, self.node_id, __version__, budget.resp_clients)
        metrics_server: MetricsServer | None = None
        try:
            if door is not None:
                door.register(poller)
            if self.address.metrics is not None:
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
            log.info("node %d ready: router %s, pub %s, resp %s, metrics %s, slot %s (%s), "
                     "%d keys, data %s, security %s", self.node_id, self.address.router,
                     self.address.pub, door.endpoint if door else "off",
                     self.address.metrics or "off", core.slot_name,
                     "new incarnation" if storage.created else "restored",
                     len(core.keys), storage.path, self.config.security.mode.value)
            out = _Out(router, pub, dealers, core.stats, door, self.metrics)
            switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(SWITCH_INTERVAL_S)
            try:
                return self._loop(core, poller, pipeline, router, sub, peer_of, out, door,
                                  redial, watch)
            finally:
                sys.setswitchinterval(switch_interval)
                pipeline.close()
                watch.close()
        finally:
            if door is not None:
                door.close()
            if metrics_server is not None:
                metrics_server.close()

    def _loop(self, core: NodeCore, poller: zmq.Poller, pipeline: Pipeline,
              router: zmq.Socket[bytes], sub: zmq.Socket[bytes],
              peer_of: dict[zmq.Socket[bytes], int], out: _Out,
              door: RespDoor | None = None, redial: Redial | None = None,
              watch: ConnectionWatch | None = None) -> int:
        """The poll loop (module docstring); returns the exit code."""
        guard = self.guard
        delivered = watch.delivered if watch is not None and watch.enabled else None
        monitors = redial.monitors if redial is not None else {}
        caps = self.caps
        stats = core.stats
        metrics = self.metrics
        max_batch = self.config.settings.max_batch
        wake = pipeline.wake_fd
        next_reload = time.monotonic() + CLIENT_KEYS_RELOAD_S
        while not self._stop:
            deadline = min(core.next_deadline(), pipeline.deadline(),
                           watch.deadline if watch is not None else math.inf)
            if door is not None:
                deadline = min(deadline, door.deadline)
            timeout_ms = max(0.0, min(deadline - time.monotonic(), MAX_POLL_S)) * 1000
            if door is not None and door.busy:
                timeout_ms = 0.0  # requests of the door wait for this cycle
            # Round up: pyzmq truncates to whole ms, and a 0 ms poll for a timer due in
            # 0.4 ms would spin.
            ready = poller.poll(math.ceil(timeout_ms))
            now = time.monotonic()
            received = 0
            drained = True  # the ROUTER has no complete message queued (it is not ready)
            if door is not None:
                door.start_cycle()
            for sock, events in ready:
                if sock == wake:
                    try:
                        out.send(pipeline.completed())
                    except StorageError as exc:
                        return self._commit_failed(pipeline, exc)
                    continue
                if type(sock) is int:
                    if door is not None:
                        door.on_event(sock, events, core, now)
                    continue
                if sock in caps:
                    caps[sock].on_event(now)
                    continue
                if sock in monitors:
                    assert redial is not None
                    redial.on_event(sock, now)
                    continue
                assert isinstance(sock, zmq.Socket)
                recv = sock.recv
                if sock is router:
                    drained = False  # until a read finds it empty
                for _ in range(max_batch):
                    if core.batch_full:
                        break  # the rest is read next cycle (zmq's poll is level-triggered)
                    # Frame by frame with int flags: pyzmq's recv_multipart costs ~2.5x
                    # as much per message (enum flag arithmetic, list building).  Frames
                    # as zmq.Frame, whose ``more`` is read from the message itself:
                    # getsockopt(RCVMORE) turns its int into an enum on every call, 1.4
                    # us per frame against 0.6 us for a Frame and its bytes (timeit), and
                    # 2.3 % of node 1's samples under uniform window-256 load.
                    if sock is router:
                        # The routing frame carries the connection's properties
                        # (User-Id, Peer-Address) that roles are checked on.
                        try:
                            ident = frame = recv(NOBLOCK, copy=False)
                        except zmq.Again:
                            drained = True
                            break
                        received += 1
                        body, frames, size = _rest(recv, frame)
                        if delivered is not None:  # the connection watch's evidence
                            delivered(ident.get(_SRCFD), ident, size, frames)
                        if frames > MAX_FRAMES_PER_MESSAGE:
                            # No answer: the reply would be work done for a message
                            # that cannot be a request.
                            stats.oversized_messages += 1
                            continue
                        self._on_router(core, ident, body, frames, now)
                        continue
                    try:
                        frame = recv(NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    received += 1
                    first = frame.bytes
                    frames = 1
                    if frame.more:
                        frames += _rest(recv, frame)[1]
                    stats.peer_bytes_received += len(first)
                    if frames != 1:
                        stats.dropped_peer_messages += 1
                        if frames > MAX_FRAMES_PER_MESSAGE:
                            stats.oversized_messages += 1
                        continue
                    if sock is sub:
                        try:
                            broadcast = decode_broadcast(first)
                        except ProtocolError as exc:
                            stats.dropped_peer_messages += 1
                            log.debug("dropped broadcast: %s", exc)
                            continue
                        core.handle_broadcast(broadcast, now)
                    else:
                        stats.peer_reply_bytes_received += len(first)
                        try:
                            reply = decode_peer_reply(first)
                        except ProtocolError as exc:
                            stats.dropped_peer_messages += 1
                            log.debug("dropped reply from node %d: %s", peer_of[sock], exc)
                            continue
                        if reply.node != peer_of[sock]:
                            # Request ids are one sequence for all peers: without this,
                            # whatever answers on node 2's DEALER could answer, as node
                            # 3, a request sent to node 3.
                            stats.dropped_peer_messages += 1
                            log.debug("dropped reply on node %d's connection claiming "
                                      "node %d", peer_of[sock], reply.node)
                            continue
                        core.handle_peer_reply(reply, now)
            if guard.curve and (self._reload or now >= next_reload):
                guard.reload_clients(reason="SIGHUP" if self._reload else "periodic")
                self._reload = False
                next_reload = now + CLIENT_KEYS_RELOAD_S
            if redial is not None:
                redial.tick(now)
            if watch is not None:
                watch.check(now, drained)
            if door is not None:
                door.pump(core, now)
            if metrics is not None:
                if received:
                    metrics.batch_messages.observe(received)
                if metrics.wanted:
                    caps_now: dict[str, int] = {}
                    for cap in caps.values():
                        caps_now[f"{cap.door}_max_clients"] = cap.limit
                        caps_now[f"{cap.door}_rejected"] = sum(cap.rejected.values())
                    metrics.publish(core, now, door.snapshot if door else None, caps_now)
            pipeline.tick(now)
            core.tick(now)
            batch = core.take_outputs()
            for line in batch.logs:
                log.log(_LOG_LEVELS[line.level], line.text)
            # Persist before send: the batch's messages leave only once it (and every
            # batch before it) is durable - the pipeline holds them until then.
            persist = batch.persist
            if (persist is not None and persist.sync and pipeline.idle
                    and not poller.poll(0)):
                try:
                    out.send(pipeline.commit_here(persist, batch.messages))
                except StorageError as exc:
                    return self._commit_failed(pipeline, exc)
            else:
                out.send(pipeline.submit(persist, batch.messages, now))
        # Shutdown: let the commits in flight finish and their replies go out.
        try:
            out.send(pipeline.drain())
        except StorageError as exc:
            log.error("node %d: cannot commit to %s (%s)", self.node_id,
                      pipeline.storage.path, exc)
            return 1
        log.info("node %d stopping (%d keys)", self.node_id, len(core.keys))
        return 0

    def _commit_failed(self, pipeline: Pipeline, exc: StorageError) -> int:
        """A commit failed, in either thread: stop (exit 1) without sending its replies
        (fail-stop, WRITEUP section 4.6)."""
        log.error("node %d: cannot commit to %s (%s); stopping without acknowledging the "
                  "batch", self.node_id, pipeline.storage.path, exc)
        return 1

    def _on_router(self, core: NodeCore, ident: zmq.Frame, body: bytes, frames: int,
                   now: float) -> None:
        """One message from the ROUTER: its first frame after the routing id
        (``body``) and how many frames followed the routing id."""
        client = ident.bytes
        metrics = self.metrics
        if frames != 1:
            core.stats.bad_requests += 1
            core.refuse(client, None, ErrorCode.BAD_REQUEST,
                        f"expected 1 frame after the routing id, got {frames}")
            return
        guard = self.guard
        try:
            # The role is checked before decoding, by the codec, only where it matters:
            # a frame past the client bound, or a peer operation (codec.decode_request).
            request = decode_request(body, lambda: guard.is_peer(ident))
        except Forbidden as exc:
            core.stats.forbidden += 1
            core.refuse(client, None, ErrorCode.FORBIDDEN, str(exc), "peer")
            return
        except ProtocolError as exc:
            core.stats.bad_requests += 1
            core.refuse(client, request_tag(body), ErrorCode.BAD_REQUEST, str(exc))
            return
        if not isinstance(request, PEER_REQUESTS):
            if guard.revoked and not guard.is_authorized(ident):
                core.stats.forbidden += 1
                core.refuse(client, request.id, ErrorCode.FORBIDDEN,
                            "this connection's key is no longer authorized (it was removed "
                            "from security.clients)", "client")
                return
            if metrics is not None:
                metrics.started[(client, request.id)] = now
        core.handle_request(client, request, now)


class _Out:
    """Encodes and sends what the core produced (after its batch is durable).

    Every send is non-blocking and tried once.  A full queue (EAGAIN: the client does not
    read, ``SNDHWM`` replies are waiting) or a client gone (EHOSTUNREACH, ROUTER_MANDATORY)
    drops that message and counts it; any other send error drops it too, counted as
    ``send_failed`` and logged at most once per :data:`SEND_FAILED_LOG_S`.  A message is
    never retried in a loop: what libzmq refused, a retry would only refuse again.
    """

    def __init__(self, router: zmq.Socket[bytes], pub: zmq.Socket[bytes],
                 dealers: dict[int, zmq.Socket[bytes]], stats: NodeStats,
                 door: RespDoor | None = None, metrics: NodeMetrics | None = None) -> None:
        self.router = router
        self.pub = pub
        self.dealers = dealers
        self.stats = stats
        self.door = door
        self.metrics = metrics
        self._next_log = 0.0

    def send(self, messages: list[Message]) -> None:
        if not messages:
            return
        router, stats, door, metrics = self.router, self.stats, self.door, self.metrics
        fanout = len(self.dealers)
        now = time.monotonic()
        started = metrics.started if metrics is not None else None
        for message in messages:
            try:
                if isinstance(message, ToClient):
                    reply = message.reply
                    client = message.client
                    if type(client) is RespClient:
                        if door is not None:
                            door.deliver(client, reply, now)  # type: ignore[arg-type]
                        continue
                    if started is not None:
                        at = started.pop((client, reply.id), None)
                        if at is not None:
                            metrics.request_duration.observe(now - at)  # type: ignore[union-attr]
                    body = (encode_peer_reply(reply) if isinstance(reply, _PEER_REPLY_TYPES)
                            else encode_reply(reply))
                    # Two sends with int flags instead of send_multipart (half the cost);
                    # a ROUTER message is atomic, so once the routing frame is accepted
                    # the body frame cannot fail on the HWM.
                    router.send(cast(bytes, message.client), SNDMORE_NOBLOCK)
                    router.send(body, NOBLOCK)
                elif isinstance(message, Publish):
                    body = encode_broadcast(message.message)
                    self.pub.send(body, NOBLOCK)
                    if metrics is not None and type(message.message) is Delta:
                        metrics.delta_sent(message.message.seq, len(body))
                    stats.peer_messages_sent += fanout
                    stats.peer_bytes_sent += len(body) * fanout
                elif isinstance(message, ToPeer):
                    body = encode_peer_request(message.request)
                    self.dealers[message.peer].send(body, NOBLOCK)
                    stats.peer_messages_sent += 1
                    stats.peer_bytes_sent += len(body)
            except zmq.Again:
                stats.send_queue_full += 1
            except zmq.ZMQError as exc:
                if exc.errno == zmq.EHOSTUNREACH:
                    stats.replies_undeliverable += 1
                    continue
                stats.send_failed += 1
                if now >= self._next_log:
                    self._next_log = now + SEND_FAILED_LOG_S
                    log.warning("dropped a %s: send failed (%s); %d so far, logged at most "
                                "once per %.0f s", type(message).__name__, exc.strerror,
                                stats.send_failed, SEND_FAILED_LOG_S)


def _rest(recv: Callable[..., zmq.Frame], frame: zmq.Frame) -> tuple[bytes, int, int]:
    """Read the rest of the message whose frame ``frame`` was just read: the bytes of
    the next frame (empty if none), how many frames followed ``frame`` and their total
    size.

    Frame by frame, and only the first one copied: the others are counted and released
    at once, so a message of a million frames costs the loop no list and no copies.
    libzmq hands over a multipart message only once its last frame has arrived, with
    every frame already in memory (``docs/measurements/zmtp_frames.py``): the bound on
    a message that never ends is the connection watch (:mod:`.watch`), not this loop.
    A message is atomic, so once its first frame was read the rest cannot raise Again.
    """
    if not frame.more:
        return b"", 0, 0
    frame = recv(NOBLOCK, copy=False)
    first = frame.bytes
    count, size = 1, len(first)
    while frame.more:
        frame = recv(NOBLOCK, copy=False)
        count += 1
        size += len(frame)
    return first, count, size


def install_signal_handlers(server: NodeServer) -> None:
    signal.signal(signal.SIGTERM, server.stop)
    signal.signal(signal.SIGINT, server.stop)
    signal.signal(signal.SIGHUP, server.reload)
