"""Every bound on what input may make a node allocate or do, in one place (issue 19).

TigerBeetle's rule: every allocation and every unit of work driven by a connection is
bounded *before* it is made.  Each door imports its limits from here; the ones a user
might need to change are also fields of :class:`zcounter.config.Settings` (``[settings]``
in the cluster file), whose defaults are the constants below.  README.md ("Limits") and
WRITEUP.md ("Hostile input") list them with what each door does at each limit.

Sections, one per door: keep each door's limits in its own section.
"""

from __future__ import annotations

# ---------------------------------------------------------------- file descriptors


# ---------------------------------------------------------------- native door (ROUTER)

#: Frames after the routing id the node reads of one message.  A request is one frame;
#: a few more still get a readable ``bad_request`` answer, and a message of more frames
#: is read to its end and dropped unanswered (``oversized_messages``), so a client cannot
#: make the loop build a list of its frames.
MAX_FRAMES_PER_MESSAGE = 4
#: Held native requests - ``confirm`` waits (Redis's WAIT), writes waiting for their
#: ``wait`` level, reads waiting for their ``read`` level or a session's catch-up - per
#: connection (routing id; a RESP connection counts as one).  Above the 1,000 keys one
#: RESP ``WAIT`` confirms at most (``MAX_WAIT_KEYS``) ...
MAX_HELD_PER_CONNECTION = 2_000
#: ... and per node.  Past either, the request is refused at once with ``busy``
#: (``held_refused``), before anything is applied.  Every tick scans the held requests
#: per peer: 300,000 held confirms on one connection took node 1 ~7 s to take in and
#: ~0.4-0.9 s per tick, until libzmq aborted (issue 19); 20,000 cost a tick 33 ms
#: (median; max 56 ms), 2,000 6 ms (``docs/measurements/held_tick.py``).
MAX_HELD_PER_NODE = 20_000
#: Bytes a connection may have sent that the node has not read - inside a message that
#: never ends, or complete messages queued faster than the node reads them - before it
#: is cut (``connections_cut``, :mod:`zcounter.runtime.watch`): for a client, eight of
#: its largest requests (1 MiB) ...
MAX_UNREAD_CLIENT_BYTES = 8 * 1024 * 1024
#: ... and, once it sent a message from a node, a peer's largest (16 MiB) and half
#: again.  Bytes on the wire: libzmq holds up to ~21x that for 1-byte frames, which the
#: watch's memory trigger (32 MiB of RSS growth) cuts short.
MAX_UNREAD_PEER_BYTES = 24 * 1024 * 1024
#: Replies queued for one connection (libzmq counts its high-water mark in messages, not
#: bytes).  A client that does not read loses the replies past it (``send_queue_full``):
#: they are dropped, never retried.  The largest window any zcounter tool keeps in flight
#: is 512 (``bin/bench --scale`` fill).
ROUTER_SNDHWM = 10_000
#: Complete messages libzmq queues from one connection: no high-water mark.  At one,
#: libzmq stops reading the connection, and a client that then resets it while a ZMTP
#: PING of its own is still in libzmq's input buffer aborts the node (libzmq #4364;
#: ``tests/integration/test_zmq_doors.py``).  ``MAX_UNREAD_CLIENT_BYTES`` bounds the
#: queue instead.
ROUTER_RCVHWM = 0
#: TCP keepalive on accepted connections (seconds idle, between probes, probes): a client
#: that vanished without a FIN is dropped after ~5 s idle.  With ``ROUTER_MAX_RETRANSMIT_MS``
#: it stands in for ZMTP heartbeats, which the ROUTER must not send (see
#: ``zcounter.runtime.sockets.tune_router``).
ROUTER_KEEPALIVE = (2, 1, 3)
#: Replies unacknowledged this long (TCP_USER_TIMEOUT) drop the connection.
ROUTER_MAX_RETRANSMIT_MS = 30_000

# ---------------------------------------------------------------- peers (SUB, DEALER)


# ---------------------------------------------------------------- RESP door


# ---------------------------------------------------------------- metrics door


# ---------------------------------------------------------------- log noise
