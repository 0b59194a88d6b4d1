"""The connection watch: bound what one connection to the ROUTER can make libzmq hold.

Two things a connection can make libzmq queue, unseen by the node:

* *an unfinished message.*  libzmq delivers a multipart message only once its last
  frame has arrived; until then every frame sits in the connection's queue, bounded by
  neither ``MAXMSGSIZE`` (one frame) nor ``RCVHWM`` (complete messages).  One raw TCP
  client sending frames flagged MORE, never a last one, grew a node by the bytes it sent
  (65,536-byte frames: 1.59 GB after 5 s) or ~21 times more (1-byte frames: 74 MiB
  sent, 1.56 GB; ``docs/measurements/zmtp_frames.py``).
* *more complete messages than the node reads.*  The ROUTER's ``RCVHWM`` would bound
  those, but a queue at its high-water mark is what lets a client abort the node: libzmq
  stops reading that connection, and if the client then resets it while a ZMTP PING it
  sent still sits in libzmq's input buffer, draining the queue decodes the PING and
  answers it on the failed connection - ``Assertion failed: !_io_error
  (src/stream_engine_base.cpp:310)`` (``tests/integration/test_zmq_doors.py``, libzmq
  issue #4364).  So the ROUTER's ``RCVHWM`` is 0 (libzmq never stops reading) and the
  watch bounds the queue instead.

libzmq 4.3.5 has no option for either, and a ROUTER cannot drop one connection.  So the
node watches the TCP connections themselves.  The ROUTER's monitor (read by its
:class:`~.zmqcap.AcceptCap`: a socket has one monitor) reports each accepted
connection's file descriptor; every message read names the descriptor it came from
(``ZMQ_SRCFD``) and is credited with its size on the wire.  Every
``WATCH_CHECK_INTERVAL_S``, and at once whenever the node's RSS grew by
``WATCH_RSS_TRIGGER_BYTES`` since the last check (a ~3.5 us read of ``/proc/self/statm``
per cycle), the watch reads each connection's received byte count from the kernel
(``TCP_INFO``) and cuts a connection

* that delivered no message since the last check while the kernel received more than
  its limit from it since its last message (*stuck* inside one);
* that delivered messages, but whose bytes received and not yet read (received minus
  credited since the last time the node had read everything queued) passed its limit
  (*flooding*); or
* at a check the RSS triggered, the most stuck or flooding one, if past
  ``WATCH_MIN_BLAME_BYTES`` (libzmq keeps 64 bytes per frame: 1-byte frames cost ~21x
  the bytes sent).

The limit is ``client_limit``, or ``peer_limit`` once the connection delivered a message
from a node (``Guard.is_peer``).  Cutting is ``shutdown(2)`` of the socket: libzmq sees
the connection fail and frees its queue; the client may reconnect.  Counted as
``connections_cut``, logged at most once per :data:`LOG_INTERVAL_S`.

The descriptors belong to libzmq: the watch never closes one, and it shuts one down only
after checking that it is still the connection it accepted (same local and remote
address), since libzmq may have closed and reused the number before its event arrives.
Linux only (``TCP_INFO``'s ``tcpi_bytes_received``, Linux 4.1+); elsewhere it is off.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass

import zmq

from ..limits import WATCH_CHECK_INTERVAL_S, WATCH_MIN_BLAME_BYTES, WATCH_RSS_TRIGGER_BYTES
from ..protocol.stats import NodeStats

log = logging.getLogger("zcounter.node")

#: At most one log line per this long, however many connections are cut.
LOG_INTERVAL_S = 60.0

_TCP_INFO = 11
#: Offset of ``tcpi_bytes_received`` (u64, right after ``tcpi_bytes_acked`` at 120) in
#: Linux's ``struct tcp_info`` (include/uapi/linux/tcp.h; checked against a socket that
#: received 123,457 bytes).
_BYTES_RECEIVED_AT = 128
_TCP_INFO_LEN = 136
_SHUT_RDWR = 2
_SOCKADDR_LEN = 128


#: Bytes a ZMTP frame costs on the wire beyond its body: flags and an 8-byte size (a
#: short frame's is 1 byte: 7 bytes over-credited) ...
FRAME_OVERHEAD = 9
#: ... and in ``curve`` mode, where each frame travels in a MESSAGE command (name, nonce,
#: MAC and flags: 33 more bytes).
CURVE_FRAME_OVERHEAD = FRAME_OVERHEAD + 33


@dataclass(slots=True)
class _Conn:
    #: (local, remote) address bytes at accept time: who this descriptor was.
    identity: tuple[bytes, bytes]
    #: Kernel's received byte count at the check after its last message (stuck rule).
    mark: int = 0
    #: Kernel's received byte count when the node last held nothing of it (flood rule) ...
    base: int = 0
    #: ... and the wire bytes of the messages the node read from it since.
    credited: int = 0
    #: It delivered a message from a node: the peer limit applies.
    peer: bool = False


class _Libc:
    """The three system calls the watch needs on a descriptor it does not own."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._getsockopt = libc.getsockopt
        self._shutdown = libc.shutdown
        self._getsockname = libc.getsockname
        self._getpeername = libc.getpeername
        self._info = ctypes.create_string_buffer(_TCP_INFO_LEN)
        self._info_len = ctypes.c_uint32(_TCP_INFO_LEN)

    def bytes_received(self, fd: int) -> int | None:
        self._info_len.value = _TCP_INFO_LEN
        if self._getsockopt(fd, socket.IPPROTO_TCP, _TCP_INFO, self._info,
                            ctypes.byref(self._info_len)) != 0:
            return None
        if self._info_len.value < _BYTES_RECEIVED_AT + 8:
            return None  # a kernel older than 4.1
        value: int = struct.unpack_from("=Q", self._info.raw, _BYTES_RECEIVED_AT)[0]
        return value

    def identity(self, fd: int) -> tuple[bytes, bytes] | None:
        out = []
        for call in (self._getsockname, self._getpeername):
            buf = ctypes.create_string_buffer(_SOCKADDR_LEN)
            size = ctypes.c_uint32(_SOCKADDR_LEN)
            if call(fd, buf, ctypes.byref(size)) != 0:
                return None
            out.append(buf.raw[:size.value])
        return out[0], out[1]

    def shutdown(self, fd: int) -> bool:
        return bool(self._shutdown(fd, _SHUT_RDWR) == 0)


class ConnectionWatch:
    """Cuts ROUTER connections stuck inside a message or flooding it (module docstring).
    Call :meth:`accepted` and :meth:`closed` from the ROUTER's monitor,
    :meth:`delivered` for every message read and :meth:`check` each cycle, saying
    whether the ROUTER was read until empty; poll no longer than :attr:`deadline`."""

    def __init__(self, client_limit: int, peer_limit: int, stats: NodeStats,
                 is_peer: Callable[[zmq.Frame], bool], curve: bool = False) -> None:
        self.client_limit = client_limit
        self.peer_limit = peer_limit
        self.stats = stats
        self.is_peer = is_peer
        self.overhead = CURVE_FRAME_OVERHEAD if curve else FRAME_OVERHEAD
        self.enabled = sys.platform.startswith("linux")
        self._libc = _Libc() if self.enabled else None
        self._conns: dict[int, _Conn] = {}
        #: Descriptors that delivered a message since the last check.
        self.fresh: set[int] = set()
        self.deadline = 0.0 if self.enabled else math.inf
        self._next_log = 0.0
        self._statm = open("/proc/self/statm", "rb", buffering=0) if self.enabled else None  # noqa: SIM115
        self._page = os.sysconf("SC_PAGE_SIZE") if self.enabled else 0
        self._rss_at_check = 0

    def __len__(self) -> int:
        return len(self._conns)

    def delivered(self, fd: int, ident: zmq.Frame, size: int, frames: int) -> None:
        """A message of ``frames`` frames and ``size`` body bytes was read from
        connection ``fd`` (``ident``: its routing frame)."""
        conn = self._conns.get(fd)
        if conn is None:
            return  # accepted moments ago: its event is still in the monitor
        conn.credited += size + frames * self.overhead
        if fd not in self.fresh:
            self.fresh.add(fd)
            if not conn.peer and self.is_peer(ident):
                conn.peer = True

    def accepted(self, fd: int) -> None:
        """The ROUTER accepted (and kept) connection ``fd``."""
        libc = self._libc
        if libc is None:
            return
        identity = libc.identity(fd)
        if identity is not None:
            received = libc.bytes_received(fd) or 0
            self._conns[fd] = _Conn(identity, received, received)

    def closed(self, fd: int) -> None:
        """Connection ``fd`` ended (libzmq closes the descriptor after telling)."""
        self._conns.pop(fd, None)
        self.fresh.discard(fd)

    def _rss(self) -> int:
        statm = self._statm
        assert statm is not None
        statm.seek(0)
        return int(statm.read(64).split()[1]) * self._page

    def check(self, now: float, drained: bool) -> None:
        """Cut stuck and flooding connections: every ``WATCH_CHECK_INTERVAL_S``, or now if
        the RSS grew by ``WATCH_RSS_TRIGGER_BYTES`` since the last check.  ``drained``:
        this cycle read the ROUTER until it had nothing more (every complete message
        queued was read)."""
        libc = self._libc
        if libc is None:
            return
        if not self._conns:
            self.deadline = now + WATCH_CHECK_INTERVAL_S
            return
        rss = self._rss()
        triggered = rss - self._rss_at_check > WATCH_RSS_TRIGGER_BYTES
        if now < self.deadline and not triggered:
            return
        self.deadline = now + WATCH_CHECK_INTERVAL_S
        self._rss_at_check = rss
        fresh = self.fresh
        cut: list[int] = []
        worst, worst_fd = WATCH_MIN_BLAME_BYTES, -1
        for fd, conn in self._conns.items():
            received = libc.bytes_received(fd)
            if received is None:
                continue
            if fd in fresh:
                # Flooding: read and credited, but more arriving than the node reads.
                unread = received - conn.base - conn.credited
                conn.mark = received
                if drained:
                    # Nothing of it is queued in libzmq any more but an unfinished
                    # message (the stuck rule's) and ZMTP commands (heartbeats).
                    conn.base, conn.credited = received, 0
            else:
                unread = received - conn.mark  # stuck inside one message
            if unread > (self.peer_limit if conn.peer else self.client_limit):
                cut.append(fd)
            elif triggered and unread > worst:
                worst, worst_fd = unread, fd
        fresh.clear()
        if worst_fd >= 0 and not cut:
            cut.append(worst_fd)
        for fd in cut:
            conn = self._conns.pop(fd)
            # Still the connection we accepted?  (libzmq may have closed the number
            # and reused it before its event reached us.)
            if libc.identity(fd) != conn.identity or not libc.shutdown(fd):
                continue
            self.stats.connections_cut += 1
            if now >= self._next_log:
                self._next_log = now + LOG_INTERVAL_S
                log.warning("cut a ROUTER connection that sent more than it may without "
                            "the node reading it (stuck in one message, or flooding); %d "
                            "cut so far, logged at most once per %.0f s",
                            self.stats.connections_cut, LOG_INTERVAL_S)

    def close(self) -> None:
        if self._statm is not None:
            self._statm.close()
            self._statm = None
