"""The counter commands: ``INCR``, ``INCRBY``, ``DECR``, ``DECRBY``, ``ZC.INCRBY`` (an
``Add`` each), ``GET``, ``MGET``, ``EXISTS`` (a ``Get`` per chunk of keys) and ``DEL``,
``ZC.DEL`` (``Get`` then a ``Reset`` per key: an observed reset).

Steps are ``wait=local`` (durable here before the reply, like the native default); they
keep the key's expiry, as in Redis.  Reads ask for the keys' states, and with them the
core says which keys exist at its now, so that a key that does not (never written,
reset, or expired) reads as nil, as a missing key does in Redis.  Every write is noted for ``WAIT``
(:func:`.wait.wrote`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ...limits import RESP_REQUEST_TIMEOUT_MS
from ..codec import MAX_KEYS_PER_GET
from ..messages import Add, ClientReply, ClientRequest, Counted, Get, Reset
from . import arguments as A
from . import replies as R
from .answers import CommandHandler, Slot, count_reply
from .wait import wrote

if TYPE_CHECKING:
    from .session import Session


def _add(s: Session, slot: Slot, key: str, amount: int, rid: str | None = None) -> None:
    if amount == 0:
        # INCRBY k 0 changes nothing: answer the count (a Get, so it waits for the
        # same commit as any read).
        s.ask(slot, lambda t: Get(t, (key,), timeout_ms=RESP_REQUEST_TIMEOUT_MS),
              count_reply)
        return
    wrote(s, key)
    s.ask(slot, lambda t: Add(t, key, amount, rid, timeout_ms=RESP_REQUEST_TIMEOUT_MS),
          count_reply)


def incr(s: Session, words: list[bytes], slot: Slot) -> None:
    _add(s, slot, A.key(words[1]), 1)


def decr(s: Session, words: list[bytes], slot: Slot) -> None:
    _add(s, slot, A.key(words[1]), -1)


def incrby(s: Session, words: list[bytes], slot: Slot) -> None:
    _add(s, slot, A.key(words[1]), A.step(words[2]))


def decrby(s: Session, words: list[bytes], slot: Slot) -> None:
    by = A.int64(words[2])
    if by == A.I64_MIN:
        raise A.BadArgument("ERR decrement would overflow")  # Redis's own text
    _add(s, slot, A.key(words[1]), A.step(words[2], -by))


def zc_incrby(s: Session, words: list[bytes], slot: Slot) -> None:
    key, step = A.key(words[1]), A.step(words[2])
    rid = A.rid(words[3])
    if step == 0:
        raise A.BadArgument(A.NOT_INT)  # a request id names a change: 0 is none
    _add(s, slot, key, step, rid)


def _delete(s: Session, slot: Slot, keys: list[str], rid: str | None = None) -> None:
    """DEL: first Gets (which keys are live: DEL answers how many it removed), then a
    Reset per key.  The core takes them in this order within one batch, so nothing
    happens to the keys in between at this node.  A Reset answered as a duplicate
    (ZC.DEL retried) removed nothing this time."""
    chunks = _chunks(keys)
    makers = _getters(chunks)
    for key in keys:
        wrote(s, key)
        makers.append(_resetter(key, rid))

    def removed(parts: list[ClientReply]) -> bytes:
        live = _live_counts(chunks, parts)
        resets = parts[len(chunks):]
        return R.integer(sum(1 for was, reset in zip(live, resets, strict=True)
                             if was is not None and not getattr(reset, "duplicate", False)))
    s.ask_parts(slot, makers, removed)


def delete(s: Session, words: list[bytes], slot: Slot) -> None:
    # DEL k k removes k once (and answers 1), as in Redis.
    _delete(s, slot, list(dict.fromkeys(_keys(s, words))))


def zc_del(s: Session, words: list[bytes], slot: Slot) -> None:
    _delete(s, slot, [A.key(words[1])], A.rid(words[2]))


def _get(s: Session, slot: Slot, keys: list[str],
         combine: Callable[[list[bytes | None]], bytes]) -> None:
    chunks = _chunks(keys)
    s.ask_parts(slot, _getters(chunks), lambda parts: combine(_live_counts(chunks, parts)))


def get(s: Session, words: list[bytes], slot: Slot) -> None:
    _get(s, slot, [A.key(words[1])],
         lambda values: R.NIL if values[0] is None else R.bulk(values[0]))


def mget(s: Session, words: list[bytes], slot: Slot) -> None:
    _get(s, slot, _keys(s, words), R.bulk_array)


def exists(s: Session, words: list[bytes], slot: Slot) -> None:
    _get(s, slot, _keys(s, words), lambda values: R.integer(sum(v is not None for v in values)))


def _keys(s: Session, words: list[bytes]) -> list[str]:
    """The keys of MGET/EXISTS/DEL, at most ``max_keys_per_command`` (the loop's
    work is per key: see ``RESP_MAX_KEYS_PER_COMMAND``)."""
    limit = s.door.max_keys_per_command
    if len(words) - 1 > limit:
        raise A.BadArgument(f"ERR too many keys: zcounter takes at most {limit} keys per "
                            f"'{words[0].decode('latin-1').lower()}' command "
                            "(resp_max_keys_per_command)")
    return [A.key(w) for w in words[1:]]


def _chunks(keys: list[str]) -> list[tuple[str, ...]]:
    return [tuple(keys[i:i + MAX_KEYS_PER_GET]) for i in range(0, len(keys), MAX_KEYS_PER_GET)]


def _getters(chunks: list[tuple[str, ...]]) -> list[Callable[[int], ClientRequest]]:
    """A Get per chunk, asking for the states: then the answer says which keys exist."""
    return [_getter(chunk) for chunk in chunks]


def _getter(keys: tuple[str, ...]) -> Callable[[int], ClientRequest]:
    return lambda tag: Get(tag, keys, timeout_ms=RESP_REQUEST_TIMEOUT_MS, session=True)


def _resetter(key: str, rid: str | None) -> Callable[[int], ClientRequest]:
    return lambda tag: Reset(tag, key, rid, timeout_ms=RESP_REQUEST_TIMEOUT_MS)


def _live_counts(chunks: list[tuple[str, ...]], parts: list[ClientReply]) -> list[bytes | None]:
    """Key by key, from the Gets' answers (the first ``len(chunks)`` parts): the count
    as a bulk string's bytes, or None where the key does not exist (Redis's nil)."""
    out: list[bytes | None] = []
    for chunk, part in zip(chunks, parts, strict=False):  # DEL: Resets follow the Gets
        assert isinstance(part, Counted)
        for count, exists in zip(part.counts, part.exists, strict=True):
            out.append(str(count).encode() if exists else None)
        assert len(part.counts) == len(chunk)
    return out


HANDLERS: dict[str, CommandHandler] = {
    "incr": incr, "incrby": incrby, "decr": decr, "decrby": decrby, "zc.incrby": zc_incrby,
    "get": get, "mget": mget, "exists": exists, "del": delete, "zc.del": zc_del}

__all__ = ["HANDLERS"]
