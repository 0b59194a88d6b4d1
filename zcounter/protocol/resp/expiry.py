"""The expiry commands: ``EXPIRE``, ``PEXPIRE``, ``EXPIREAT``, ``PEXPIREAT`` and
``PERSIST`` (an :class:`~zcounter.protocol.messages.Expire` each), ``TTL``, ``PTTL``,
``EXPIRETIME`` and ``PEXPIRETIME`` (a :class:`~zcounter.protocol.messages.Ttl` each).

Arguments are checked as Redis 7.0 checks them (``expire.c``, ``expireGenericCommand``
and ``parseExtendedExpireArgumentsOrReply``), in its order and with its texts: the
options first (``Unsupported option``, the two incompatibility errors), then the time
(``string2ll``), then the unit's overflow (``invalid expire time in '<cmd>' command``).
Checked against redis-server 7.0.15 (tests/integration/test_resp_expiry.py compares
both, reply by reply).

Relative times (EXPIRE, PEXPIRE) go to the node as ``ttl_ms``: the deadline is taken
from the node's own clock, the one every expiry there is measured against.  A time at
or before now (a negative TTL, a past unix time) expires the key at once, as in Redis.
zcounter's one difference: a deadline more than 10 years ahead is refused (Redis takes
any time up to 2**63-1 ms); relative ones here with Redis's own text, absolute ones by
the node, which alone knows its now.

``XX`` with ``LT`` (only a key with an expiry, only to shorten it) is the one pair of
options an Expire's single mode cannot say: it goes as ``LT`` with ``also_xx``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ...limits import RESP_REQUEST_TIMEOUT_MS
from ..messages import MAX_TTL_MS, ClientReply, Counted, Expire, ExpireMode, Refused, Ttl
from . import arguments as A
from . import replies as R
from .answers import AnswerHandler, CommandHandler, Slot, refusal, unexpected
from .wait import wrote

if TYPE_CHECKING:
    from .session import Session

_OPTIONS = {b"nx": ExpireMode.NX, b"xx": ExpireMode.XX, b"gt": ExpireMode.GT,
            b"lt": ExpireMode.LT}
#: Redis's ``LLONG_MAX / 1000`` (C division: toward zero, both ways).
_SECONDS_BOUND = A.I64_MAX // 1000
def options(words: list[bytes]) -> tuple[ExpireMode | None, bool]:
    """The NX|XX|GT|LT options after the time, as Redis parses them (repeats allowed):
    the mode, and whether XX goes with LT."""
    seen: set[ExpireMode] = set()
    for word in words:
        mode = _OPTIONS.get(word.lower())
        if mode is None:
            raise A.BadArgument(f"ERR Unsupported option {A.text(word)}")
        seen.add(mode)
    nx, xx, gt, lt = (m in seen for m in ExpireMode)
    if nx and (xx or gt or lt):
        raise A.BadArgument("ERR NX and XX, GT or LT options at the same time are not "
                            "compatible")
    if gt and lt:
        raise A.BadArgument("ERR GT and LT options at the same time are not compatible")
    if xx and (gt or lt):
        # GT already needs an expiry to compare with; LT does not: also_xx says it.
        return (ExpireMode.GT, False) if gt else (ExpireMode.LT, True)
    return (next(iter(seen)) if seen else None), False


def _time(words: list[bytes], unit_ms: int) -> int:
    """The command's time in ms, with Redis's overflow check of the unit conversion."""
    when = A.int64(words[2])
    if unit_ms == 1000:
        if not -_SECONDS_BOUND <= when <= _SECONDS_BOUND:
            raise A.BadArgument(_invalid(words))
        when *= 1000
    return when


def _invalid(words: list[bytes]) -> str:
    return f"ERR invalid expire time in '{words[0].decode('latin-1').lower()}' command"


def _set(s: Session, words: list[bytes], slot: Slot, unit_ms: int, absolute: bool) -> None:
    key = A.key(words[1])
    mode, also_xx = options(words[3:])
    when = _time(words, unit_ms)
    if absolute:
        at, ttl = max(0, when), None
    else:
        if when > MAX_TTL_MS:  # Redis: past 2**63-1 ms from now; zcounter: past 10 years
            raise A.BadArgument(_invalid(words))
        at, ttl = None, max(0, when)
    wrote(s, key)
    s.ask(slot, lambda tag: Expire(tag, key, at, mode, timeout_ms=RESP_REQUEST_TIMEOUT_MS,
                                   ttl_ms=ttl, also_xx=also_xx), changed_reply)


def changed_reply(reply: ClientReply) -> bytes:
    """EXPIRE and PERSIST: 1 if the expiry changed, 0 if not."""
    if isinstance(reply, Counted):
        return R.integer(reply.counts[0])
    if isinstance(reply, Refused):
        return refusal(reply)
    return unexpected()


def expire(s: Session, words: list[bytes], slot: Slot) -> None:
    _set(s, words, slot, 1000, absolute=False)


def pexpire(s: Session, words: list[bytes], slot: Slot) -> None:
    _set(s, words, slot, 1, absolute=False)


def expireat(s: Session, words: list[bytes], slot: Slot) -> None:
    _set(s, words, slot, 1000, absolute=True)


def pexpireat(s: Session, words: list[bytes], slot: Slot) -> None:
    _set(s, words, slot, 1, absolute=True)


def persist(s: Session, words: list[bytes], slot: Slot) -> None:
    key = A.key(words[1])
    wrote(s, key)
    s.ask(slot, lambda tag: Expire(tag, key, timeout_ms=RESP_REQUEST_TIMEOUT_MS),
          changed_reply)


def _ttl_request(key: str) -> Callable[[int], Ttl]:
    return lambda tag: Ttl(tag, key, timeout_ms=RESP_REQUEST_TIMEOUT_MS)


def _seconds(ms: int) -> int:
    """Redis's rounding of a TTL or a unix time to seconds: to the nearest."""
    return ms if ms < 0 else (ms + 500) // 1000


def _ttl_reply(pick: Callable[[int, int], int]) -> AnswerHandler:
    """A reply from the Ttl's ``(pttl, deadline)``: -2 and -1 stay as they are."""
    def reply(answer: ClientReply) -> bytes:
        if isinstance(answer, Counted):
            return R.integer(pick(*answer.counts[:2]))
        if isinstance(answer, Refused):
            return refusal(answer)
        return unexpected()
    return reply


def _ask_ttl(s: Session, words: list[bytes], slot: Slot, pick: Callable[[int, int], int]
             ) -> None:
    s.ask(slot, _ttl_request(A.key(words[1])), _ttl_reply(pick))


def ttl(s: Session, words: list[bytes], slot: Slot) -> None:
    _ask_ttl(s, words, slot, lambda pttl, deadline: _seconds(pttl))


def pttl(s: Session, words: list[bytes], slot: Slot) -> None:
    _ask_ttl(s, words, slot, lambda pttl, deadline: pttl)


def expiretime(s: Session, words: list[bytes], slot: Slot) -> None:
    _ask_ttl(s, words, slot, lambda pttl, deadline: _seconds(deadline))


def pexpiretime(s: Session, words: list[bytes], slot: Slot) -> None:
    _ask_ttl(s, words, slot, lambda pttl, deadline: deadline)


HANDLERS: dict[str, CommandHandler] = {
    "expire": expire, "pexpire": pexpire, "expireat": expireat, "pexpireat": pexpireat,
    "persist": persist, "ttl": ttl, "pttl": pttl, "expiretime": expiretime,
    "pexpiretime": pexpiretime}

__all__ = ["HANDLERS", "changed_reply", "options"]
