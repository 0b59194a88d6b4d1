"""The Redis-protocol door's sockets: a plain listening TCP socket and its connections,
registered by file descriptor in the node's one ``zmq.Poller`` loop.

Why plain sockets and not a ZeroMQ ``STREAM`` socket: a STREAM socket drops or blocks at
its high-water mark with no per-connection view (libzmq#4828: a full queue can even block
closing), while a plain non-blocking socket per client gives exactly what the door must
control - how much one client has queued, whether it is still reading, and closing it.
pyzmq's ``Poller`` takes file descriptors beside zmq sockets, so the door lives in the
same loop as everything else and never needs a lock.

Per connection (:class:`_Conn`): the :class:`~zcounter.protocol.resp.session.Session`
(protocol state, sans I/O) and an output buffer.  Rules, each with its reason:

* Reading stops while the session has :data:`~zcounter.protocol.resp.session.MAX_PIPELINE`
  commands unanswered or more than :data:`PAUSE_OUTPUT_BYTES` waiting to be sent: the
  client's own sends then block (TCP backpressure) instead of the node's memory growing.
* A connection whose output has not moved for ``resp_stall_timeout_s`` (the client stopped
  reading), or whose output passes :data:`MAX_OUTPUT_BYTES`, is closed.
* End of input (the client closed or half-closed) stops reading; the connection closes
  once what it asked for has been answered, or at once if it is gone (EPIPE/ECONNRESET).
  Its late answers from the core are dropped (connection numbers are never reused).
* At most ``max_clients`` connections (the setting ``resp_max_clients``, or the door's
  share of the descriptor budget if less: :mod:`.fdbudget`): the next one is told
  ``-ERR max number of clients reached`` and closed, as Redis does.  An ``accept`` that
  fails for want of descriptors pauses the listener (:class:`~.fdbudget.AcceptBackoff`)
  instead of spinning on it, and is logged once per interval.

Requests a session produces are handed to the core at once when it reads them
(:meth:`RespDoor.on_event`), or at the next cycle when they come from an answer
(``KEYS`` pages) or must see a flushed keyspace (:meth:`Session.take_requests`);
:attr:`RespDoor.busy` then tells the loop not to sleep in ``poll``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import socket
import time
from typing import Any

import zmq

from ..config import ClusterConfig
from ..errors import ConfigError
from ..limits import RESP_MAX_CLIENTS
from ..protocol.messages import ClientReply
from ..protocol.node import NodeCore
from ..protocol.resp import replies as R
from ..protocol.resp.session import MAX_PIPELINE, Door, RespClient, Session
from .fdbudget import RESOURCE_ERRNOS, AcceptBackoff, Rejection, Throttled

log = logging.getLogger("zcounter.node")

#: Bytes read from one connection per poll cycle at most (fairness between clients, and
#: the slack of the command-size bound).
READ_BYTES = 64 * 1024
READS_PER_CYCLE = 4
#: Above this much unsent output a connection is not read (backpressure).
PAUSE_OUTPUT_BYTES = 1024 * 1024
#: Above this much unsent output a connection is closed at once: only one huge reply
#: (KEYS of millions of keys) can get here, since reading pauses far below it.
MAX_OUTPUT_BYTES = 64 * 1024 * 1024
#: Connections accepted per poll cycle at most.
ACCEPTS_PER_CYCLE = 64

_ENDPOINT = re.compile(r"^tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+):([0-9]{1,5})$")
_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    match = _ENDPOINT.match(endpoint)
    if match is None:
        raise ValueError(f"malformed endpoint {endpoint!r}")
    return match.group(1).strip("[]"), int(match.group(2))


def read_password(config: ClusterConfig) -> bytes | None:
    """The RESP password (the file's first line), or None when no file is configured."""
    path = config.security.resp_password_file
    if path is None:
        return None
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{config.source}: security.resp_password_file: cannot read {path} "
                          f"({exc.strerror})") from None
    password = text.splitlines()[0].strip() if text.strip() else b""
    if not password:
        raise ConfigError(f"{config.source}: security.resp_password_file: {path} is empty")
    return password


class _Conn:
    __slots__ = ("eof", "fd", "out", "out_at", "progress", "reading", "session", "sock",
                 "writing")

    def __init__(self, sock: socket.socket, session: Session, now: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.session = session
        self.out = bytearray()
        #: Bytes of ``out`` already sent (compacted now and then: no memmove per send).
        self.out_at = 0
        #: Last time output was pending and moved (or became pending).
        self.progress = now
        self.reading = True
        self.writing = False
        self.eof = False

    @property
    def pending(self) -> int:
        return len(self.out) - self.out_at


class RespDoor:
    """The door of one node.  Used by the loop thread only."""

    def __init__(self, endpoint: str, door: Door, stall_timeout_s: float,
                 max_clients: int = RESP_MAX_CLIENTS) -> None:
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
        self.endpoint = endpoint
        self.door = door
        door.tcp_port = listener.getsockname()[1]
        door.max_clients = max_clients
        self.stall_timeout_s = stall_timeout_s
        self.conns: dict[int, _Conn] = {}  # by fd
        self.by_id: dict[int, _Conn] = {}  # by connection number
        self._next_conn = 0
        #: Sessions with requests not yet handed to the core.
        self._queued: set[_Conn] = set()
        self._writing: set[_Conn] = set()
        self.cycle = 0
        self.poller: zmq.Poller | None = None
        self.disconnects: dict[str, int] = {}
        self.max_clients = max_clients
        #: Connections refused (or accepts failed), by reason.
        self.rejected: dict[Rejection, int] = {}
        self._backoff = AcceptBackoff()
        self._noise = Throttled(log)

    # ------------------------------------------------------------------ loop hooks

    def register(self, poller: zmq.Poller) -> None:
        self.poller = poller
        poller.register(self.listener.fileno(), zmq.POLLIN)

    def handles(self, fd: int) -> bool:
        return fd == self.listener.fileno() or fd in self.conns

    @property
    def deadline(self) -> float:
        """When the loop must wake for the door (the end of an accept pause)."""
        until = self._backoff.until
        return until if until is not None else float("inf")

    @property
    def busy(self) -> bool:
        """Requests wait to be handed to the core: the loop must not sleep."""
        return bool(self._queued)

    def on_event(self, fd: int, events: int, core: NodeCore, now: float) -> None:
        if fd == self.listener.fileno():
            self._accept(now)
            return
        conn = self.conns.get(fd)
        if conn is None:
            return
        if events & zmq.POLLOUT:
            self._flush(conn, now)
            if conn.fd not in self.conns:
                return
        if events & zmq.POLLIN:
            self._read(conn, core, now)
        elif events & zmq.POLLERR:
            self._close(conn, "error")

    def start_cycle(self) -> None:
        self.cycle += 1

    def pump(self, core: NodeCore, now: float) -> None:
        """Hand queued requests to the core; close stalled connections; poll the
        listener again once an accept pause is over."""
        if self._backoff.due(now) and self.poller is not None:
            self.poller.register(self.listener.fileno(), zmq.POLLIN)
        if self._queued:
            for conn in list(self._queued):
                self._feed(conn, core, now)
        if self._writing:
            for conn in list(self._writing):
                if now - conn.progress > self.stall_timeout_s:
                    log.info("RESP client %s (id %d) read nothing for %.1fs with %d bytes "
                             "waiting: disconnected", conn.session.address, conn.session.id,
                             now - conn.progress, conn.pending)
                    self._close(conn, "stalled")

    def deliver(self, client: RespClient, reply: ClientReply, now: float) -> None:
        """A core answer, after its commit (called from the loop's send step)."""
        conn = self.by_id.get(client.conn)
        if conn is None:
            return  # the connection has gone
        session = conn.session
        session.deliver(reply, now)
        if session.requests:
            self._queued.add(conn)
        self._flush(conn, now)

    def snapshot(self) -> dict[str, Any]:
        """The door's figures for a metrics scrape (plain copies)."""
        door = self.door
        return {"clients": len(self.conns), "blocked": door.blocked,
                "received": door.connections_received, "rejected": door.rejected_connections,
                "protocol_errors": door.protocol_errors, "commands": dict(door.commands),
                "disconnects": dict(self.disconnects), "max_clients": self.max_clients,
                "rejections": {reason.value: n for reason, n in self.rejected.items()}}

    def close(self) -> None:
        for conn in list(self.conns.values()):
            self._close(conn, "shutdown")
        if self.poller is not None and self._backoff.until is None:
            self.poller.unregister(self.listener.fileno())
        self.listener.close()

    # ------------------------------------------------------------------ connections

    def _accept(self, now: float) -> None:
        for _ in range(ACCEPTS_PER_CYCLE):
            try:
                sock, address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client gave up while queued: take the next one
            except OSError as exc:
                self._accept_failed(exc, now)
                return
            self._backoff.succeeded()
            self.door.connections_received += 1
            if len(self.conns) >= self.max_clients:
                self.door.rejected_connections += 1
                self._rejected(Rejection.MAX_CLIENTS)
                self._noise.log(logging.WARNING, "max_clients", now,
                                f"RESP door {self.endpoint}: refused a connection: "
                                f"{len(self.conns)} clients, the most it holds")
                with contextlib.suppress(OSError):
                    sock.setblocking(False)
                    sock.send(R.error("ERR max number of clients reached"))
                sock.close()
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._next_conn += 1
            peer = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
            conn = _Conn(sock, Session(self.door, self._next_conn, now, peer), now)
            self.conns[conn.fd] = conn
            self.by_id[self._next_conn] = conn
            self.door.connected = len(self.conns)
            assert self.poller is not None
            self.poller.register(conn.fd, zmq.POLLIN)

    def _accept_failed(self, exc: OSError, now: float) -> None:
        """EMFILE and friends: the listener stays readable, so polling it again at once
        would spin (issue 19: ~14,500 log lines a second).  Stop polling it for a pause
        that doubles while accepts keep failing, and keep serving the connections we
        have.  Any other error is treated alike: the door stays open."""
        self._rejected(Rejection.ACCEPT_FAILED)
        pause = self._backoff.failed(now)
        if self.poller is not None:
            with contextlib.suppress(KeyError):
                self.poller.unregister(self.listener.fileno())
        cause = errno.errorcode.get(exc.errno or 0, "error")
        level = logging.WARNING if exc.errno in RESOURCE_ERRNOS else logging.ERROR
        self._noise.log(level, f"accept {cause}", now,
                        f"RESP door {self.endpoint}: accept failed ({exc.strerror or exc}); "
                        f"not accepting for {pause:.2f}s ({len(self.conns)} clients)")

    def _rejected(self, reason: Rejection) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def _read(self, conn: _Conn, core: NodeCore, now: float) -> None:
        session = conn.session
        for _ in range(READS_PER_CYCLE):
            try:
                data = conn.sock.recv(READ_BYTES)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._close(conn, "reset")
                return
            if not data:
                conn.eof = True
                break
            session.receive(data, now)
            if (session.closing or session.backlog >= MAX_PIPELINE
                    or conn.pending >= PAUSE_OUTPUT_BYTES or len(data) < READ_BYTES):
                break
        self._feed(conn, core, now)
        if conn.fd in self.conns:
            self._flush(conn, now)

    def _feed(self, conn: _Conn, core: NodeCore, now: float) -> None:
        session = conn.session
        handle, client = core.handle_request, session.client
        for request in session.take_requests(self.cycle):
            handle(client, request, now)
        if session.requests:
            self._queued.add(conn)
        else:
            self._queued.discard(conn)

    def _flush(self, conn: _Conn, now: float) -> None:
        """Move the session's finished replies to the socket; then decide what to poll."""
        session = conn.session
        data = session.take_output(now)
        if data:
            if not conn.pending:
                conn.progress = now  # the stall clock starts when output starts waiting
            conn.out += data
        if conn.pending:
            try:
                sent = conn.sock.send(memoryview(conn.out)[conn.out_at:])
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                if isinstance(exc, _GONE) or exc.errno in (errno.EPIPE, errno.ECONNRESET):
                    self._close(conn, "reset")
                    return
                raise
            if sent:
                conn.progress = now
                conn.out_at += sent
                if conn.out_at == len(conn.out):
                    conn.out.clear()
                    conn.out_at = 0
                elif conn.out_at > 1024 * 1024 and conn.out_at * 2 > len(conn.out):
                    del conn.out[:conn.out_at]  # amortised: compact when half is sent
                    conn.out_at = 0
        if conn.pending > MAX_OUTPUT_BYTES:
            log.info("RESP client %s (id %d): %d bytes of replies unsent: disconnected",
                     session.address, session.id, conn.pending)
            self._close(conn, "output_limit")
            return
        if not conn.pending and (session.done or (conn.eof and not session.fifo)):
            self._close(conn, "quit" if session.done else "closed")
            return
        self._poll_flags(conn)

    def _poll_flags(self, conn: _Conn) -> None:
        session = conn.session
        reading = (not conn.eof and not session.closing and session.backlog < MAX_PIPELINE
                   and conn.pending < PAUSE_OUTPUT_BYTES)
        writing = conn.pending > 0
        if reading == conn.reading and writing == conn.writing:
            return
        conn.reading, conn.writing = reading, writing
        if writing:
            self._writing.add(conn)
        else:
            self._writing.discard(conn)
        flags = (zmq.POLLIN if reading else 0) | (zmq.POLLOUT if writing else 0)
        assert self.poller is not None
        if flags:
            self.poller.register(conn.fd, flags)
        else:
            # Nothing to wait for on the socket itself: answers from the core will come.
            self.poller.unregister(conn.fd)

    def _close(self, conn: _Conn, reason: str) -> None:
        if self.conns.pop(conn.fd, None) is None:
            return
        self.by_id.pop(conn.session.client.conn, None)
        self._queued.discard(conn)
        self._writing.discard(conn)
        if self.poller is not None and (conn.reading or conn.writing):
            with contextlib.suppress(KeyError):
                self.poller.unregister(conn.fd)
        if conn.session.protocol_error is not None:
            log.info("RESP client %s (id %d): %s; connection closed", conn.session.address,
                     conn.session.id, conn.session.protocol_error)
        conn.session.close()
        with contextlib.suppress(OSError):
            conn.sock.close()
        self.door.connected = len(self.conns)
        self.disconnects[reason] = self.disconnects.get(reason, 0) + 1


def make_door(config: ClusterConfig, node_id: int, version: str,
              max_clients: int | None = None) -> RespDoor | None:
    """This node's door, or None when it serves none (no ``resp``, or curve mode without
    a password file: an unauthenticated plain-TCP door would bypass CurveZMQ)."""
    address = config.node(node_id)
    if address.resp is None:
        return None
    password = read_password(config)
    if config.curve and password is None:
        log.warning("node %d: RESP door %s is off: security.mode is curve and no "
                    "security.resp_password_file is set", node_id, address.resp)
        return None
    door = Door(node_id, tuple(sorted(config.nodes)), password, process_id=os.getpid(),
                started=time.monotonic(), version=version)
    for peer in config.peers_of(node_id):
        door.peer_addresses[peer] = parse_endpoint(config.nodes[peer].router)
    try:
        return RespDoor(address.resp, door, config.settings.resp_stall_timeout_s,
                        config.settings.resp_max_clients if max_clients is None
                        else max_clients)
    except OSError as exc:
        raise ConfigError(f"{config.source}: nodes.{node_id}.resp: {exc.strerror}") from None


__all__ = ["MAX_OUTPUT_BYTES", "PAUSE_OUTPUT_BYTES", "RespDoor", "make_door", "parse_endpoint",
           "read_password"]
