"""RESP2 replies as bytes (what the door writes; parsing what clients send is hiredis's job).

Reply types (redis.io, "Redis serialization protocol specification", RESP2): simple
string ``+OK``, error ``-ERR ...``, integer ``:5``, bulk string ``$1\\r\\n5``, nil bulk
``$-1``, array ``*2 ...``.  RESP2 has no map type: where Redis 7 answers a map under RESP3
(``HELLO``, ``COMMAND DOCS``), it sends a flat array of alternating names and values under
RESP2, and so does the door.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
QUEUED = b"+QUEUED\r\n"
NIL = b"$-1\r\n"
EMPTY_ARRAY = b"*0\r\n"

#: A value of an array reply: bytes/str are bulk strings, int an integer, None a nil,
#: :class:`Status` a simple string, a list or tuple a nested array.
Value = "bytes | str | int | None | Status | Sequence[Value]"


class Status(str):
    """A simple string (``+name``) inside an array, e.g. COMMAND's flags."""


def simple(text: str) -> bytes:
    return b"+" + _line(text) + b"\r\n"


def error(text: str) -> bytes:
    """``text`` starts with the error code (``ERR``, ``WRONGPASS`` ...), as Redis's
    ``addReplyError`` prints it.  CR and LF would end the line early: Redis maps them to
    spaces, and so does this."""
    return b"-" + _line(text) + b"\r\n"


def integer(value: int) -> bytes:
    return b":%d\r\n" % value


def bulk(data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return b"$%d\r\n%s\r\n" % (len(raw), raw)


def array(items: Iterable[object]) -> bytes:
    parts = [_value(item) for item in items]
    return b"*%d\r\n" % len(parts) + b"".join(parts)


def bulk_array(items: Sequence[bytes | None]) -> bytes:
    """An array of bulk strings and nils (MGET, KEYS): the common case, kept cheap."""
    out = [b"*%d\r\n" % len(items)]
    for item in items:
        out.append(NIL if item is None else b"$%d\r\n%s\r\n" % (len(item), item))
    return b"".join(out)


def _value(item: object) -> bytes:
    if item is None:
        return NIL
    if isinstance(item, Status):
        return simple(item)
    if isinstance(item, (bytes, str)):
        return bulk(item)
    if isinstance(item, bool):  # an int subclass: say what it means
        return integer(int(item))
    if isinstance(item, int):
        return integer(item)
    if isinstance(item, (list, tuple)):
        return array(item)
    raise TypeError(f"no RESP2 form for {type(item).__name__}")


def _line(text: str) -> bytes:
    return text.replace("\r", " ").replace("\n", " ").encode("utf-8", "replace")


__all__ = ["EMPTY_ARRAY", "NIL", "OK", "PONG", "QUEUED", "Status", "array", "bulk",
           "bulk_array", "error", "integer", "simple"]
