"""zcounter: a replicated, durable counter over ZeroMQ.

Any node takes an increment; every node converges on the same count through message
loss, partitions, crashes and restarts.  See README.md and WRITEUP.md.
"""

from .client import Client
from .errors import (
    ConfigError,
    Indeterminate,
    ProtocolError,
    RequestRefused,
    SessionBehind,
    Unavailable,
    ZCounterError,
)

__version__ = "0.1.0"

__all__ = [
    "Client", "ConfigError", "Indeterminate", "ProtocolError", "RequestRefused",
    "SessionBehind", "Unavailable", "ZCounterError", "__version__",
]
