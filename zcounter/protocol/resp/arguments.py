"""Command arguments as Redis checks them, and Redis's error texts for those it refuses.

A handler that refuses an argument raises :class:`BadArgument` with the text to answer;
the session answers it in the command's place and nothing else happens (the connection
stays).  The texts are Redis 7's (``string2ll``, ``string2ull``, ``commandCheckExistence``),
so clients and tools that match on them keep working.
"""

from __future__ import annotations

import re

from ...errors import ProtocolError
from ...model.pncounter import MAX_STEP
from ..codec import validate_rid
from ..messages import MAX_KEY_BYTES
from .commands import SUBCOMMANDS

NOT_INT = "ERR value is not an integer or out of range"
SYNTAX = "ERR syntax error"
WRONGPASS = "WRONGPASS invalid username-password pair or user is disabled."
BAD_NAME = "ERR Client names cannot contain spaces, newlines or special characters."

_INT64 = re.compile(rb"-?(?:0|[1-9][0-9]{0,18})")
I64_MIN, I64_MAX = -(2**63), 2**63 - 1


class BadArgument(ProtocolError):
    """An argument the command refuses; its text is the Redis error to answer with."""


def int64(raw: bytes, message: str = NOT_INT) -> int:
    """Redis's ``string2ll``: an optional minus, no leading zeros, no spaces, no plus,
    within signed 64 bits."""
    if _INT64.fullmatch(raw) is None:
        raise BadArgument(message)
    value = int(raw)
    if not I64_MIN <= value <= I64_MAX:
        raise BadArgument(message)
    return value


def step(raw: bytes, value: int | None = None) -> int:
    """A step of INCRBY/DECRBY: an int64 (Redis's check) within zcounter's +-2**32."""
    amount = int64(raw) if value is None else value
    if not -MAX_STEP <= amount <= MAX_STEP:
        raise BadArgument(NOT_INT)
    return amount


def cursor(raw: bytes) -> int:
    """Redis's ``string2ull``: a non-negative integer, else "invalid cursor"."""
    try:
        value = int64(raw, "ERR invalid cursor")
    except BadArgument:
        if raw.isdigit() and raw[:1] != b"0" and int(raw) < 2**64:
            return int(raw)  # beyond int64: a valid cursor for Redis, unknown here
        raise
    if value < 0:
        raise BadArgument("ERR invalid cursor")
    return value


def key(raw: bytes) -> str:
    """A zcounter key: 1-256 bytes of UTF-8 (Redis allows any bytes; the native protocol
    and the storage need text)."""
    if not raw:
        raise BadArgument("ERR invalid key: zcounter keys are 1 to 256 bytes of UTF-8, "
                          "not empty")
    if len(raw) > MAX_KEY_BYTES:
        raise BadArgument(f"ERR invalid key: {len(raw)} bytes long, zcounter keys are at most "
                          f"{MAX_KEY_BYTES} bytes of UTF-8")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadArgument("ERR invalid key: not UTF-8 (zcounter keys are text)") from None


def rid(raw: bytes) -> str:
    """A request id (``ZC.INCRBY``, ``ZC.DEL``), checked as the native protocol checks it."""
    try:
        return validate_rid(raw.decode("latin-1"))
    except ProtocolError as exc:
        raise BadArgument(f"ERR invalid request id: {exc}") from None


def text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def printable(raw: bytes) -> bool:
    return all(0x21 <= b <= 0x7E for b in raw)


def unknown(name: bytes, args: list[bytes]) -> str:
    """Redis's text (server.c, ``commandCheckExistence``): the name as sent, then the
    first arguments, quoted, until 128 characters."""
    quoted = ""
    for arg in args:
        if len(quoted) >= 128:
            break
        quoted += "'" + arg.decode("utf-8", "replace")[:128 - len(quoted)] + "' "
    return (f"ERR unknown command '{name.decode('utf-8', 'replace')[:128]}', "
            f"with args beginning with: {quoted}")


def unknown_sub(sub: bytes, container: str) -> str:
    return (f"ERR unknown subcommand '{sub.decode('utf-8', 'replace')[:128]}'. "
            f"Try {container} HELP.")


def wrong_arity(name: str) -> str:
    return f"ERR wrong number of arguments for '{name}' command"


def subcommand(words: list[bytes]) -> str:
    """The subcommand ``words[1]`` of the container command ``words[0]`` (CLIENT,
    COMMAND), lower-cased, once it is known and its arity fits; Redis's errors
    otherwise."""
    container = words[0].decode("latin-1").upper()
    sub = words[1].lower().decode("latin-1")
    spec = SUBCOMMANDS[container.lower()].get(sub)
    if spec is None:
        raise BadArgument(unknown_sub(words[1], container))
    if not spec.accepts(len(words)):
        raise BadArgument(wrong_arity(spec.name))
    return sub


__all__ = ["BAD_NAME", "I64_MAX", "I64_MIN", "NOT_INT", "SYNTAX", "WRONGPASS", "BadArgument",
           "cursor", "int64", "key", "printable", "rid", "step", "subcommand", "text",
           "unknown", "unknown_sub", "wrong_arity"]
