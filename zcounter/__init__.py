"""zcounter: replicated, durable named counters over ZeroMQ.

Any node takes an update to any key; every node converges on the same counts through
message loss, partitions, crashes and restarts.  See README.md and WRITEUP.md.
"""

__version__ = "0.2.0"

from .client import Client
from .errors import (
    AuthenticationError,
    Busy,
    ConfigError,
    Indeterminate,
    ProtocolError,
    RequestRefused,
    SessionBehind,
    Unavailable,
    ZCounterError,
)

__all__ = [
    "AuthenticationError", "Busy", "Client", "ConfigError", "Indeterminate", "ProtocolError",
    "RequestRefused", "SessionBehind", "Unavailable", "ZCounterError", "__version__",
]
