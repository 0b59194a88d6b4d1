"""The metrics door: a bounded HTTP/1.1 server for ``/metrics``, one thread, a selector.

It replaces ``prometheus_client.start_http_server``, a thread per connection with no
cap and no read timeout: idle connections each held a thread and a descriptor forever,
without any key in ``curve`` mode too (issue 19).  Here every connection is bounded
before it costs anything:

* at most ``max_clients`` at once (setting ``metrics_max_clients``, or the door's share
  of the descriptor budget).  At the cap a new connection takes the place of the oldest
  one still without a whole request head, which is closed: with a plain cap, 32 idle
  sockets renewed every head timeout would lock Prometheus out for good, whereas a
  scraper sends its head within a millisecond of connecting and is served at once, so
  it is evicted only if 32 newer connections arrive in that millisecond.  If every
  connection is being answered, the new one gets 503 and is closed;
* a request head must arrive whole within :data:`~zcounter.limits.METRICS_HEAD_TIMEOUT_S`
  of the accept and fit :data:`~zcounter.limits.METRICS_MAX_HEAD_BYTES`
  (:class:`~zcounter.protocol.http.HeadReader`, h11); else 408/431/400 and close;
* one request per connection (``Connection: close``); the response must be taken within
  :data:`~zcounter.limits.METRICS_WRITE_TIMEOUT_S`;
* one thread, whatever the number of connections; a failed ``accept`` pauses the
  listener (:class:`~.fdbudget.AcceptBackoff`) and is logged once per interval.

Rendering is the caller's ``render(head) -> (content type, body)``, run in this thread
between two selector waits: the metrics module renders with ``prometheus_client``.  Each
refusal or forced close is counted by :class:`~.fdbudget.Rejection`.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable

from ..limits import (
    METRICS_HEAD_TIMEOUT_S,
    METRICS_MAX_CLIENTS,
    METRICS_MAX_HEAD_BYTES,
    METRICS_WRITE_TIMEOUT_S,
)
from ..protocol.http import Head, HeadReader, Refused
from .fdbudget import RESOURCE_ERRNOS, AcceptBackoff, Rejection, Throttled

log = logging.getLogger("zcounter.node")

#: Bytes asked of one ``recv``: a whole Prometheus request head (~250 bytes) at once.
READ_BYTES = 4096
#: Connections the kernel queues before the door accepts them.  A client opening 300
#: connections one after another against a bare accept loop in a thread took 36.85 s
#: with prometheus_client's backlog of 5 (a 1 s SYN retransmission each time the queue
#: was full), 2.06 s with 64, 0.02 s with 512 (docs/measurements/accept_backlog.py).
#: Queued connections cost no descriptor.  As the RESP door's.
BACKLOG = 512
#: Longest selector wait, so a stop is noticed even without a wake-up.
MAX_WAIT_S = 1.0

Render = Callable[[Head], tuple[str, bytes]]


def _response(status: int, reason: str, content_type: str = "text/plain; charset=utf-8",
              body: bytes = b"", head_only: bool = False,
              extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {content_type}",
             f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body)


_BUSY = _response(503, "Service Unavailable", body=b"too many connections\n")
_TIMEOUT = _response(408, "Request Timeout", body=b"request head not received in time\n")


class _Conn:
    __slots__ = ("deadline", "out", "reader", "sock", "writing")

    def __init__(self, sock: socket.socket, deadline: float, max_head_bytes: int) -> None:
        self.sock = sock
        self.deadline = deadline
        self.reader = HeadReader(max_head_bytes)
        self.out = memoryview(b"")
        self.writing = False


class HttpDoor:
    """Serves ``render`` on ``host:port`` until :meth:`close`."""

    def __init__(self, host: str, port: int, render: Render,
                 max_clients: int = METRICS_MAX_CLIENTS,
                 head_timeout_s: float = METRICS_HEAD_TIMEOUT_S,
                 max_head_bytes: int = METRICS_MAX_HEAD_BYTES,
                 write_timeout_s: float = METRICS_WRITE_TIMEOUT_S) -> None:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        self.listener = socket.create_server((host, port), family=family,
                                                 backlog=BACKLOG)
        self.listener.setblocking(False)
        self.port: int = self.listener.getsockname()[1]
        self.render = render
        self.max_clients = max_clients
        self.head_timeout_s = head_timeout_s
        self.max_head_bytes = max_head_bytes
        self.write_timeout_s = write_timeout_s
        #: Written by the door's thread only; read (plain ints) by a scrape, which runs
        #: in that thread too.
        self.rejected: dict[Rejection, int] = {}
        self.accepted = 0
        self.conns: dict[int, _Conn] = {}
        self._backoff = AcceptBackoff()
        self._noise = Throttled(log)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.listener, selectors.EVENT_READ)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="zcounter-metrics",
                                        daemon=True)
        self._thread.start()

    def stats(self) -> dict[str, object]:
        return {"clients": len(self.conns), "accepted": self.accepted,
                "max_clients": self.max_clients,
                "rejections": {reason.value: n for reason, n in self.rejected.items()}}

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._thread.join(timeout=5)
        for conn in list(self.conns.values()):
            self._close(conn)
        self._selector.close()
        for sock in (self.listener, self._wake_r, self._wake_w):
            sock.close()

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        while not self._stop:
            now = time.monotonic()
            wait = MAX_WAIT_S
            for conn in self.conns.values():
                wait = min(wait, conn.deadline - now)
            if self._backoff.until is not None:
                wait = min(wait, self._backoff.until - now)
            try:
                ready = self._selector.select(max(0.0, wait))
            except OSError as exc:  # pragma: no cover - EINTR is retried by Python
                log.error("metrics door: select failed (%s)", exc)
                ready = []
            now = time.monotonic()
            for key, events in ready:
                sock = key.fileobj
                try:
                    if sock is self.listener:
                        self._accept(now)
                    elif sock is self._wake_r:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(64)
                    elif (ready_conn := self.conns.get(key.fd)) is not None:
                        self._on_conn(ready_conn, events, now)
                except Exception:  # a bug must not end the door: log it, go on
                    log.exception("metrics door: unexpected error")
                    if (gone := self.conns.get(key.fd)) is not None:
                        self._close(gone)
            if self._backoff.due(now):
                self._selector.register(self.listener, selectors.EVENT_READ)
            for conn in [c for c in self.conns.values() if c.deadline <= now]:
                if conn.writing:
                    self._count(Rejection.WRITE_TIMEOUT)
                else:
                    self._count(Rejection.HEAD_TIMEOUT)
                    with contextlib.suppress(OSError):
                        conn.sock.send(_TIMEOUT)
                self._close(conn)

    def _accept(self, now: float) -> None:
        # A few per wake-up: the backlog is drained over cycles, not in one long burst.
        for _ in range(64):
            try:
                sock, _address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                self._count(Rejection.ACCEPT_FAILED)
                pause = self._backoff.failed(now)
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(self.listener)
                cause = errno.errorcode.get(exc.errno or 0, "error")
                self._noise.log(
                    logging.WARNING if exc.errno in RESOURCE_ERRNOS else logging.ERROR,
                    f"accept {cause}", now, f"metrics door: accept failed "
                    f"({exc.strerror or exc}); not accepting for {pause:.2f}s")
                return
            self._backoff.succeeded()
            self.accepted += 1
            sock.setblocking(False)
            if len(self.conns) >= self.max_clients and not self._evict(now):
                self._count(Rejection.MAX_CLIENTS)
                self._noise.log(logging.WARNING, "max_clients", now,
                                f"metrics door: refused a connection: {len(self.conns)} "
                                "connections being answered, the most it holds")
                with contextlib.suppress(OSError):
                    sock.send(_BUSY)
                sock.close()
                continue
            conn = _Conn(sock, now + self.head_timeout_s, self.max_head_bytes)
            self.conns[sock.fileno()] = conn
            self._selector.register(sock, selectors.EVENT_READ)

    def _evict(self, now: float) -> bool:
        """Close the oldest connection still reading its head (dicts keep insertion
        order: the first is the oldest); False if every one is being answered."""
        for conn in self.conns.values():
            if not conn.writing:
                self._count(Rejection.EVICTED)
                self._noise.log(logging.WARNING, "evicted", now,
                                f"metrics door: {len(self.conns)} connections, the most it "
                                "holds: closed the oldest one without a request head")
                with contextlib.suppress(OSError):
                    conn.sock.send(_TIMEOUT)
                self._close(conn)
                return True
        return False

    def _on_conn(self, conn: _Conn, events: int, now: float) -> None:
        if conn.writing:
            self._send(conn)
            return
        try:
            data = conn.sock.recv(READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        verdict = conn.reader.feed(data)
        if verdict is None:
            return
        if isinstance(verdict, Refused):
            if not data:  # the client went away before a whole head: nobody to answer
                self._close(conn)
                return
            self._count(Rejection(verdict.problem.value))
            self._respond(conn, _response(verdict.status, verdict.reason), now)
            return
        try:
            content_type, body = self.render(verdict)
        except Exception:
            log.exception("metrics door: rendering failed")
            self._respond(conn, _response(500, "Internal Server Error"), now)
            return
        gzip_ok = "gzip" in verdict.header("accept-encoding")
        extra: tuple[tuple[str, str], ...] = ()
        if gzip_ok:
            body = gzip.compress(body, compresslevel=1)
            extra = (("Content-Encoding", "gzip"),)
        self._respond(conn, _response(200, "OK", content_type, body,
                                      head_only=verdict.method == "HEAD", extra=extra), now)

    def _respond(self, conn: _Conn, data: bytes, now: float) -> None:
        conn.out = memoryview(data)
        conn.writing = True
        conn.deadline = now + self.write_timeout_s
        self._selector.modify(conn.sock, selectors.EVENT_WRITE)
        self._send(conn)

    def _send(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        conn.out = conn.out[sent:]
        if not conn.out:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_WR)
            self._close(conn)

    def _count(self, reason: Rejection) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def _close(self, conn: _Conn) -> None:
        fd = conn.sock.fileno()
        if self.conns.pop(fd, None) is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)
        with contextlib.suppress(OSError):
            conn.sock.close()


__all__ = ["HttpDoor", "Render"]
