"""The RESP door's listening socket: accepts, the cap on clients, and the pause after
an accept that failed (:mod:`.resp` gives the rules)."""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from collections.abc import Iterator, Sized

import zmq

from ..limits import RESP_ACCEPTS_PER_CYCLE
from ..protocol.resp import replies as R
from ..protocol.resp.session import Door
from .fdbudget import RESOURCE_ERRNOS, AcceptBackoff, Rejection, Throttled
from .respsetup import parse_endpoint

log = logging.getLogger("zcounter.node")

# The bound under this module's name (tests patch it here): zcounter.limits.
ACCEPTS_PER_CYCLE = RESP_ACCEPTS_PER_CYCLE


class Acceptor:
    """The listener of one door, and who may come in: at most ``max_clients`` of
    ``clients`` at once (the next one is told ``-ERR max number of clients reached`` and
    closed, as Redis does)."""

    def __init__(self, endpoint: str, door: Door, max_clients: int, clients: Sized) -> None:
        host, port = parse_endpoint(endpoint)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((host, port))
        except OSError as exc:
            listener.close()
            raise OSError(exc.errno, f"cannot bind {endpoint} ({exc.strerror})") from None
        listener.listen(512)
        listener.setblocking(False)
        self.listener = listener
        #: The listener's descriptor, as the poller reports it.
        self.fd = listener.fileno()
        self.endpoint = endpoint
        self.door = door
        door.tcp_port = listener.getsockname()[1]
        door.max_clients = max_clients
        self.max_clients = max_clients
        self._clients = clients
        #: Connections refused (or accepts failed), by reason.
        self.rejected: dict[Rejection, int] = {}
        self.poller: zmq.Poller | None = None
        self._backoff = AcceptBackoff()
        self._noise = Throttled(log)

    def register(self, poller: zmq.Poller) -> None:
        self.poller = poller
        poller.register(self.fd, zmq.POLLIN)

    @property
    def deadline(self) -> float:
        """When the loop must wake for the door (the end of an accept pause)."""
        until = self._backoff.until
        return until if until is not None else float("inf")

    def resume(self, now: float) -> None:
        """Poll the listener again once an accept pause is over."""
        if self._backoff.due(now) and self.poller is not None:
            self.poller.register(self.fd, zmq.POLLIN)

    def accept(self, now: float) -> Iterator[tuple[socket.socket, str]]:
        """The connections to serve, non-blocking, with the client's address: at most
        :data:`ACCEPTS_PER_CYCLE`, those past ``max_clients`` refused.  Lazily: each is
        counted against ``max_clients`` after the previous one was served."""
        for _ in range(ACCEPTS_PER_CYCLE):
            try:
                sock, address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client gave up while queued: take the next one
            except OSError as exc:
                self._failed(exc, now)
                return
            self._backoff.succeeded()
            self.door.connections_received += 1
            if len(self._clients) >= self.max_clients:
                self._refuse(sock, now)
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            yield sock, (f"{address[0]}:{address[1]}" if isinstance(address, tuple)
                         else str(address))

    def _refuse(self, sock: socket.socket, now: float) -> None:
        self.door.rejected_connections += 1
        self._rejected(Rejection.MAX_CLIENTS)
        self._noise.log(logging.WARNING, "max_clients", now,
                        f"RESP door {self.endpoint}: refused a connection: "
                        f"{len(self._clients)} clients, the most it holds")
        with contextlib.suppress(OSError):
            sock.setblocking(False)
            sock.send(R.error("ERR max number of clients reached"))
        sock.close()

    def _failed(self, exc: OSError, now: float) -> None:
        """EMFILE and friends: the listener stays readable, so polling it again at once
        would spin (issue 19: ~14,500 log lines a second).  Stop polling it for a pause
        that doubles while accepts keep failing, and keep serving the connections we
        have.  Any other error is treated alike: the door stays open."""
        self._rejected(Rejection.ACCEPT_FAILED)
        pause = self._backoff.failed(now)
        if self.poller is not None:
            with contextlib.suppress(KeyError):
                self.poller.unregister(self.fd)
        cause = errno.errorcode.get(exc.errno or 0, "error")
        level = logging.WARNING if exc.errno in RESOURCE_ERRNOS else logging.ERROR
        self._noise.log(level, f"accept {cause}", now,
                        f"RESP door {self.endpoint}: accept failed ({exc.strerror or exc}); "
                        f"not accepting for {pause:.2f}s ({len(self._clients)} clients)")

    def _rejected(self, reason: Rejection) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def close(self) -> None:
        if self.poller is not None and self._backoff.until is None:
            self.poller.unregister(self.fd)
        self.listener.close()
