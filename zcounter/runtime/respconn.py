"""One RESP connection's bytes: what it reads into its session, what it sends of its
replies, and whether it wants to read or write next (:mod:`.resp` says why each rule).

Sans poller: the door (:class:`~.resp.RespDoor`) registers what a connection wants,
keeps the sets of connections that need it at the next cycle, and closes them.
"""

from __future__ import annotations

import errno
import socket
import ssl

from ..limits import (
    RESP_AUTH_FAILURE_DELAY_S,
    RESP_MAX_AUTH_FAILURES,
    RESP_PAUSE_OUTPUT_BYTES,
    RESP_READ_BYTES,
    RESP_READS_PER_CYCLE,
    RESP_TLS_SEND_BYTES,
)
from ..protocol.resp.session import MAX_PIPELINE, Session

# The connection's bounds, under this module's names (tests patch them here):
# zcounter.limits.
READ_BYTES = RESP_READ_BYTES
READS_PER_CYCLE = RESP_READS_PER_CYCLE
PAUSE_OUTPUT_BYTES = RESP_PAUSE_OUTPUT_BYTES
TLS_SEND_BYTES = RESP_TLS_SEND_BYTES

_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


class Connection:
    """A client's socket (plain, or TLS once its handshake is done), its session and
    its output buffer."""

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
        #: What the door has registered in the poller for it.
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

    def receive(self, now: float) -> bool:
        """Read what the socket holds (at most :data:`READS_PER_CYCLE` reads) into the
        session; stop early where reading must pause.  True if a wrong password was
        given: nothing more is read or sent until :attr:`penalty_until`.

        Raises ``ssl.SSLError`` for a TLS error, ``OSError`` if the client is gone."""
        session = self.session
        failures = session.auth_failures
        for _ in range(READS_PER_CYCLE):
            try:
                data = self.sock.recv(READ_BYTES)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError,
                    ssl.SSLWantWriteError):
                # (WantWrite: OpenSSL must send first, e.g. a TLS 1.3 key update; it goes
                # out with the next send, or this read is retried at the next POLLIN.)
                return False
            if not data:
                self.eof = True
                return False
            session.receive(data, now)
            if session.auth_failures != failures:
                self.penalty_until = now + RESP_AUTH_FAILURE_DELAY_S * 2 ** min(
                    session.auth_failures - 1, RESP_MAX_AUTH_FAILURES)
                return True
            # A short read empties a plain socket's buffer, not a TLS one's: a TLS read
            # returns one record (16 KiB at most) whatever is behind it.
            if (session.closing or session.backlog >= MAX_PIPELINE
                    or self.pending >= PAUSE_OUTPUT_BYTES
                    or (len(data) < READ_BYTES and not self.tls)):
                return False
        return False

    def write(self, now: float) -> bool:
        """Move the session's finished replies to the output buffer and send what the
        socket takes (a TLS connection, :data:`TLS_SEND_BYTES` at most: the stall
        clock sees a slow reader's progress, and a retry after ``SSLWantWriteError``
        repeats the same start).  False if the client is gone (EPIPE, ECONNRESET).

        Raises ``ssl.SSLError`` for a TLS error."""
        data = self.session.take_output(now)
        if data:
            if not self.pending:
                self.progress = now  # the stall clock starts when output starts waiting
            self.out += data
        if not self.pending:
            return True
        end = self.out_at + TLS_SEND_BYTES if self.tls else len(self.out)
        try:
            with memoryview(self.out) as view:
                sent = self.sock.send(view[self.out_at:end])
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError,
                ssl.SSLWantReadError):
            sent = 0
        except ssl.SSLError:
            raise
        except OSError as exc:
            if isinstance(exc, _GONE) or exc.errno in (errno.EPIPE, errno.ECONNRESET):
                return False
            raise
        if sent:
            self.progress = now
            self.out_at += sent
            if self.out_at == len(self.out):
                self.out.clear()
                self.out_at = 0
            elif self.out_at > 1024 * 1024 and self.out_at * 2 > len(self.out):
                del self.out[:self.out_at]  # amortised: compact when half is sent
                self.out_at = 0
        return True

    def wanted(self, held: bool) -> tuple[bool, bool]:
        """Whether to poll for input and for output (neither while ``held``).  Reading
        pauses while the session has MAX_PIPELINE commands unanswered or
        PAUSE_OUTPUT_BYTES wait to be sent: the client's sends then block (TCP
        backpressure) instead of the node's memory growing."""
        session = self.session
        reading = (not self.eof and not session.closing and session.backlog < MAX_PIPELINE
                   and self.pending < PAUSE_OUTPUT_BYTES and not held)
        return reading, self.pending > 0 and not held

    def tls_buffered(self) -> bool:
        """OpenSSL holds decrypted bytes that ``poll`` cannot show."""
        sock = self.sock
        assert isinstance(sock, ssl.SSLSocket)
        return sock.pending() > 0
