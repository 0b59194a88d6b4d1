"""What the core produced, encoded and sent: the last step of a poll cycle, run only
with messages the commit pipeline released (their batch is durable)."""

from __future__ import annotations

import logging
import time
from typing import cast

import zmq

from ..protocol.codec import (
    encode_broadcast,
    encode_peer_reply,
    encode_peer_request,
    encode_reply,
)
from ..protocol.messages import Delta, Holding, RidPage, StatesReply, SyncDiff, SyncStates
from ..protocol.outputs import Message, Publish, ToClient, ToPeer
from ..protocol.resp import RespClient
from ..protocol.stats import NodeStats
from .metrics import NodeMetrics
from .resp import RespDoor
from .sockets import NOBLOCK, SNDMORE_NOBLOCK

log = logging.getLogger("zcounter.node")

#: At most one log line per this long for sends that failed otherwise than EAGAIN or
#: EHOSTUNREACH.
SEND_FAILED_LOG_S = 60.0
_PEER_REPLY_TYPES = (StatesReply, SyncDiff, SyncStates, RidPage, Holding)


class Outbound:
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
                self._failed(message, exc, now)

    def _failed(self, message: Message, exc: zmq.ZMQError, now: float) -> None:
        """A send failed otherwise than on a full queue: count it, and log the rare
        kinds (at most once per :data:`SEND_FAILED_LOG_S`: a flood of them would
        otherwise be one line per message)."""
        stats = self.stats
        if exc.errno == zmq.EHOSTUNREACH:
            stats.replies_undeliverable += 1
            return
        stats.send_failed += 1
        if now >= self._next_log:
            self._next_log = now + SEND_FAILED_LOG_S
            log.warning("dropped a %s: send failed (%s); %d so far, logged at most "
                        "once per %.0f s", type(message).__name__, exc.strerror,
                        stats.send_failed, SEND_FAILED_LOG_S)
