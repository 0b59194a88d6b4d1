"""The TLS handshakes of the RESP door's connections, driven by poll events
(:mod:`.resp` gives the rules: wrapped at accept, no session data before the end, a
deadline per handshake).

Sans poller and sans logging: :class:`Handshakes` says what OpenSSL wants next and which
handshakes are late; the door registers, counts, logs and closes.
"""

from __future__ import annotations

import socket
import ssl
from enum import Enum


class Step(Enum):
    """What a handshake needs after one ``do_handshake``."""

    DONE = "done"
    #: Wait for POLLIN (``SSLWantReadError``).
    READ = "read"
    #: Wait for POLLOUT (``SSLWantWriteError``).
    WRITE = "write"


class Handshakes:
    """The handshakes under way: each descriptor's deadline, in accept order."""

    def __init__(self, context: ssl.SSLContext | None) -> None:
        #: None: the door is plaintext, and nothing is ever wrapped.
        self.context = context
        #: fd -> deadline of each handshake under way, in accept order (so in deadline
        #: order: the timeout is one for all): the expired ones are at the front.
        self._deadlines: dict[int, float] = {}
        #: Handshakes completed.
        self.completed = 0

    def __len__(self) -> int:
        return len(self._deadlines)

    def wrap(self, sock: socket.socket, deadline: float) -> ssl.SSLSocket:
        """``sock`` as a TLS server socket whose handshake is yet to run.  Raises
        ``OSError`` or ``ValueError`` if the client has already gone (reset before it
        could be wrapped); the caller closes ``sock``."""
        assert self.context is not None
        wrapped = self.context.wrap_socket(sock, server_side=True,
                                           do_handshake_on_connect=False)
        fd = wrapped.fileno()
        self._deadlines.pop(fd, None)  # (re-inserted at the end: the order is the deadlines')
        self._deadlines[fd] = deadline
        return wrapped

    def advance(self, sock: ssl.SSLSocket) -> Step:
        """One ``do_handshake``.  Raises ``OSError`` (``ssl.SSLError`` is one) or
        ``ValueError`` if the handshake failed."""
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            return Step.READ
        except ssl.SSLWantWriteError:
            return Step.WRITE
        self._deadlines.pop(sock.fileno(), None)
        self.completed += 1
        return Step.DONE

    def expired(self, now: float) -> list[int]:
        """The descriptors whose handshakes are past their deadline (forgotten here)."""
        expired = []
        for fd, deadline in self._deadlines.items():
            if deadline > now:
                break
            expired.append(fd)
        for fd in expired:
            del self._deadlines[fd]
        return expired

    def forget(self, fd: int) -> None:
        self._deadlines.pop(fd, None)
