"""What the RESP sessions of one node share (:class:`Door`), and how the core knows one
of them (:class:`RespClient`).  Sans I/O: the runtime fills in what only it knows."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import InitVar, dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from ...limits import (
    RESP_MAX_ARGUMENT_BYTES,
    RESP_MAX_ARGUMENTS,
    RESP_MAX_CLIENTS,
    RESP_MAX_COMMAND_BYTES,
    RESP_MAX_KEYS_PER_COMMAND,
    RESP_MAX_WAIT_CONFIRMS_PER_NODE,
)
from .framing import FrameLimits
from .refusals import Refusal

if TYPE_CHECKING:
    from ...config import Settings


class RespClient(NamedTuple):
    """How the core knows a RESP connection (``ToClient.client``): its number.  Numbers
    are never reused, so an answer for a connection that has gone is recognisably late."""

    conn: int


@dataclass
class Door:
    """What every session of one node shares: the node's identity, the password, the
    counters INFO and the metrics report.  Sans I/O: the runtime fills in the figures
    only it knows (``tcp_port``, ``process_id``, ``connected``)."""

    node_id: int
    cluster: tuple[int, ...]
    password: bytes | None = None
    #: Filled by the runtime: INFO's server section.
    tcp_port: int = 0
    process_id: int = 0
    started: float = 0.0
    version: str = ""
    #: peer id -> (host, port) for INFO's replication section.
    peer_addresses: dict[int, tuple[str, int]] = field(default_factory=dict)
    connected: int = 0
    #: Connections the door holds at most (INFO's maxclients): set by the runtime.
    max_clients: int = RESP_MAX_CLIENTS
    connections_received: int = 0
    rejected_connections: int = 0
    commands_processed: int = 0
    #: Sessions blocked in WAIT.
    blocked: int = 0
    protocol_errors: int = 0
    commands: dict[str, int] = field(default_factory=dict)
    #: Called with each answered command's seconds from arrival to reply (metrics).
    observe: Callable[[float], None] | None = None
    #: The node's ``[settings]``: the user-tunable RESP bounds (defaults otherwise).
    settings: InitVar[Settings | None] = None
    #: Bounds of one command once authenticated (before: :data:`.session.UNAUTHENTICATED`).
    limits: FrameLimits = field(default=FrameLimits(
        RESP_MAX_ARGUMENTS, RESP_MAX_ARGUMENT_BYTES, RESP_MAX_COMMAND_BYTES))
    max_keys_per_command: int = RESP_MAX_KEYS_PER_COMMAND
    #: Refusals by cause (INFO ``zcounter_resp_refused_<cause>``).
    refused: dict[Refusal, int] = field(default_factory=dict)
    #: Bytes of unfinished commands kept by all sessions (bounded by
    #: ``RESP_MAX_INPUT_BYTES_PER_NODE``).
    input_bytes: int = 0
    #: Confirmations asked of the core for WAITs and not yet answered or expired.
    wait_confirms: int = 0
    #: (deadline, confirmations) of WAITs whose connection closed before their answer:
    #: the core still holds them until their timeout, so they stay charged until then.
    _orphans: list[tuple[float, int]] = field(default_factory=list)
    _cursor: int = 0
    _client: int = 0

    def __post_init__(self, settings: Settings | None) -> None:
        if settings is not None:
            self.limits = FrameLimits(RESP_MAX_ARGUMENTS, settings.resp_max_argument_bytes,
                                      settings.resp_max_command_bytes)
            self.max_keys_per_command = settings.resp_max_keys_per_command

    @property
    def max_wait_confirms(self) -> int:
        """Confirmations the WAITs of all this node's connections may hold at once."""
        return RESP_MAX_WAIT_CONFIRMS_PER_NODE

    def refuse(self, cause: Refusal) -> None:
        self.refused[cause] = self.refused.get(cause, 0) + 1

    def confirms_free(self, now: float) -> int:
        """Confirmations a WAIT may still ask for now (expired orphans released)."""
        orphans = self._orphans
        while orphans and orphans[0][0] <= now:
            self.wait_confirms -= heapq.heappop(orphans)[1]
        return RESP_MAX_WAIT_CONFIRMS_PER_NODE - self.wait_confirms

    def orphan(self, deadline: float, confirms: int) -> None:
        heapq.heappush(self._orphans, (deadline, confirms))

    @property
    def peers(self) -> int:
        return len(self.cluster) - 1

    def next_cursor(self) -> int:
        """Cursors are numbered node-wide, so one from another connection (or one this
        connection forgot) is unknown here rather than silently someone else's."""
        self._cursor += 1
        return self._cursor

    def next_client_id(self) -> int:
        self._client += 1
        return self._client


__all__ = ["Door", "RespClient"]
