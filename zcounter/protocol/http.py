"""The request head of the metrics door, read sans I/O with h11.

Bytes in (:meth:`HeadReader.feed`), one verdict out: not yet complete, a request to
serve, or a refusal with the HTTP status to answer it with.  The door serves one request
per connection (``Connection: close``), so only the head matters: a body, pipelined
requests and anything after the head are never read.

Bounds, before any allocation they drive: the bytes of a head (h11's
``max_incomplete_event_size``, and this reader's own count, since h11 checks only heads
still incomplete); each feed is what one ``recv`` returned, so the buffer h11 keeps is at
most the bound plus one read.  Every h11 error is a refusal: nothing escapes but a
:class:`Refused`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import h11

from ..limits import METRICS_MAX_HEAD_BYTES


class Problem(str, Enum):
    """Why a head is refused."""

    TOO_LARGE = "head_too_large"
    BAD_REQUEST = "bad_request"


@dataclass(frozen=True)
class Head:
    """A complete request head the door may answer."""

    method: str
    target: str
    #: Header names in lower case; the last of repeated ones.
    headers: dict[str, str]

    def header(self, name: str) -> str:
        return self.headers.get(name, "")


@dataclass(frozen=True)
class Refused:
    """Answer ``status`` (``reason`` its phrase) and close."""

    status: int
    reason: str
    problem: Problem


#: What :meth:`HeadReader.feed` returns while the head is incomplete.
NEED_MORE = None
Verdict = Head | Refused | None

_REASONS = {400: "Bad Request", 405: "Method Not Allowed", 414: "URI Too Long",
            431: "Request Header Fields Too Large", 505: "HTTP Version Not Supported"}
#: Methods served; others are answered 405.
METHODS = frozenset({"GET", "HEAD"})


class HeadReader:
    """Reads one request head; after a verdict other than :data:`NEED_MORE` it is done
    (further feeds return the same verdict)."""

    __slots__ = ("_conn", "_seen", "max_bytes", "verdict")

    def __init__(self, max_bytes: int = METRICS_MAX_HEAD_BYTES) -> None:
        self.max_bytes = max_bytes
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_bytes)
        self._seen = 0
        self.verdict: Verdict = NEED_MORE

    def feed(self, data: bytes) -> Verdict:
        """The next bytes from the client (``b""``: it closed its side)."""
        if self.verdict is not NEED_MORE:
            return self.verdict
        self._seen += len(data)
        try:
            self._conn.receive_data(data)
            event = self._conn.next_event()
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            return self._refuse(status if status in _REASONS else 400,
                                Problem.TOO_LARGE if status == 431 else Problem.BAD_REQUEST)
        if event is h11.NEED_DATA:
            if self._seen > self.max_bytes:
                return self._refuse(431, Problem.TOO_LARGE)
            if not data:  # closed before a whole head: h11 says so on the next call
                return self._refuse(400, Problem.BAD_REQUEST)
            return NEED_MORE
        if not isinstance(event, h11.Request):
            return self._refuse(400, Problem.BAD_REQUEST)  # ConnectionClosed
        # The head is complete, but h11 bounds only heads still incomplete: one read
        # may have carried a whole head above the bound.
        head_bytes = self._seen - len(self._conn.trailing_data[0])
        if head_bytes > self.max_bytes:
            return self._refuse(431, Problem.TOO_LARGE)
        method = event.method.decode("ascii", "replace")
        if method not in METHODS:
            return self._refuse(405, Problem.BAD_REQUEST)
        self.verdict = Head(method, event.target.decode("ascii", "replace"),
                            {name.decode("ascii", "replace"): value.decode("latin-1")
                             for name, value in event.headers})
        return self.verdict

    def _refuse(self, status: int, problem: Problem) -> Refused:
        verdict = Refused(status, _REASONS[status], problem)
        self.verdict = verdict
        return verdict


__all__ = ["METHODS", "NEED_MORE", "Head", "HeadReader", "Problem", "Refused", "Verdict"]
