"""Where each RESP command ends, with its headers checked before hiredis sees a byte of it.

Why the door does not hand the socket's bytes straight to hiredis (issue 19):

* hiredis's ``Reader`` allocates an announced array at once (``PyList_New(N)``): the 13
  bytes ``*4294967295\\r\\n`` made it ask for 32 GB, and the ``MemoryError`` killed the node.
* it parses RESP3, where a command argument may be a simple string (``+x``) or a verbatim
  string (``=...``): those came back as ``bytes`` like a bulk string, the door counted the
  command's size as if each argument were a bulk, lost its place in the stream, and ran
  bytes from inside one argument as a further command.

So :class:`Framer` walks each command's headers itself - ``*N``, then ``N`` times ``$L``
and ``L`` bytes and CRLF, exactly what every Redis client sends (RESP2 "array of bulk
strings") - refusing, as Redis does (``networking.c``, ``processMultibulkBuffer``), any
``N`` or ``L`` above the limits before anything is allocated for them, any other type
byte, and any command larger than the limit.  Only whole, checked commands are then given
to hiredis, which turns them into words; the two agree on every boundary by construction.

The walk is incremental (state between calls: a command cut in 64 KiB reads, or one byte
at a time, is scanned once, not once per read), and costs one bounded header line per
word plus O(1) per body: bodies are skipped by length, never searched.

Blank lines (CR/LF) between commands are skipped, as Redis skips an empty inline
command: ``redis-cli --pipe`` sends ``\\r\\n`` before its closing ECHO.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from ...errors import ProtocolError
from ...limits import RESP_MAX_HEADER_BYTES
from .refusals import Refusal

_CRLF = b"\r\n"
_BLANK = _CRLF  # bytes skipped between commands
#: A canonical integer, as hiredis requires ("$04" is refused by it, so by the framer).
_INT = re.compile(rb"0|-?[1-9][0-9]{0,18}")


class FrameError(ProtocolError):
    """The stream is not a command the door takes; ``str()`` is Redis's error text
    (without its ``ERR`` code).  ``cause`` says which bound or rule, for the counters."""

    def __init__(self, text: str, cause: Refusal) -> None:
        super().__init__(text)
        self.cause = cause


@dataclass(frozen=True, slots=True)
class FrameLimits:
    """The bounds of one command: words, bytes per word, bytes in all."""

    max_arguments: int
    max_argument_bytes: int
    max_command_bytes: int


class _State(Enum):
    START = 0  # between commands: blank lines, then '*'
    ARRAY = 1  # the '*N' line
    HEADER = 2  # a '$L' line
    BODY = 3  # L bytes and CRLF


class Framer:
    """The command boundaries of one connection's input, found incrementally.

    The caller keeps the bytes (one growing buffer); :meth:`next_command` scans from where
    it stopped and returns the ``(start, end)`` of the next whole command in it, or None
    when more bytes are needed.  After the caller drops the first ``n`` bytes of its
    buffer it calls :meth:`drop` so the offsets follow."""

    __slots__ = ("_body", "_left", "_pos", "_state", "start", "words")

    def __init__(self) -> None:
        self._state = _State.START
        #: Where the command being scanned starts in the caller's buffer (after blanks).
        self.start = 0
        self._pos = 0
        self._left = 0  # bulk strings still to come
        self._body = 0  # bytes of the current bulk still to skip, CRLF included
        #: Words of the command last returned (0: an empty or null array, to ignore).
        self.words = 0

    def drop(self, n: int) -> None:
        """The caller removed the first ``n`` bytes (all before :attr:`start`)."""
        self.start -= n
        self._pos -= n

    def next_command(self, buf: bytes | bytearray, limits: FrameLimits) -> tuple[int, int] | None:
        """The next whole command in ``buf``, or None; raises :class:`FrameError`."""
        n = len(buf)
        pos = self._pos
        state = self._state
        try:
            while True:
                if state is _State.START:
                    while pos < n and buf[pos] in _BLANK:
                        pos += 1
                    self.start = pos
                    if pos == n:
                        return None
                    if buf[pos] != 0x2A:  # '*'
                        raise FrameError(
                            "Protocol error: expected a RESP array of bulk strings (every "
                            "Redis client sends those; inline commands are not supported)",
                            Refusal.INLINE)
                    state = _State.ARRAY
                if state is _State.ARRAY:
                    got = _line(buf, pos, "mbulk")
                    if got is None:
                        return None
                    value, pos = got
                    if value > limits.max_arguments:
                        raise FrameError("Protocol error: invalid multibulk length",
                                         Refusal.MULTIBULK_LENGTH)
                    if value <= 0:  # "*0", "*-1": ignored, as Redis does
                        state = _State.START
                        self.words = 0
                        return self.start, pos
                    self.words = self._left = value
                    state = _State.HEADER
                if state is _State.HEADER:
                    if pos == n:
                        return None
                    if buf[pos] != 0x24:  # '$'
                        raise FrameError(
                            f"Protocol error: expected '$', got '{_show(buf[pos])}'",
                            Refusal.NOT_BULK)
                    got = _line(buf, pos, "bulk")
                    if got is None:
                        return None
                    value, pos = got
                    if not 0 <= value <= limits.max_argument_bytes:
                        raise FrameError("Protocol error: invalid bulk length", Refusal.BULK_LENGTH)
                    if pos - self.start + value + 2 > limits.max_command_bytes:
                        raise FrameError("Protocol error: too big command", Refusal.COMMAND_BYTES)
                    self._body = value + 2
                    state = _State.BODY
                if state is _State.BODY:
                    take = min(self._body, n - pos)
                    pos += take
                    self._body -= take
                    if self._body:
                        return None
                    if buf[pos - 2:pos] != _CRLF:
                        raise FrameError("Protocol error: expected CRLF after a bulk string",
                                         Refusal.NO_CRLF)
                    self._left -= 1
                    if self._left:
                        state = _State.HEADER
                        continue
                    state = _State.START
                    return self.start, pos
        finally:
            self._pos = pos
            self._state = state


def _line(buf: bytes | bytearray, pos: int, what: str) -> tuple[int, int] | None:
    """The integer of the header line at ``pos`` (after its type byte) and the offset
    after its CRLF; None while the line is incomplete."""
    end = buf.find(_CRLF, pos + 1, pos + RESP_MAX_HEADER_BYTES)
    if end == -1:
        if len(buf) - pos >= RESP_MAX_HEADER_BYTES:
            raise FrameError(f"Protocol error: too big {what} count string",
                             Refusal.HEADER_BYTES)
        return None
    raw = bytes(buf[pos + 1:end])
    if _INT.fullmatch(raw) is None:
        if what == "mbulk":
            raise FrameError("Protocol error: invalid multibulk length",
                             Refusal.MULTIBULK_LENGTH)
        raise FrameError("Protocol error: invalid bulk length", Refusal.BULK_LENGTH)
    return int(raw), end + 2


def _show(byte: int) -> str:
    return chr(byte) if 0x20 <= byte < 0x7F else f"\\x{byte:02x}"


__all__ = ["FrameError", "FrameLimits", "Framer"]
