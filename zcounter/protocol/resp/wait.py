"""``WAIT numreplicas timeout``: how many other nodes hold this connection's writes
durably.

The session notes each key it writes (:func:`wrote`: the generation of its last write,
and the peers known to hold it).  ``WAIT`` asks the core for a
:class:`~zcounter.protocol.messages.Confirm` per key not yet known to be held by enough
peers, and answers the least number of peers holding every write.  Keys held everywhere
are forgotten: nothing is left to confirm for them.

Bounds: a connection tracks at most ``RESP_MAX_WAIT_KEYS`` keys between WAITs that
confirm them everywhere (past it, the next WAIT says it cannot confirm and starts over);
the node's door holds at most ``Door.max_wait_confirms`` confirmations at once; and a
connection blocked in WAIT runs nothing more until it is answered, as in Redis.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ...limits import RESP_MAX_WAIT_KEYS, RESP_MAX_WAIT_MS
from ..messages import ClientReply, ClientRequest, Confirm, Held
from . import arguments as A
from . import replies as R
from .answers import CommandHandler, Slot
from .refusals import Refusal

if TYPE_CHECKING:
    from .session import Session


def wrote(s: Session, key: str) -> None:
    """A write to ``key`` was sent: WAIT must confirm it."""
    s.generation += 1
    entry = s.written.get(key)
    if entry is not None:
        entry[0], entry[1] = s.generation, 0
    elif len(s.written) < RESP_MAX_WAIT_KEYS:
        s.written[key] = [s.generation, 0]
    else:
        s.written_overflow = True


def wait(s: Session, words: list[bytes], slot: Slot) -> None:
    wanted = A.int64(words[1])
    timeout = A.int64(words[2], "ERR timeout is not an integer or out of range")
    if timeout < 0:
        raise A.BadArgument("ERR timeout is negative")
    timeout_ms = RESP_MAX_WAIT_MS if timeout == 0 else min(timeout, RESP_MAX_WAIT_MS)
    if s.written_overflow:
        s.written.clear()
        s.written_overflow = False
        raise A.BadArgument(
            f"ERR WAIT cannot confirm this connection's writes: more than {RESP_MAX_WAIT_KEYS} "
            "keys were written since they were last confirmed on every node (zcounter "
            "tracks that many per connection); later writes can be confirmed again")
    written = s.written
    todo = [(k, e[0]) for k, e in written.items() if e[1] < wanted]
    if not todo:
        slot.data = R.integer(_confirmed(s))
        return
    door = s.door
    if len(todo) > door.confirms_free(s.now):
        door.refuse(Refusal.WAIT_BUSY)
        raise A.BadArgument(
            "ERR max number of WAIT confirmations reached: this node holds "
            f"{door.max_wait_confirms} for the connections waiting now; try again later")
    nodes = min(wanted, door.peers + 1) + 1  # more than exist: waits it out
    # Blocked, as in Redis: nothing behind this WAIT runs until it is answered, so a
    # connection holds one WAIT's confirmations at a time (1,024 pipelined WAITs
    # once fanned out into ~1M confirmations and stalled the node for minutes).
    # The core expires its confirmations after timeout_ms from when it takes them
    # (this cycle or, past the per-cycle bound, a few later): 1 s of margin.
    s.block(slot, len(todo), s.now + timeout_ms / 1000.0 + 1.0)

    def combine(parts: list[ClientReply]) -> bytes:
        for (key, generation), reply in zip(todo, parts, strict=True):
            entry = written.get(key)
            if isinstance(reply, Held) and entry is not None and entry[0] == generation:
                entry[1] = max(entry[1], reply.nodes - 1)
        return R.integer(_confirmed(s))
    s.ask_parts(slot, [_confirmer(key, nodes, timeout_ms) for key, _ in todo], combine)


def _confirmer(key: str, nodes: int, timeout_ms: int) -> Callable[[int], ClientRequest]:
    return lambda tag: Confirm(tag, key, nodes, timeout_ms)


def _confirmed(s: Session) -> int:
    """Peers known to hold every write of this connection; keys every peer holds are
    forgotten (nothing is left to confirm for them)."""
    written = s.written
    if not written:
        return s.door.peers
    held = min(e[1] for e in written.values())
    everywhere = [k for k, e in written.items() if e[1] >= s.door.peers]
    for key in everywhere:
        del written[key]
    return held


HANDLERS: dict[str, CommandHandler] = {"wait": wait}

__all__ = ["HANDLERS", "wrote"]
