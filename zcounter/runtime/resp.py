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

TLS (``[security] resp_tls_cert`` and ``resp_tls_key``, as Redis's ``tls-cert-file`` /
``tls-key-file``; ``resp_tls_ca`` then requires client certificates) is Python's ``ssl`` on
the same non-blocking sockets, in the same loop:

* An accepted socket is wrapped at once without a handshake (:meth:`RespDoor._secure`);
  ``do_handshake`` is then driven by poll events, waiting for POLLIN or POLLOUT as OpenSSL
  asks (``SSLWantReadError`` / ``SSLWantWriteError``).  A handshake that fails (a plaintext
  client, a wrong or missing client certificate) closes that connection only, is counted
  (``zcounter_resp_disconnects{reason="tls_handshake_failed"}``) and logged at most once per
  :data:`~zcounter.limits.RESP_TLS_LOG_INTERVAL_S`; one not finished within
  ``resp_tls_handshake_timeout_s`` of its accept is closed the same way
  (``tls_handshake_timeout``).  Session data is never read before the handshake ends.
* OpenSSL may hold decrypted bytes that the kernel no longer shows to ``poll``
  (``SSLSocket.pending()``), when reading stopped for fairness or backpressure in the middle
  of a record: such connections are read again at the next cycle without a poll event
  (:attr:`RespDoor.busy` keeps the loop from sleeping meanwhile).
* ``SSL_write`` reports nothing until a whole buffer is out (Python sets no partial-write
  mode), so replies go out in slices of :data:`TLS_SEND_BYTES`: the stall clock sees a slow
  reader's progress, and a retry after ``SSLWantWriteError`` repeats the same start.
* Renegotiation is refused (``OP_NO_RENEGOTIATION``: a client could otherwise make the loop
  redo handshakes at will); TLS 1.2 is the oldest version served.

What the door needs from the cluster file (address, password, TLS context, whether
``curve`` mode lets it open) is :mod:`.respsetup`'s; :func:`make_door` puts it together.

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
import socket
import ssl
import time
from enum import Enum
from typing import Any

import zmq

from ..config import ClusterConfig
from ..errors import ConfigError
from ..limits import (
    RESP_ACCEPTS_PER_CYCLE,
    RESP_AUTH_FAILURE_DELAY_S,
    RESP_MAX_AUTH_FAILURES,
    RESP_MAX_CLIENTS,
    RESP_MAX_OUTPUT_BYTES,
    RESP_PAUSE_OUTPUT_BYTES,
    RESP_READ_BYTES,
    RESP_READS_PER_CYCLE,
    RESP_TLS_HANDSHAKE_TIMEOUT_S,
    RESP_TLS_LOG_INTERVAL_S,
    RESP_TLS_SEND_BYTES,
)
from ..protocol.messages import ClientReply
from ..protocol.node import NodeCore
from ..protocol.resp import replies as R
from ..protocol.resp.session import MAX_PIPELINE, Door, RespClient, Session
from .fdbudget import RESOURCE_ERRNOS, AcceptBackoff, Rejection, Throttled
from .respsetup import curve_refusal, is_loopback, parse_endpoint, read_password, tls_context

log = logging.getLogger("zcounter.node")

# The door's bounds, under this module's names (tests patch them here): zcounter.limits.
READ_BYTES = RESP_READ_BYTES
READS_PER_CYCLE = RESP_READS_PER_CYCLE
PAUSE_OUTPUT_BYTES = RESP_PAUSE_OUTPUT_BYTES
MAX_OUTPUT_BYTES = RESP_MAX_OUTPUT_BYTES
ACCEPTS_PER_CYCLE = RESP_ACCEPTS_PER_CYCLE
TLS_SEND_BYTES = RESP_TLS_SEND_BYTES

_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


class Closed(str, Enum):
    """Why the door closed a connection: the ``reason`` label of
    ``zcounter_resp_disconnects`` (the value is what is counted)."""

    QUIT = "quit"
    CLOSED = "closed"
    RESET = "reset"
    ERROR = "error"
    STALLED = "stalled"
    OUTPUT_LIMIT = "output_limit"
    SHUTDOWN = "shutdown"
    #: The TLS handshake failed: a plaintext client, a bad or missing client certificate.
    TLS_HANDSHAKE_FAILED = "tls_handshake_failed"
    #: The TLS handshake did not finish within ``resp_tls_handshake_timeout_s``.
    TLS_HANDSHAKE_TIMEOUT = "tls_handshake_timeout"
    #: A TLS error after the handshake (a corrupt record, a renegotiation attempt).
    TLS_ERROR = "tls_error"
    #: The session refused the client's bytes (framing, bounds: its ``protocol_error``).
    PROTOCOL_ERROR = "protocol_error"


class _Conn:
    __slots__ = ("eof", "fd", "handshaking", "out", "out_at", "penalty_until", "progress",
                 "reading", "session", "sock", "tls", "writing")

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
        #: A TLS connection, and whether its handshake is still under way.
        self.tls = self.handshaking = isinstance(sock, ssl.SSLSocket)
        #: After a wrong password: neither read nor written until then (monotonic).
        self.penalty_until = 0.0

    @property
    def pending(self) -> int:
        return len(self.out) - self.out_at


class RespDoor:
    """The door of one node.  Used by the loop thread only."""

    def __init__(self, endpoint: str, door: Door, stall_timeout_s: float,
                 tls: ssl.SSLContext | None = None,
                 handshake_timeout_s: float = RESP_TLS_HANDSHAKE_TIMEOUT_S,
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
        #: TLS (None: plaintext).
        self.tls = tls
        self.handshake_timeout_s = handshake_timeout_s
        #: fd -> deadline of each handshake under way, in accept order (so in deadline
        #: order: the timeout is one for all): the expired ones are at the front.
        self._handshakes: dict[int, float] = {}
        #: TLS connections with decrypted bytes OpenSSL holds and poll cannot show.
        self._unread: set[_Conn] = set()
        #: Connections waiting out a wrong password's delay (RESP_AUTH_FAILURE_DELAY_S).
        self._penalised: set[_Conn] = set()
        self.tls_handshakes = 0
        #: Per cause: when it may be logged next, and how many went unlogged meanwhile.
        self._quiet: dict[Closed, tuple[float, int]] = {}
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
        """Requests wait to be handed to the core, or TLS bytes to be read: the loop must
        not sleep."""
        return bool(self._queued or self._unread)

    def on_event(self, fd: int, events: int, core: NodeCore, now: float) -> None:
        if fd == self.listener.fileno():
            self._accept(now)
            return
        conn = self.conns.get(fd)
        if conn is None:
            return
        if conn.handshaking:
            self._handshake(conn, core, now)
            return
        if events & zmq.POLLOUT:
            self._flush(conn, now)
            if conn.fd not in self.conns:
                return
        if events & zmq.POLLIN:
            self._read(conn, core, now)
        elif events & zmq.POLLERR:
            self._close(conn, Closed.ERROR)

    def start_cycle(self) -> None:
        self.cycle += 1

    def pump(self, core: NodeCore, now: float) -> None:
        """Hand queued requests to the core; read what OpenSSL holds; close stalled
        connections and late handshakes; poll the listener again once an accept
        pause is over."""
        if self._backoff.due(now) and self.poller is not None:
            self.poller.register(self.listener.fileno(), zmq.POLLIN)
        if self._unread:
            for conn in list(self._unread):
                self._unread.discard(conn)
                if self.conns.get(conn.fd) is conn and conn.reading:
                    self._read(conn, core, now)
        if self._handshakes:
            self._expire_handshakes(now)
        if self._penalised:
            for conn in [c for c in self._penalised if c.penalty_until <= now]:
                self._penalised.discard(conn)
                if self.conns.get(conn.fd) is conn:
                    self._flush(conn, now)
        if self._queued:
            for conn in list(self._queued):
                self._feed(conn, core, now)
        if self._writing:
            for conn in list(self._writing):
                if now - conn.progress > self.stall_timeout_s:
                    self._note(Closed.STALLED, now, "RESP client %s (id %d) read nothing "
                               "for %.1fs with %d bytes waiting: disconnected",
                               conn.session.address, conn.session.id, now - conn.progress,
                               conn.pending)
                    self._close(conn, Closed.STALLED)

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
            self._close(conn, Closed.SHUTDOWN)
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
            wrapped = self._secure(sock, now)  # TLS when configured (None: client gone)
            if wrapped is None:
                continue
            sock = wrapped
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

    # ------------------------------------------------------------------ TLS

    def _secure(self, sock: socket.socket, now: float) -> socket.socket | None:
        """``sock`` as a TLS server socket whose handshake is yet to run (or ``sock``
        itself without TLS); None if the client has already gone (reset before we could
        wrap it: ``wrap_socket`` then raises, and has closed the descriptor)."""
        if self.tls is None:
            return sock
        try:
            wrapped = self.tls.wrap_socket(sock, server_side=True,
                                           do_handshake_on_connect=False)
        except (OSError, ValueError) as exc:
            self._count(Closed.TLS_HANDSHAKE_FAILED)
            self._note(Closed.TLS_HANDSHAKE_FAILED, now, "RESP door %s: a client left before "
                       "its TLS handshake (%s)", self.endpoint, exc)
            with contextlib.suppress(OSError):
                sock.close()
            return None
        fd = wrapped.fileno()
        self._handshakes.pop(fd, None)  # (re-inserted at the end: the order is the deadlines')
        self._handshakes[fd] = now + self.handshake_timeout_s
        return wrapped

    def _handshake(self, conn: _Conn, core: NodeCore, now: float) -> None:
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._wait_handshake(conn, reading=True)
            return
        except ssl.SSLWantWriteError:
            self._wait_handshake(conn, reading=False)
            return
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
            self._note(Closed.TLS_HANDSHAKE_FAILED, now, "RESP client %s (id %d): TLS "
                       "handshake failed (%s); connection closed", conn.session.address,
                       conn.session.id, reason)
            self._close(conn, Closed.TLS_HANDSHAKE_FAILED)
            return
        conn.handshaking = False
        self._handshakes.pop(conn.fd, None)
        self.tls_handshakes += 1
        # Commands may have come with the client's Finished: read them now.
        self._read(conn, core, now)

    def _wait_handshake(self, conn: _Conn, reading: bool) -> None:
        """Poll for what OpenSSL needs next (``conn.reading``/``writing`` say what is
        registered, as :meth:`_poll_flags` expects once the handshake is done)."""
        if conn.reading == reading and conn.writing != reading:
            return
        conn.reading, conn.writing = reading, not reading
        assert self.poller is not None
        self.poller.register(conn.fd, zmq.POLLIN if reading else zmq.POLLOUT)

    def _expire_handshakes(self, now: float) -> None:
        expired = []
        for fd, deadline in self._handshakes.items():
            if deadline > now:
                break
            expired.append(fd)
        for fd in expired:
            del self._handshakes[fd]
            conn = self.conns.get(fd)
            if conn is not None and conn.handshaking:
                self._note(Closed.TLS_HANDSHAKE_TIMEOUT, now, "RESP client %s (id %d): no TLS "
                           "handshake within %.1fs; connection closed", conn.session.address,
                           conn.session.id, self.handshake_timeout_s)
                self._close(conn, Closed.TLS_HANDSHAKE_TIMEOUT)

    def _note(self, cause: Closed, now: float, message: str, *args: object) -> None:
        """Log ``message`` unless ``cause`` was logged less than
        :data:`RESP_TLS_LOG_INTERVAL_S` ago; then say how many went unlogged.  Every line
        a client can cause goes through here: one per cause per interval, never a flood."""
        at, quiet = self._quiet.get(cause, (0.0, 0))
        if now < at:
            self._quiet[cause] = (at, quiet + 1)
            return
        if quiet:
            message += " (and %d more like it in the last %.0fs)"
            args = (*args, quiet, RESP_TLS_LOG_INTERVAL_S)
        self._quiet[cause] = (now + RESP_TLS_LOG_INTERVAL_S, 0)
        log.info(message, *args)

    def _tls_failed(self, conn: _Conn, exc: ssl.SSLError, now: float) -> None:
        """A TLS error after the handshake (a corrupt record, a renegotiation attempt):
        that connection is closed, counted and (rate-limited) logged."""
        self._note(Closed.TLS_ERROR, now, "RESP client %s (id %d): TLS error (%s); "
                   "connection closed", conn.session.address, conn.session.id,
                   exc.reason or exc)
        self._close(conn, Closed.TLS_ERROR)

    def _count(self, reason: Closed) -> None:
        self.disconnects[reason.value] = self.disconnects.get(reason.value, 0) + 1

    # ------------------------------------------------------------------ reading, writing

    def _read(self, conn: _Conn, core: NodeCore, now: float) -> None:
        session = conn.session
        failures = session.auth_failures
        for _ in range(READS_PER_CYCLE):
            try:
                data = conn.sock.recv(READ_BYTES)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError,
                    ssl.SSLWantWriteError):
                # (WantWrite: OpenSSL must send first, e.g. a TLS 1.3 key update; it goes
                # out with the next send, or this read is retried at the next POLLIN.)
                break
            except ssl.SSLError as exc:
                self._tls_failed(conn, exc, now)
                return
            except OSError:
                self._close(conn, Closed.RESET)
                return
            if not data:
                conn.eof = True
                break
            session.receive(data, now)
            if session.auth_failures != failures:
                # A wrong password: nothing more is read or sent until the delay is over.
                conn.penalty_until = now + RESP_AUTH_FAILURE_DELAY_S * 2 ** min(
                    session.auth_failures - 1, RESP_MAX_AUTH_FAILURES)
                self._penalised.add(conn)
                break
            # A short read empties a plain socket's buffer, not a TLS one's: a TLS read
            # returns one record (16 KiB at most) whatever is behind it.
            if (session.closing or session.backlog >= MAX_PIPELINE
                    or conn.pending >= PAUSE_OUTPUT_BYTES
                    or (len(data) < READ_BYTES and not conn.tls)):
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
        if conn.penalty_until > now:
            self._poll_flags(conn)  # neither read nor write until the delay is over
            return
        session = conn.session
        data = session.take_output(now)
        if data:
            if not conn.pending:
                conn.progress = now  # the stall clock starts when output starts waiting
            conn.out += data
        if conn.pending:
            end = conn.out_at + TLS_SEND_BYTES if conn.tls else len(conn.out)
            try:
                with memoryview(conn.out) as view:
                    sent = conn.sock.send(view[conn.out_at:end])
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError,
                    ssl.SSLWantReadError):
                sent = 0
            except ssl.SSLError as exc:
                self._tls_failed(conn, exc, now)
                return
            except OSError as exc:
                if isinstance(exc, _GONE) or exc.errno in (errno.EPIPE, errno.ECONNRESET):
                    self._close(conn, Closed.RESET)
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
            self._note(Closed.OUTPUT_LIMIT, now, "RESP client %s (id %d): %d bytes of "
                       "replies unsent: disconnected", session.address, session.id,
                       conn.pending)
            self._close(conn, Closed.OUTPUT_LIMIT)
            return
        if not conn.pending and (session.done or (conn.eof and not session.fifo)):
            self._close(conn, Closed.QUIT if session.done else Closed.CLOSED)
            return
        self._poll_flags(conn)

    def _poll_flags(self, conn: _Conn) -> None:
        session = conn.session
        held = conn in self._penalised
        reading = (not conn.eof and not session.closing and session.backlog < MAX_PIPELINE
                   and conn.pending < PAUSE_OUTPUT_BYTES and not held)
        writing = conn.pending > 0 and not held
        if reading and conn.tls:
            sock = conn.sock
            assert isinstance(sock, ssl.SSLSocket)
            if sock.pending():
                self._unread.add(conn)  # read at the next cycle: poll will not say
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

    def _close(self, conn: _Conn, reason: Closed) -> None:
        if self.conns.pop(conn.fd, None) is None:
            return
        self.by_id.pop(conn.session.client.conn, None)
        self._queued.discard(conn)
        self._writing.discard(conn)
        self._unread.discard(conn)
        self._penalised.discard(conn)
        if conn.handshaking:
            self._handshakes.pop(conn.fd, None)
        if self.poller is not None and (conn.reading or conn.writing):
            with contextlib.suppress(KeyError):
                self.poller.unregister(conn.fd)
        if conn.session.protocol_error is not None:
            # Rate-limited like the TLS causes: a client looping on bad input must not
            # flood the log (issue 19); the count is in the session's refusals.
            self._note(Closed.PROTOCOL_ERROR, time.monotonic(),
                       "RESP client %s (id %d): %s; connection closed", conn.session.address,
                       conn.session.id, conn.session.protocol_error)
        conn.session.close()
        with contextlib.suppress(OSError):
            conn.sock.close()
        self.door.connected = len(self.conns)
        self._count(reason)


def make_door(config: ClusterConfig, node_id: int, version: str,
              max_clients: int | None = None) -> RespDoor | None:
    """This node's door, or None when it serves none: no ``resp``, or curve mode without
    TLS or the loopback opt-in, or without a password or client certificates
    (:func:`curve_refusal`: a plain or unauthenticated door would bypass CurveZMQ)."""
    address = config.node(node_id)
    if address.resp is None:
        return None
    password = read_password(config)
    tls = tls_context(config)
    refusal = curve_refusal(config, address.resp, password is not None)
    if refusal is not None:
        log.warning("node %d: RESP door %s is off: %s", node_id, address.resp, refusal)
        return None
    door = Door(node_id, tuple(sorted(config.nodes)), password, process_id=os.getpid(),
                started=time.monotonic(), version=version, settings=config.settings)
    for peer in config.peers_of(node_id):
        door.peer_addresses[peer] = parse_endpoint(config.nodes[peer].router)
    try:
        return RespDoor(address.resp, door, config.settings.resp_stall_timeout_s, tls,
                        config.settings.resp_tls_handshake_timeout_s,
                        config.settings.resp_max_clients if max_clients is None
                        else max_clients)
    except OSError as exc:
        raise ConfigError(f"{config.source}: nodes.{node_id}.resp: {exc.strerror}") from None


__all__ = ["MAX_OUTPUT_BYTES", "PAUSE_OUTPUT_BYTES", "Closed", "RespDoor", "curve_refusal",
           "is_loopback", "make_door", "parse_endpoint", "read_password", "tls_context"]
