"""The Redis-protocol door's sockets: a plain listening TCP socket and its connections,
registered by file descriptor in the node's one ``zmq.Poller`` loop.

Why plain sockets and not a ZeroMQ ``STREAM`` socket: a STREAM socket drops or blocks at
its high-water mark with no per-connection view (libzmq#4828: a full queue can even block
closing), while a plain non-blocking socket per client gives exactly what the door must
control - how much one client has queued, whether it is still reading, and closing it.
pyzmq's ``Poller`` takes file descriptors beside zmq sockets, so the door lives in the
same loop as everything else and never needs a lock.

Per connection (:class:`~.respconn.Connection`): the
:class:`~zcounter.protocol.resp.session.Session` (protocol state, sans I/O) and an output
buffer.  Rules, each with its reason:

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

The parts: :mod:`.respaccept` (the listener, the client cap, accept pauses),
:mod:`.resptls` (the handshakes under way), :mod:`.respconn` (one connection's reads and
writes); this module's :class:`RespDoor` ties them to the poller, keeps the connections
that need a turn at the next cycle, and closes, counts and logs.

What the door needs from the cluster file (address, password, TLS context, whether
``curve`` mode lets it open) is :mod:`.respsetup`'s; :func:`make_door` puts it together.

Requests a session produces are handed to the core at once when it reads them
(:meth:`RespDoor.on_event`), or at the next cycle when they come from an answer
(``KEYS`` pages) or must see a flushed keyspace (:meth:`Session.take_requests`);
:attr:`RespDoor.busy` then tells the loop not to sleep in ``poll``.
"""

from __future__ import annotations

import contextlib
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
    RESP_MAX_CLIENTS,
    RESP_MAX_OUTPUT_BYTES,
    RESP_TLS_HANDSHAKE_TIMEOUT_S,
    RESP_TLS_LOG_INTERVAL_S,
)
from ..protocol.messages import ClientReply
from ..protocol.node import NodeCore
from ..protocol.resp.session import Door, RespClient, Session
from .fdbudget import Rejection
from .respaccept import Acceptor
from .respconn import PAUSE_OUTPUT_BYTES, Connection
from .respsetup import curve_refusal, is_loopback, parse_endpoint, read_password, tls_context
from .resptls import Handshakes, Step

log = logging.getLogger("zcounter.node")

# The door's bound, under this module's name: zcounter.limits.  (The per-connection
# ones are respconn's, the accept one respaccept's.)
MAX_OUTPUT_BYTES = RESP_MAX_OUTPUT_BYTES


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


class RespDoor:
    """The door of one node.  Used by the loop thread only."""

    def __init__(self, endpoint: str, door: Door, stall_timeout_s: float,
                 tls: ssl.SSLContext | None = None,
                 handshake_timeout_s: float = RESP_TLS_HANDSHAKE_TIMEOUT_S,
                 max_clients: int = RESP_MAX_CLIENTS) -> None:
        self.conns: dict[int, Connection] = {}  # by fd
        self.by_id: dict[int, Connection] = {}  # by connection number
        self._acceptor = Acceptor(endpoint, door, max_clients, self.conns)
        self.listener = self._acceptor.listener
        self.endpoint = endpoint
        self.door = door
        self.stall_timeout_s = stall_timeout_s
        self._next_conn = 0
        #: Sessions with requests not yet handed to the core.
        self._queued: set[Connection] = set()
        self._writing: set[Connection] = set()
        self.cycle = 0
        self.poller: zmq.Poller | None = None
        self.disconnects: dict[str, int] = {}
        #: TLS (None: plaintext).
        self.tls = tls
        self.handshake_timeout_s = handshake_timeout_s
        self._handshakes = Handshakes(tls)
        #: TLS connections with decrypted bytes OpenSSL holds and poll cannot show.
        self._unread: set[Connection] = set()
        #: Connections waiting out a wrong password's delay (RESP_AUTH_FAILURE_DELAY_S).
        self._penalised: set[Connection] = set()
        #: Per cause: when it may be logged next, and how many went unlogged meanwhile.
        self._quiet: dict[Closed, tuple[float, int]] = {}

    @property
    def max_clients(self) -> int:
        return self._acceptor.max_clients

    @property
    def rejected(self) -> dict[Rejection, int]:
        """Connections refused (or accepts failed), by reason."""
        return self._acceptor.rejected

    @property
    def tls_handshakes(self) -> int:
        """TLS handshakes completed."""
        return self._handshakes.completed

    # ------------------------------------------------------------------ loop hooks

    def register(self, poller: zmq.Poller) -> None:
        self.poller = poller
        self._acceptor.register(poller)

    def handles(self, fd: int) -> bool:
        return fd == self._acceptor.fd or fd in self.conns

    @property
    def deadline(self) -> float:
        """When the loop must wake for the door (the end of an accept pause)."""
        return self._acceptor.deadline

    @property
    def busy(self) -> bool:
        """Requests wait to be handed to the core, or TLS bytes to be read: the loop must
        not sleep."""
        return bool(self._queued or self._unread)

    def on_event(self, fd: int, events: int, core: NodeCore, now: float) -> None:
        if fd == self._acceptor.fd:
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
        self._acceptor.resume(now)
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
        self._acceptor.close()

    # ------------------------------------------------------------------ connections

    def _accept(self, now: float) -> None:
        for sock, address in self._acceptor.accept(now):
            wrapped = self._secure(sock, now)  # TLS when configured (None: client gone)
            if wrapped is None:
                continue
            self._next_conn += 1
            conn = Connection(wrapped, Session(self.door, self._next_conn, now, address), now)
            self.conns[conn.fd] = conn
            self.by_id[self._next_conn] = conn
            self.door.connected = len(self.conns)
            assert self.poller is not None
            self.poller.register(conn.fd, zmq.POLLIN)

    # ------------------------------------------------------------------ TLS

    def _secure(self, sock: socket.socket, now: float) -> socket.socket | None:
        """``sock`` as a TLS server socket whose handshake is yet to run (or ``sock``
        itself without TLS); None if the client has already gone (reset before we could
        wrap it: ``wrap_socket`` then raises, and has closed the descriptor)."""
        if self.tls is None:
            return sock
        try:
            return self._handshakes.wrap(sock, now + self.handshake_timeout_s)
        except (OSError, ValueError) as exc:
            self._count(Closed.TLS_HANDSHAKE_FAILED)
            self._note(Closed.TLS_HANDSHAKE_FAILED, now, "RESP door %s: a client left before "
                       "its TLS handshake (%s)", self.endpoint, exc)
            with contextlib.suppress(OSError):
                sock.close()
            return None

    def _handshake(self, conn: Connection, core: NodeCore, now: float) -> None:
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            step = self._handshakes.advance(sock)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
            self._note(Closed.TLS_HANDSHAKE_FAILED, now, "RESP client %s (id %d): TLS "
                       "handshake failed (%s); connection closed", conn.session.address,
                       conn.session.id, reason)
            self._close(conn, Closed.TLS_HANDSHAKE_FAILED)
            return
        if step is not Step.DONE:
            self._wait_handshake(conn, reading=step is Step.READ)
            return
        conn.handshaking = False
        # Commands may have come with the client's Finished: read them now.
        self._read(conn, core, now)

    def _wait_handshake(self, conn: Connection, reading: bool) -> None:
        """Poll for what OpenSSL needs next (``conn.reading``/``writing`` say what is
        registered, as :meth:`_poll_flags` expects once the handshake is done)."""
        if conn.reading == reading and conn.writing != reading:
            return
        conn.reading, conn.writing = reading, not reading
        assert self.poller is not None
        self.poller.register(conn.fd, zmq.POLLIN if reading else zmq.POLLOUT)

    def _expire_handshakes(self, now: float) -> None:
        for fd in self._handshakes.expired(now):
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

    def _tls_failed(self, conn: Connection, exc: ssl.SSLError, now: float) -> None:
        """A TLS error after the handshake (a corrupt record, a renegotiation attempt):
        that connection is closed, counted and (rate-limited) logged."""
        self._note(Closed.TLS_ERROR, now, "RESP client %s (id %d): TLS error (%s); "
                   "connection closed", conn.session.address, conn.session.id,
                   exc.reason or exc)
        self._close(conn, Closed.TLS_ERROR)

    def _count(self, reason: Closed) -> None:
        self.disconnects[reason.value] = self.disconnects.get(reason.value, 0) + 1

    # ------------------------------------------------------------------ reading, writing

    def _read(self, conn: Connection, core: NodeCore, now: float) -> None:
        try:
            penalised = conn.receive(now)
        except ssl.SSLError as exc:
            self._tls_failed(conn, exc, now)
            return
        except OSError:
            self._close(conn, Closed.RESET)
            return
        if penalised:
            # A wrong password: nothing more is read or sent until the delay is over.
            self._penalised.add(conn)
        self._feed(conn, core, now)
        if conn.fd in self.conns:
            self._flush(conn, now)

    def _feed(self, conn: Connection, core: NodeCore, now: float) -> None:
        session = conn.session
        handle, client = core.handle_request, session.client
        for request in session.take_requests(self.cycle):
            handle(client, request, now)
        if session.requests:
            self._queued.add(conn)
        else:
            self._queued.discard(conn)

    def _flush(self, conn: Connection, now: float) -> None:
        """Move the session's finished replies to the socket; then decide what to poll."""
        if conn.penalty_until > now:
            self._poll_flags(conn)  # neither read nor write until the delay is over
            return
        try:
            if not conn.write(now):
                self._close(conn, Closed.RESET)
                return
        except ssl.SSLError as exc:
            self._tls_failed(conn, exc, now)
            return
        session = conn.session
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

    def _poll_flags(self, conn: Connection) -> None:
        reading, writing = conn.wanted(held=conn in self._penalised)
        if reading and conn.tls and conn.tls_buffered():
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

    def _close(self, conn: Connection, reason: Closed) -> None:
        if self.conns.pop(conn.fd, None) is None:
            return
        self.by_id.pop(conn.session.client.conn, None)
        self._queued.discard(conn)
        self._writing.discard(conn)
        self._unread.discard(conn)
        self._penalised.discard(conn)
        if conn.handshaking:
            self._handshakes.forget(conn.fd)
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
