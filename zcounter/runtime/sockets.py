"""Socket options shared by the node and the client, with the reason for each."""

from __future__ import annotations

import zmq

#: Plain-int socket flags: pyzmq's enum flags cost a Python-level ``Flag.__or__`` and
#: enum construction on every send/recv, measurable at tens of thousands of messages/s.
NOBLOCK = int(zmq.NOBLOCK)
SNDMORE_NOBLOCK = int(zmq.SNDMORE) | int(zmq.NOBLOCK)


def tune(sock: zmq.Socket[bytes]) -> None:
    """Options every zcounter socket gets."""
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
