"""What the parts of a node core share while a batch of inputs is handled.

A *batch* is the inputs the runtime feeds the core between two calls of
:meth:`~.node.NodeCore.take_outputs`.  Every part of the core (requests, replication,
repair) appends its messages and logs to the one :class:`Batch`, and sends its requests
to peers through the one :class:`Calls`, which remembers what each request was for so
that its answer is routed back to the part that asked.  Neither holds any rule: the core
(:mod:`.node`) decides what the batch's outputs become.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from .messages import PeerReply, PeerRequest, RidEntry
from .outputs import Log, LogLevel, Message, ToPeer

#: Outstanding peer requests are forgotten after this long (their answers are dropped).
REQUEST_HORIZON_S = 60.0


@dataclass(slots=True)
class Batch:
    """The batch being built: its time, messages, logs, and what its commit must hold."""

    #: The time of the input being handled.
    now: float
    #: Wall-clock unix ms of this batch (``NodeCore.set_wall``, set by the runtime at the
    #: start of every batch): what reads and steps of keys take (issue 21).
    wall_ms: int = 0
    #: The first wall clock given: when this process started (collection's start-time
    #: rule, :mod:`.intake`).
    start_ms: int = 0
    messages: list[Message] = field(default_factory=list)
    logs: list[Log] = field(default_factory=list)
    #: Request ids applied here in this batch: they go out with its delta.
    rids: list[RidEntry] = field(default_factory=list)
    #: Keys merged, answered or compared in this batch (see ``NodeCore.batch_full``).
    keys: int = 0
    #: The batch acknowledges something only this node vouches for: fsync its commit
    #: (see :class:`~.outputs.Persist`).
    sync: bool = False

    def log(self, text: str, level: LogLevel = LogLevel.INFO) -> None:
        self.logs.append(Log(level, text))

    def set_wall(self, now_ms: int) -> None:
        """This batch's wall clock (``NodeCore.set_wall``); the first is ``start_ms``."""
        self.wall_ms = now_ms
        if not self.start_ms:
            self.start_ms = now_ms


class Kind(Enum):
    """What a request to a peer was for: which part its answer goes back to."""

    FETCH = "fetch"
    MERGE = "merge"
    REPAIR = "repair"
    RIDS = "rids"
    HOLD = "hold"


@dataclass(slots=True)
class Call:
    """A request to ``peer`` not answered yet."""

    kind: Kind
    peer: int
    sent: float
    #: Fetches only: the stamp and keys the answer makes fresh (see pending.py).
    stamp: int = 0
    keys: tuple[str, ...] = ()


class Calls:
    """Requests to peers: their ids, and what each unanswered one was for."""

    def __init__(self, batch: Batch) -> None:
        self._batch = batch
        self._open: dict[int, Call] = {}
        self._next_id = 1

    def __len__(self) -> int:
        return len(self._open)

    def new_id(self) -> int:
        req_id = self._next_id
        self._next_id += 1
        return req_id

    def send(self, peer: int, request: PeerRequest, kind: Kind, stamp: int = 0,
             keys: tuple[str, ...] = ()) -> None:
        self._open[request.id] = Call(kind, peer, self._batch.now, stamp, keys)
        self._batch.messages.append(ToPeer(peer, request))

    def answered(self, reply: PeerReply) -> Call | None:
        """The request ``reply`` answers, now closed; None if we sent no such request to
        the node that answered (then the reply is dropped)."""
        call = self._open.pop(reply.id, None)
        return None if call is None or call.peer != reply.node else call

    def forget_before(self, horizon: float) -> None:
        """Forget requests sent before ``horizon``: their answers will be dropped."""
        if self._open:
            self._open = {k: v for k, v in self._open.items() if v.sent >= horizon}
