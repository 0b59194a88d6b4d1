"""A command's place in the reply order (:class:`Slot`), the handlers that turn the core's
answers into its reply, and the replies shared by several command families.

A command handler (:data:`CommandHandler`) either fills its slot at once or asks the core
(``Session.ask``) with an :data:`AnswerHandler` per request; the session calls that with
the core's answer after its commit, and the bytes it returns fill the slot (``None``: not
yet, e.g. ``KEYS`` asked for its next page).  :class:`Parts` gathers a command that took
several requests (``MGET`` of many keys, ``DEL``, ``WAIT``) into one reply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

from ..messages import ClientReply, Counted, ErrorCode, Refused, StatusReply
from . import replies as R

if TYPE_CHECKING:
    from .session import Session


class Slot:
    """A command's place in the reply order; ``data`` once its reply is known."""

    __slots__ = ("data", "started")

    def __init__(self, started: float, data: bytes | None = None) -> None:
        self.started = started
        self.data = data


#: The core's answer to one request -> the command's reply, or None while it needs more.
AnswerHandler: TypeAlias = Callable[[ClientReply], bytes | None]
#: One command: the session, the command's words (name first), its slot.  Raises
#: :class:`~.arguments.BadArgument` to refuse an argument.
CommandHandler: TypeAlias = Callable[["Session", list[bytes], Slot], None]


class Parts:
    """A reply assembled from several core answers (``parts`` in request order)."""

    __slots__ = ("combine", "left", "parts")

    def __init__(self, n: int, combine: Callable[[list[ClientReply]], bytes]) -> None:
        self.parts: list[ClientReply | None] = [None] * n
        self.left = n
        self.combine = combine

    def handler(self, index: int) -> AnswerHandler:
        def fill(reply: ClientReply) -> bytes | None:
            self.parts[index] = reply
            self.left -= 1
            if self.left:
                return None
            parts = [p for p in self.parts if p is not None]
            for part in parts:
                if isinstance(part, Refused):
                    return refusal(part)
            return self.combine(parts)
        return fill


def refusal(reply: Refused) -> bytes:
    """A core refusal as a Redis error: overflow in Redis's words; a request that can be
    retried (nothing applied: a node catching up) as TRYAGAIN; the rest as ERR."""
    if reply.code is ErrorCode.OVERFLOW:
        return R.error("ERR increment or decrement would overflow")
    if reply.code in (ErrorCode.UNAVAILABLE, ErrorCode.BEHIND):
        return R.error(f"TRYAGAIN {reply.message}")
    return R.error(f"ERR {reply.message}")


def unexpected() -> bytes:
    return R.error("ERR unexpected answer from the node")


def count_reply(reply: ClientReply) -> bytes:
    """INCR and its kin: the count after the step."""
    if isinstance(reply, Counted):
        return R.integer(reply.counts[0])
    if isinstance(reply, Refused):
        return refusal(reply)
    return unexpected()


def status_reply(reply: ClientReply, render: Callable[[dict[str, Any]], bytes]) -> bytes:
    """INFO, DBSIZE: ``render`` of the core's ``Status``."""
    if isinstance(reply, StatusReply):
        return render(reply.status)
    if isinstance(reply, Refused):
        return refusal(reply)
    return unexpected()


__all__ = ["AnswerHandler", "CommandHandler", "Parts", "Slot", "count_reply", "refusal",
           "status_reply", "unexpected"]
