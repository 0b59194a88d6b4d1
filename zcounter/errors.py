"""The exception hierarchy: one root, split by who is at fault and what is known.

Every error the package raises on purpose derives from :class:`ZCounterError`, so a
script can catch one class.  The split follows what a caller must do next:

* :class:`ConfigError` - the cluster file, a flag or the environment is wrong; fix it.
* :class:`ProtocolError` - bytes from a peer or a client that are not a valid message.
* :class:`RequestRefused` - the node answered and definitely did not apply the request.
* :class:`Unavailable` - no answer in time; an increment may or may not have been applied.
* :class:`Indeterminate` - the node applied the increment but could not reach the asked
  replication level in time; it may still spread.  Never a plain failure.
* :class:`SessionBehind` - every node tried was behind what this session already saw.
* :class:`Busy` - the node already holds as many waiting requests as it allows (for this
  connection or in all); nothing was applied.  Wait for earlier requests, then retry.
* :class:`AuthenticationError` - CurveZMQ: the node refused this client's key, or the
  client could not authenticate the node (wrong public key in the cluster file).
"""

from __future__ import annotations


class ZCounterError(Exception):
    """Root of every error zcounter raises on purpose."""


class ConfigError(ZCounterError):
    """The configuration (file, flags, environment, data directory) is unusable."""


class ProtocolError(ZCounterError):
    """A message does not follow the wire protocol (the *remote* side is at fault)."""


class RequestRefused(ZCounterError):
    """The node refused the request; it was certainly not applied.

    ``code`` is the machine-readable reason from the node's reply (``bad_request``,
    ``overflow``, ``unavailable``, ...).
    """

    def __init__(self, message: str, code: str = "refused", node: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.node = node


class SessionBehind(RequestRefused):
    """The node could not catch up with what this client session already observed."""


class Busy(RequestRefused):
    """The node refused to hold one more waiting request (``confirm``, a write waiting for
    its ``wait`` level, a read for its ``read`` level): its cap for this connection or
    for the node was reached.  Certainly not applied; retry once earlier requests are
    answered (or ask another node)."""


class Unavailable(ZCounterError):
    """No node answered in time (or the reply was lost)."""

    def __init__(self, message: str, node: int | None = None) -> None:
        super().__init__(message)
        self.node = node


class Indeterminate(ZCounterError):
    """The increment was applied locally but the asked level was not confirmed in time."""

    def __init__(self, message: str, node: int | None = None, count: int | None = None) -> None:
        super().__init__(message)
        self.node = node
        self.count = count


class AuthenticationError(ZCounterError):
    """The secure handshake with a node failed; nothing was sent to it."""

    def __init__(self, message: str, node: int | None = None) -> None:
        super().__init__(message)
        self.node = node
