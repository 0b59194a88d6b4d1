"""A cap on the connections libzmq accepts on the node's bound sockets (ROUTER, PUB).

libzmq has no option for it: a bound socket accepts every TCP connection, each holding a
descriptor, handshake or not (an idle one until ``HANDSHAKE_IVL``, 30 s).  Measured at a
limit of 256 open files: 260 raw TCP connections to the ROUTER used every descriptor,
and the next checkpoint failed with EMFILE and stopped the node (exit 1, 4 s after
the connections; tests/integration/test_fd_budget.py now does the same).  The RESP and
metrics doors' caps cannot help against that, and the budget's reserve for storage
means nothing while one consumer is unbounded.

So each bound socket gets a monitor (``EVENT_ACCEPTED`` carries the new connection's
descriptor, ``EVENT_DISCONNECTED`` its end), read by the loop; a connection accepted
beyond the cap is shut down at once (``shutdown(2)`` on its descriptor, which is never
closed here: libzmq then reads end-of-file and closes it itself, as with any client that
leaves), and counted.  The descriptor must still be a TCP socket on the bound port, or
it is left alone.
libzmq emits ``EVENT_DISCONNECTED`` for a descriptor before it closes it, so a
descriptor number reused later always arrives after the end of its previous connection
on the monitor's queue.

If an event were ever lost (libzmq's monitor pipe has a high-water mark), the count
would drift: a lost ``EVENT_DISCONNECTED`` would keep a slot taken for good.  So before
it sheds, the cap checks its descriptors at most once per :data:`RESYNC_INTERVAL_S` and
forgets those that are no longer connections on its port.

What this cannot do: act before libzmq accepts.  A burst of connections arrives faster
than one loop cycle, so a cap is kept with room to spare (the budget's slack).
"""

from __future__ import annotations

import contextlib
import logging
import socket
from typing import Protocol

import zmq
from zmq.utils.monitor import recv_monitor_message

from .fdbudget import Rejection, Throttled

log = logging.getLogger("zcounter.node")

_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED
#: Monitor events handled per loop cycle at most (the rest wait for the next cycle).
EVENTS_PER_CYCLE = 256
#: At the cap, the held descriptors are checked again at most this often (O(held)
#: ``getsockname`` calls, about a microsecond each).
RESYNC_INTERVAL_S = 1.0


class Observer(Protocol):
    def accepted(self, fd: int) -> None: ...

    def closed(self, fd: int) -> None: ...


class AcceptCap:
    """At most :attr:`limit` connections accepted on one bound socket at once."""

    def __init__(self, sock: zmq.Socket[bytes], door: str, limit: int) -> None:
        self.door = door
        self.limit = limit
        self.monitor: zmq.Socket[bytes] = sock.get_monitor_socket(_EVENTS)
        self._sock = sock
        #: The bound port (a shed descriptor must be a connection on it).
        self.port = int(sock.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])
        #: Descriptors of the connections held now.
        self.live: set[int] = set()
        self.rejected: dict[Rejection, int] = {}
        self._noise = Throttled(log)
        self._next_resync = 0.0
        #: Told of every connection held and ended (the ROUTER's connection watch: a
        #: socket has only one monitor, this one).
        self.observer: Observer | None = None

    def on_event(self, now: float) -> None:
        """Read the monitor's events (the loop calls this when it is readable)."""
        for _ in range(EVENTS_PER_CYCLE):
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            fd = int(event["value"])
            if event["event"] == zmq.EVENT_DISCONNECTED:
                self.live.discard(fd)
                if self.observer is not None:
                    self.observer.closed(fd)
            else:
                if len(self.live) >= self.limit and now >= self._next_resync:
                    self._resync(now)
                if len(self.live) < self.limit:
                    self.live.add(fd)
                    if self.observer is not None:
                        self.observer.accepted(fd)
                else:
                    self._shed(fd, now)

    def _resync(self, now: float) -> None:
        """Forget held descriptors that are no longer connections on the bound port."""
        self._next_resync = now + RESYNC_INTERVAL_S
        gone = {fd for fd in self.live if not self._is_connection(fd, shut=False)}
        self.live -= gone

    def _shed(self, fd: int, now: float) -> None:
        self.rejected[Rejection.MAX_CLIENTS] = self.rejected.get(Rejection.MAX_CLIENTS, 0) + 1
        self._noise.log(logging.WARNING, "max_clients", now,
                        f"{self.door} door: closed a new connection: {len(self.live)} "
                        "connections, the most it holds")
        self._is_connection(fd, shut=True)

    def _is_connection(self, fd: int, shut: bool) -> bool:
        """Whether ``fd`` is a TCP connection on the bound port; with ``shut``, shut it
        down.  On libzmq's own descriptor, not a duplicate: at the limit there may be no
        descriptor free for one, and then nothing would be shed at all (seen: a burst of
        raw connections left the node at its limit for HANDSHAKE_IVL)."""
        try:
            conn = socket.socket(fileno=fd)
        except OSError:  # closed meanwhile, or not a socket any more
            return False
        try:
            if (conn.family not in (socket.AF_INET, socket.AF_INET6)
                    or conn.type != socket.SOCK_STREAM or conn.getsockname()[1] != self.port):
                return False
            conn.getpeername()  # the listener has none
            if shut:
                conn.shutdown(socket.SHUT_RDWR)
            return True
        except OSError:
            return False
        finally:
            conn.detach()  # the descriptor stays libzmq's: never closed here

    def stats(self) -> dict[str, object]:
        return {"clients": len(self.live), "max_clients": self.limit,
                "rejections": {reason.value: n for reason, n in self.rejected.items()}}

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self._sock.disable_monitor()
        self.monitor.close(linger=0)


__all__ = ["EVENTS_PER_CYCLE", "RESYNC_INTERVAL_S", "AcceptCap"]
