"""What the core asks its runtime to do after a batch of inputs (sans-IO outputs).

``ToClient``, ``ToPeer`` and ``Publish`` are named tuples: one per reply, so on the
per-request path (see the note in :mod:`.messages`)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple

from .messages import Broadcast, ClientReply, PeerReply, PeerRequest, RidEntry

#: Whatever the runtime uses to route a reply back (a ROUTER routing id, a RESP
#: connection, a simulated client): opaque to the core.
ClientId = Hashable


class ToClient(NamedTuple):
    """Send ``reply`` to the client (or peer) known as ``client``."""

    client: ClientId
    reply: ClientReply | PeerReply


class ToPeer(NamedTuple):
    """Send ``request`` to node ``peer`` (our DEALER connected to its ROUTER)."""

    peer: int
    request: PeerRequest


class Publish(NamedTuple):
    """Broadcast ``message`` on our PUB socket."""

    message: Broadcast


Message = ToClient | ToPeer | Publish


class LogLevel(Enum):
    DEBUG = 10
    INFO = 20
    WARNING = 30


@dataclass(frozen=True, slots=True)
class Log:
    level: LogLevel
    text: str


@dataclass(slots=True)
class Persist:
    """What must be committed before the batch's messages go out.

    ``sync``: the batch acknowledges something only this node vouches for (its own
    updates, or a merge it confirms as durable), so the commit must reach the disk
    (fsync) first.  Without it - state merged from peers, ids learned from them - the
    commit need only survive a process crash: after a power loss that data is pulled
    back from the peers that hold it durably, so an fsync would buy nothing.
    """

    #: key -> packed state (slot indices local to this node, see ``slots``).
    states: dict[str, bytes] = field(default_factory=dict)
    #: Slot names first seen in this batch: (index, name).
    slots: list[tuple[int, str]] = field(default_factory=list)
    rids: list[RidEntry] = field(default_factory=list)
    forget: list[str] = field(default_factory=list)
    sync: bool = False
    #: Keys collected (issue 21): removed from the log and the checkpoint.
    removed: list[str] = field(default_factory=list)
    #: The node's high-water (pncounter's docstring), when a collection raised it.
    high_water: tuple[int, int] | None = None

    def __bool__(self) -> bool:
        return bool(self.states or self.slots or self.rids or self.forget or self.sync
                    or self.removed or self.high_water is not None)

    def merge(self, later: Persist) -> None:
        """Fold a later batch's changes into these, as one commit writes both: its states
        and removals win, its slots, ids and forgotten ids follow ours, and the commit
        syncs if either asked to."""
        if later.removed:  # written, then collected: only the removal is committed
            for key in later.removed:
                self.states.pop(key, None)
            self.removed += [k for k in later.removed if k not in self.removed]
        if self.removed and later.states:  # collected, then written again: it stays
            self.removed = [k for k in self.removed if k not in later.states]
        self.states.update(later.states)
        self.slots += later.slots
        self.rids += later.rids
        self.forget += later.forget
        self.sync = self.sync or later.sync
        if later.high_water is not None:
            self.high_water = later.high_water


@dataclass(frozen=True, slots=True)
class Outputs:
    persist: Persist | None
    messages: list[Message]
    logs: list[Log]
