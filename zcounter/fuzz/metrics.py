"""The metrics door's fuzz target: a real HTTP server on loopback, fed over a real socket.

:class:`MetricsTarget` starts the node's own :class:`~zcounter.runtime.metrics.
MetricsServer` in this process, with a stand-in for the node's loop (a thread that
publishes a snapshot of a real core whenever a scrape asks), and is called with bytes:
it connects, sends them, half-closes, reads whatever comes back (bounded in bytes and
time), and then checks that a well-formed scrape on a new connection is still answered
within :data:`ANSWER_S`.  A server that stops answering is the bug.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType

from ..runtime.metrics import MetricsServer, NodeMetrics
from .targets import TargetFailed, fresh_core

#: A healthy scrape of the stand-in is answered in milliseconds; the check allows this.
ANSWER_S = 2.0
#: Most bytes read back from one input (a scrape is ~10 KiB).
READ_LIMIT = 1 << 20
SCRAPE = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def exchange(host: str, port: int, data: bytes, timeout_s: float = ANSWER_S,
             half_close: bool = True) -> bytes:
    """Send ``data`` on a new connection, half-close, read until the server closes or
    ``timeout_s`` passes (at most :data:`READ_LIMIT` bytes).  Returns what was read."""
    got = bytearray()
    deadline = time.monotonic() + timeout_s
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        while len(got) < READ_LIMIT:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, OSError):
                break
            if not chunk:
                break
            got += chunk
    return bytes(got)


class MetricsTarget:
    """Callable target (bytes -> None) over a live in-process metrics server."""

    def __init__(self) -> None:
        self.metrics = NodeMetrics("fuzz")
        self.core = fresh_core()
        self.server = MetricsServer("127.0.0.1:0", self.metrics)
        self.port = self.server.port
        self._stop = threading.Event()
        self._loop = threading.Thread(target=self._serve, name="fuzz-metrics-loop",
                                      daemon=True)
        self._loop.start()

    def _serve(self) -> None:
        # The node's loop tests the flag once per cycle; 1 ms cycles here.
        while not self._stop.wait(0.001):
            if self.metrics.wanted:
                self.metrics.publish(self.core, time.monotonic(), None, {})

    def __call__(self, data: bytes) -> None:
        exchange("127.0.0.1", self.port, data)
        started = time.monotonic()
        try:
            reply = exchange("127.0.0.1", self.port, SCRAPE)
        except OSError as exc:
            raise TargetFailed(f"the metrics server refused a scrape after the input: "
                               f"{exc}") from exc
        took = time.monotonic() - started
        if not reply.startswith(b"HTTP/1.") or b" 200 " not in reply.split(b"\r\n", 1)[0]:
            raise TargetFailed(f"a scrape after the input got {reply[:80]!r} "
                               f"in {took:.2f} s")

    def close(self) -> None:
        self._stop.set()
        self._loop.join(5)
        self.server.close()

    def __enter__(self) -> MetricsTarget:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


__all__ = ["ANSWER_S", "MetricsTarget", "exchange"]
