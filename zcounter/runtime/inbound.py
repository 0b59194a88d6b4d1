"""The read phase of a poll cycle: messages from the ROUTER (clients and peers'
requests), the SUB (peers' broadcasts) and the DEALERs (peers' replies), bounded,
checked, decoded and handed to the core.

This is the hot path: one call per ready socket per cycle, then a loop over its
messages with everything it needs in locals.  Frames are read one by one with int
flags: pyzmq's ``recv_multipart`` costs ~2.5x as much per message (enum flag
arithmetic, list building).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from time import time_ns

import zmq

from ..errors import ProtocolError
from ..limits import MAX_FRAMES_PER_MESSAGE
from ..protocol.codec import (
    Forbidden,
    decode_broadcast,
    decode_peer_reply,
    decode_request,
    request_tag,
)
from ..protocol.messages import PEER_REQUESTS, ErrorCode
from ..protocol.node import NodeCore
from .auth import Guard
from .metrics import NodeMetrics
from .sockets import NOBLOCK
from .watch import ConnectionWatch

log = logging.getLogger("zcounter.node")

#: ``zmq.Frame.get`` option naming the descriptor a message came from, as a plain int.
_SRCFD = int(zmq.SRCFD)


class Inbound:
    """Reads one ready socket at a time, up to ``max_batch`` messages, into the core."""

    def __init__(self, core: NodeCore, guard: Guard, router: zmq.Socket[bytes],
                 sub: zmq.Socket[bytes], peer_of: dict[zmq.Socket[bytes], int],
                 max_batch: int, watch: ConnectionWatch,
                 metrics: NodeMetrics | None) -> None:
        self.core = core
        self.guard = guard
        self.router = router
        self.sub = sub
        self.peer_of = peer_of
        self.max_batch = max_batch
        #: The connection watch's evidence of what each ROUTER connection delivered.
        self.delivered = watch.delivered if watch.enabled else None
        self.metrics = metrics

    def read_router(self, now: float) -> tuple[int, bool]:
        """Read the ROUTER: how many messages, and whether it was read until empty."""
        core = self.core
        stats = core.stats
        recv = self.router.recv
        delivered = self.delivered
        on_request = self._on_request
        set_wall = core.set_wall
        received = 0
        for _ in range(self.max_batch):
            if core.batch_full:
                break  # the rest is read next cycle (zmq's poll is level-triggered)
            # The wall clock again for every request: a read must not answer as of a
            # time before it arrived.  A loaded node reads for 100 ms and more in one
            # batch, and ttl probes sent 50 ms past a key's deadline found it alive on
            # a peer with 4-54 ms left (bin/bench --ratelimit, 3 in 600).  ~0.2 us per
            # request.  Stamps of states read in the batch stay no later than the read.
            set_wall(time_ns() // 1_000_000)
            # Frames as zmq.Frame, whose ``more`` is read from the message itself:
            # getsockopt(RCVMORE) turns its int into an enum on every call, 1.4 us per
            # frame against 0.6 us for a Frame and its bytes (timeit), and 2.3 % of node
            # 1's samples under uniform window-256 load.  The routing frame carries the
            # connection's properties (User-Id, Peer-Address) that roles are checked on.
            try:
                ident = frame = recv(NOBLOCK, copy=False)
            except zmq.Again:
                return received, True
            received += 1
            body, frames, size = _rest(recv, frame)
            if delivered is not None:  # the connection watch's evidence
                delivered(ident.get(_SRCFD), ident, size, frames)
            if frames > MAX_FRAMES_PER_MESSAGE:
                # No answer: the reply would be work done for a message that cannot
                # be a request.
                stats.oversized_messages += 1
                continue
            on_request(core, ident, body, frames, now)
        return received, False

    def _on_request(self, core: NodeCore, ident: zmq.Frame, body: bytes, frames: int,
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

    def read_peer(self, sock: zmq.Socket[bytes], now: float) -> int:
        """Read the SUB (broadcasts) or a DEALER (a peer's replies): how many messages.
        A peer's message is one frame; anything else is dropped and counted."""
        core = self.core
        stats = core.stats
        recv = sock.recv
        is_sub = sock is self.sub
        peer = self.peer_of.get(sock)
        received = 0
        for _ in range(self.max_batch):
            if core.batch_full:
                break
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
            if is_sub:
                try:
                    broadcast = decode_broadcast(first)
                except ProtocolError as exc:
                    stats.dropped_peer_messages += 1
                    log.debug("dropped broadcast: %s", exc)
                    continue
                core.handle_broadcast(broadcast, now)
                continue
            stats.peer_reply_bytes_received += len(first)
            try:
                reply = decode_peer_reply(first)
            except ProtocolError as exc:
                stats.dropped_peer_messages += 1
                log.debug("dropped reply from node %s: %s", peer, exc)
                continue
            if reply.node != peer:
                # Request ids are one sequence for all peers: without this, whatever
                # answers on node 2's DEALER could answer, as node 3, a request sent to
                # node 3.
                stats.dropped_peer_messages += 1
                log.debug("dropped reply on node %s's connection claiming node %d", peer,
                          reply.node)
                continue
            core.handle_peer_reply(reply, now)
        return received


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
