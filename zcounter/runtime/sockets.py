"""Socket options shared by the node and the client, with the reason for each."""

from __future__ import annotations

import zmq

from .. import limits

#: Plain-int socket flags: pyzmq's enum flags cost a Python-level ``Flag.__or__`` and
#: enum construction on every send/recv, measurable at tens of thousands of messages/s.
NOBLOCK = int(zmq.NOBLOCK)
SNDMORE_NOBLOCK = int(zmq.SNDMORE) | int(zmq.NOBLOCK)


def tune(sock: zmq.Socket[bytes]) -> None:
    """Options every zcounter socket that connects (SUB, DEALER) gets."""
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


def tune_router(sock: zmq.Socket[bytes], max_message_bytes: int) -> None:
    """Options of the node's ROUTER, the door every client and peer connects to.

    libzmq 4.3.5 aborts the process (``Assertion failed: !_io_error
    (src/stream_engine_base.cpp:310)``, libzmq issue #4364, open) when it calls
    ``out_event`` on a connection that failed while its input was stopped - stopped
    because the connection's queue was at RCVHWM.  Two calls reach it: the socket's own
    ZMTP heartbeat timer, and the PONG to a PING that was still in the connection's input
    buffer, decoded when the queue drains.  300,000 pipelined ``confirm`` requests from a
    DEALER that then closed aborted node 1 of three in its second try (the first); a raw
    client interleaving PINGs with 100,000 requests and resetting its connection, in its
    first (the second; ``tests/integration/test_zmq_doors.py``).  So the ROUTER has no
    RCVHWM - libzmq never stops reading a connection, and the connection watch
    (:mod:`.watch`) bounds each one's queue instead - and sends no heartbeats; dead
    client connections are found by TCP keepalive and TCP_USER_TIMEOUT, which act in
    the kernel.
    """
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.HEARTBEAT_IVL, 0)
    idle, interval, count = limits.ROUTER_KEEPALIVE
    sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
    sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, idle)
    sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, interval)
    sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, count)
    # Replies to a vanished client that never get acknowledged (keepalive only probes
    # an idle connection) give up after this long instead of ~15 minutes of retries.
    sock.setsockopt(zmq.TCP_MAXRT, limits.ROUTER_MAX_RETRANSMIT_MS)
    # Unroutable replies fail (EHOSTUNREACH) instead of vanishing, and a full queue
    # fails (EAGAIN) instead of dropping silently: both are counted by the sender.
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    # A frame larger than anything legal drops the sender's connection unread.
    sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
    sock.setsockopt(zmq.SNDHWM, limits.ROUTER_SNDHWM)
    sock.setsockopt(zmq.RCVHWM, limits.ROUTER_RCVHWM)
