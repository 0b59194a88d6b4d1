"""The keyspace commands: ``SCAN`` and ``KEYS``, pages of the core's sorted index of keys
(``ListKeys``) filtered by a Redis glob pattern (:mod:`.glob`).

A page lists at most ``MAX_PAGE`` keys, ``RESP_MAX_SLOW_MATCH_PAGE`` when the pattern is
slow to match; ``SCAN`` answers one page per call, its cursor a node-wide number mapped to
the last key listed (at most ``RESP_MAX_CURSORS`` per connection, the least recently made
forgotten); ``KEYS`` asks for page after page, each after the previous one's commit, as
``SCAN`` would (no snapshot), its reply at most ``RESP_MAX_KEYS_REPLY_BYTES``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...limits import (
    RESP_MAX_CURSORS,
    RESP_MAX_KEYS_REPLY_BYTES,
    RESP_MAX_PATTERN_BYTES,
    RESP_MAX_SLOW_MATCH_PAGE,
)
from ..codec import MAX_PAGE
from ..messages import ClientReply, KeysPage, ListKeys, Refused
from . import arguments as A
from . import replies as R
from .answers import CommandHandler, Slot, refusal
from .door import Door
from .glob import compile_glob, is_slow, literal_prefix
from .refusals import Refusal

if TYPE_CHECKING:
    from .session import Session

_TYPES = (b"string", b"list", b"set", b"zset", b"hash", b"stream")


def scan(s: Session, words: list[bytes], slot: Slot) -> None:
    cursor = A.cursor(words[1])
    count, pattern, type_ok = 10, b"*", True
    i = 2
    while i < len(words):
        option = words[i].lower()
        if option == b"count" and i + 1 < len(words):
            count = A.int64(words[i + 1])
            if count < 1:
                raise A.BadArgument(A.SYNTAX)
        elif option == b"match" and i + 1 < len(words):
            pattern = _pattern(s.door, words[i + 1])
        elif option == b"type" and i + 1 < len(words):
            name = words[i + 1].lower()
            if name not in _TYPES:
                raise A.BadArgument(f"ERR unknown type name '{A.text(words[i + 1])}'")
            type_ok = name == b"string"  # every counter reads as a string
        else:
            raise A.BadArgument(A.SYNTAX)
        i += 2
    if cursor == 0:
        after = None
    else:
        try:
            after = s.cursors.pop(cursor)
        except KeyError:
            raise A.BadArgument("ERR invalid cursor") from None
    match = compile_glob(pattern)
    limit = min(count, _page(pattern))

    def page(reply: ClientReply) -> bytes:
        if isinstance(reply, Refused):
            return refusal(reply)
        assert isinstance(reply, KeysPage)
        found = [k.encode() for k, _ in reply.entries if type_ok and match(k)]
        nxt = 0
        if reply.more and reply.entries:
            nxt = s.door.next_cursor()
            s.cursors[nxt] = reply.entries[-1][0]
            while len(s.cursors) > RESP_MAX_CURSORS:
                s.cursors.popitem(last=False)
        return R.array([str(nxt).encode(), found])
    s.ask(slot, lambda t: ListKeys(t, literal_prefix(pattern), after, limit), page)


def keys(s: Session, words: list[bytes], slot: Slot) -> None:
    pattern = _pattern(s.door, words[1])
    prefix = literal_prefix(pattern)
    match = compile_glob(pattern)
    size = _page(pattern)
    # The reply's elements, encoded as they come (R.bulk_array's bytes): what is kept
    # between pages is the reply itself, bounded by RESP_MAX_KEYS_REPLY_BYTES.
    body = bytearray()
    found = 0

    def page(reply: ClientReply) -> bytes | None:
        nonlocal found
        if isinstance(reply, Refused):
            return refusal(reply)
        assert isinstance(reply, KeysPage)
        for k, _ in reply.entries:
            if match(k):
                raw = k.encode()
                body.extend(b"$%d\r\n%s\r\n" % (len(raw), raw))
                found += 1
        if len(body) > RESP_MAX_KEYS_REPLY_BYTES:
            s.door.refuse(Refusal.KEYS_REPLY_BYTES)
            return R.error(f"ERR KEYS reply too large: more than {RESP_MAX_KEYS_REPLY_BYTES} "
                           "bytes, the most zcounter sends as one reply; use SCAN")
        if reply.more and reply.entries and not s.closed:
            # The next page is asked for after this one's commit: KEYS walks the
            # keyspace in pages like SCAN (no snapshot), 10,000 keys a batch.
            last = reply.entries[-1][0]
            s.ask(slot, lambda t: ListKeys(t, prefix, last, size), page)
            return None
        return b"*%d\r\n" % found + body
    s.ask(slot, lambda t: ListKeys(t, prefix, None, size), page)


def _pattern(door: Door, raw: bytes) -> bytes:
    if len(raw) > RESP_MAX_PATTERN_BYTES:
        door.refuse(Refusal.PATTERN_BYTES)
        raise A.BadArgument(f"ERR pattern too long: {len(raw)} bytes, zcounter takes at "
                            f"most {RESP_MAX_PATTERN_BYTES}")
    return raw


def _page(pattern: bytes) -> int:
    """Keys a listing page takes for ``pattern``: fewer when each costs more to match."""
    return RESP_MAX_SLOW_MATCH_PAGE if is_slow(pattern) else MAX_PAGE


HANDLERS: dict[str, CommandHandler] = {"scan": scan, "keys": keys}

__all__ = ["HANDLERS"]
