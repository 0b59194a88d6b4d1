"""The thin I/O shell around :class:`~zcounter.node.NodeCore`: zmq sockets, the clock,
SQLite, signals and logs.

One thread, one ``zmq.Poller`` loop (no asyncio: simpler to reason about, and pyzmq's
asyncio integration has had missed-wakeup bugs).  Each cycle:

1. wait until a socket is readable or the core's next timer is due;
2. drain every ready socket (up to ``max_batch`` messages each) into the core;
3. ``tick(now)``; take the outputs;
4. commit ``persist`` in one SQLite transaction (group commit), *then* send the batch's
   replies, answers, pushes, pulls and broadcasts.

Step 4's order is the durability guarantee: nothing that depends on a write leaves the
process before the write is on disk.  A failed commit stops the node (fail-stop) rather
than acknowledge what is not durable.
"""

from __future__ import annotations

import logging
import math
import signal
import sqlite3
import time
from pathlib import Path
from types import FrameType
from typing import cast

import zmq

from .config import ClusterConfig
from .errors import ConfigError, ProtocolError
from .node import NodeCore, Publish, ToClient, ToPeer
from .storage import Storage
from .wire import (
    MAX_PEER_MESSAGE_BYTES,
    PeerReply,
    decode_broadcast,
    decode_peer_reply,
    decode_request,
    encode_broadcast,
    encode_peer_reply,
    encode_peer_request,
    encode_reply,
    request_tag,
)

log = logging.getLogger("zcounter.node")

#: Upper bound on one poll, so a stop signal is noticed promptly.
MAX_POLL_S = 0.1
#: Plain-int socket flags: pyzmq's enum flags cost a Python-level ``Flag.__or__`` and
#: enum construction on every send/recv, measurable at tens of thousands of messages/s.
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE_NOBLOCK = int(zmq.SNDMORE) | int(zmq.NOBLOCK)
_RCVMORE = int(zmq.RCVMORE)


def _tune(sock: zmq.Socket[bytes]) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    # ZMTP heartbeats drop dead TCP connections (e.g. after a partition) so that zmq
    # reconnects instead of waiting on a half-open socket forever.
    sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
    # A connect whose SYNs are being dropped (a partition) would otherwise wait on the
    # kernel's SYN backoff (1, 3, 7, 15, 31 s ...) and notice the heal only at its next
    # retransmission; give up after 1 s and reconnect afresh instead.
    sock.setsockopt(zmq.CONNECT_TIMEOUT, 1000)


class NodeServer:
    """Runs one node until stopped.  ``run()`` returns the process exit code."""

    def __init__(self, config: ClusterConfig, node_id: int, data_dir: Path | None = None) -> None:
        self.config = config
        self.node_id = node_id
        self.address = config.node(node_id)
        self.data_dir = data_dir or config.default_data_dir(node_id)
        self._stop = False

    def stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        self._stop = True

    def _bind(self, sock: zmq.Socket[bytes], endpoint: str, field: str) -> None:
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            raise ConfigError(
                f"{self.config.source}: nodes.{self.node_id}.{field}: cannot bind {endpoint} "
                f"({exc.strerror})") from None

    def run(self) -> int:
        storage = Storage.open(self.data_dir, self.node_id)
        ctx = zmq.Context()
        sockets: list[zmq.Socket[bytes]] = []
        try:
            return self._serve(ctx, storage, sockets)
        finally:
            for sock in sockets:
                sock.close(linger=0)
            ctx.term()
            storage.close()

    def _serve(self, ctx: zmq.Context[zmq.Socket[bytes]], storage: Storage,
               sockets: list[zmq.Socket[bytes]]) -> int:
        settings = self.config.settings
        router = ctx.socket(zmq.ROUTER)
        sockets.append(router)
        _tune(router)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # Absurd sizes drop the sender's connection; sizes between the client limit and
        # this one get a readable error reply from the decoder instead.
        router.setsockopt(zmq.MAXMSGSIZE, MAX_PEER_MESSAGE_BYTES * 2)
        router.setsockopt(zmq.SNDHWM, 100_000)
        router.setsockopt(zmq.RCVHWM, 100_000)
        self._bind(router, self.address.router, "router")
        pub = ctx.socket(zmq.PUB)
        sockets.append(pub)
        _tune(pub)
        pub.setsockopt(zmq.SNDHWM, 100_000)
        self._bind(pub, self.address.pub, "pub")
        sub = ctx.socket(zmq.SUB)
        sockets.append(sub)
        _tune(sub)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        dealers: dict[int, zmq.Socket[bytes]] = {}
        peer_of: dict[zmq.Socket[bytes], int] = {}
        for peer in self.config.peers_of(self.node_id):
            sub.connect(self.config.nodes[peer].pub)
            dealer = ctx.socket(zmq.DEALER)
            sockets.append(dealer)
            _tune(dealer)
            # Queue only on live connections: a request to a dead peer fails fast and is
            # retried by the core's timers instead of piling up stale work.
            dealer.setsockopt(zmq.IMMEDIATE, 1)
            dealer.connect(self.config.nodes[peer].router)
            dealers[peer] = dealer
            peer_of[dealer] = peer

        now = time.monotonic()
        core = NodeCore(self.node_id, sorted(self.config.nodes), storage.incarnation, settings,
                        now, slots=storage.load_slots(), rids=storage.load_rids(),
                        fresh=storage.created)
        poller = zmq.Poller()
        for sock in sockets:
            if sock is not pub:
                poller.register(sock, zmq.POLLIN)
        log.info("node %d ready: router %s, pub %s, slot %s (%s), count %d, data %s",
                 self.node_id, self.address.router, self.address.pub, core.slot,
                 "new incarnation" if storage.created else "restored", core.value,
                 storage.path)
        stats = core.stats
        stats.update(peer_messages_sent=0, peer_bytes_sent=0, bad_requests=0,
                     replies_undeliverable=0, send_queue_full=0)
        max_batch = settings.max_batch
        while not self._stop:
            timeout_ms = max(0.0, min(core.next_deadline() - time.monotonic(), MAX_POLL_S)) * 1000
            # Round up: pyzmq truncates to whole ms, and a 0 ms poll for a timer due in
            # 0.4 ms would spin.
            ready = poller.poll(math.ceil(timeout_ms))
            now = time.monotonic()
            for sock, _ in ready:
                recv = sock.recv
                more = sock.getsockopt
                for _ in range(max_batch):
                    # Frame by frame with int flags: pyzmq's recv_multipart costs ~2.5x
                    # as much per message (enum flag arithmetic, list building).
                    try:
                        first = recv(_NOBLOCK)
                    except zmq.Again:
                        break
                    frames = [first]
                    while more(_RCVMORE):
                        frames.append(recv(_NOBLOCK))
                    if sock is router:
                        self._on_router(core, frames, now)
                    elif sock is sub:
                        try:
                            broadcast = decode_broadcast(_one_frame(frames))
                        except ProtocolError as exc:
                            stats["dropped_peer_messages"] += 1
                            log.debug("dropped broadcast: %s", exc)
                            continue
                        core.handle_broadcast(broadcast, now)
                    else:
                        try:
                            reply = decode_peer_reply(_one_frame(frames))
                        except ProtocolError as exc:
                            stats["dropped_peer_messages"] += 1
                            log.debug("dropped reply from node %d: %s", peer_of[sock], exc)
                            continue
                        core.handle_peer_reply(reply, now)
            core.tick(now)
            out = core.take_outputs()
            if out.persist:
                try:
                    storage.commit(out.persist)
                except sqlite3.Error as exc:
                    log.error("node %d: cannot commit to %s (%s); stopping without "
                              "acknowledging the batch", self.node_id, storage.path, exc)
                    return 1
            for line in out.logs:
                log.warning(line) if line.startswith("WARNING") else log.info(line)
            for message in out.messages:
                try:
                    if isinstance(message, ToClient):
                        body = (encode_peer_reply(message.reply)
                                if isinstance(message.reply, PeerReply)
                                else encode_reply(message.reply))
                        # Two sends with int flags instead of send_multipart (half the
                        # cost); a ROUTER message is atomic, so once the routing frame
                        # is accepted the body frame cannot fail on the HWM.
                        router.send(cast(bytes, message.client), _SNDMORE_NOBLOCK)
                        router.send(body, _NOBLOCK)
                    elif isinstance(message, Publish):
                        body = encode_broadcast(message.message)
                        pub.send(body, _NOBLOCK)
                        stats["peer_messages_sent"] += len(dealers)
                        stats["peer_bytes_sent"] += len(body) * len(dealers)
                    elif isinstance(message, ToPeer):
                        body = encode_peer_request(message.request)
                        dealers[message.peer].send(body, _NOBLOCK)
                        stats["peer_messages_sent"] += 1
                        stats["peer_bytes_sent"] += len(body)
                except zmq.Again:
                    stats["send_queue_full"] += 1
                except zmq.ZMQError as exc:
                    if exc.errno != zmq.EHOSTUNREACH:
                        raise
                    stats["replies_undeliverable"] += 1
        # Shutdown: whatever the last cycle produced is already committed; say goodbye.
        log.info("node %d stopping (count %d)", self.node_id, core.value)
        return 0

    def _on_router(self, core: NodeCore, frames: list[bytes], now: float) -> None:
        client, body = frames[0], frames[1:]
        try:
            request = decode_request(body)
        except ProtocolError as exc:
            core.stats["bad_requests"] += 1
            core.refuse(client, request_tag(body[0]) if len(body) == 1 else None, str(exc))
            return
        core.handle_request(client, request, now)


def _one_frame(frames: list[bytes]) -> bytes:
    if len(frames) != 1:
        raise ProtocolError(f"expected 1 frame, got {len(frames)}")
    return frames[0]


def install_signal_handlers(server: NodeServer) -> None:
    signal.signal(signal.SIGTERM, server.stop)
    signal.signal(signal.SIGINT, server.stop)
