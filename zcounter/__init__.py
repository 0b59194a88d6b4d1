"""zcounter: replicated, durable named counters over ZeroMQ.

Any node takes an update to any key; every node converges on the same counts through
message loss, partitions, crashes and restarts.  See README.md and WRITEUP.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    AuthenticationError,
    Busy,
    ConfigError,
    ErrorCode,
    Indeterminate,
    ProtocolError,
    RequestRefused,
    SessionBehind,
    Unavailable,
    ZCounterError,
)

if TYPE_CHECKING:
    from .client import Client


def __getattr__(name: str) -> Any:
    # ``Client`` is imported on first use (PEP 562), not with the package: every
    # ``import zcounter.<anything>`` runs this file first, and the node, the simulator and
    # the model have no use for the client, zmq's client sockets or the cluster-file
    # reader (tests/test_version.py holds this).
    if name == "Client":
        from .client import Client

        return Client
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AuthenticationError", "Busy", "Client", "ConfigError", "ErrorCode", "Indeterminate",
    "ProtocolError", "RequestRefused", "SessionBehind", "Unavailable", "ZCounterError",
    "__version__",
]
