"""The exception hierarchy: one root, split by who is at fault and what is known.

Every error the package raises on purpose derives from :class:`ZCounterError`, so a
script can catch one class (tests/test_errors.py walks the package to hold this).  The
split follows what a caller must do next:

* :class:`ConfigError` - the cluster file, a flag or the environment is wrong; fix it.
* :class:`ProtocolError` - bytes from a peer or a client that are not a valid message.
* :class:`RequestRefused` - the node answered and definitely did not apply the request;
  ``code`` is an :class:`ErrorCode`, which says whether a retry may help.
* :class:`Unavailable` - no answer in time; an increment may or may not have been applied.
* :class:`Indeterminate` - the node applied the increment but could not reach the asked
  replication level in time; it may still spread.  Never a plain failure.
* :class:`SessionBehind` - every node tried was behind what this session already saw.
* :class:`Busy` - the node already holds as many waiting requests as it allows (for this
  connection or in all); nothing was applied.  Wait for earlier requests, then retry.
* :class:`AuthenticationError` - CurveZMQ: the node refused this client's key, or the
  client could not authenticate the node (wrong public key in the cluster file).

Defined beside the code that raises them (this module imports nothing of the package,
so each of those may import it):

* :class:`zcounter.model.pncounter.Overflow` (also a ``ValueError``) - a step or merge
  would take a total past 2**63-1; nothing changed.  The node answers ``overflow``.
* :class:`zcounter.protocol.codec.Forbidden` (a ProtocolError) - a client's connection
  asked for a peer operation.
* :class:`zcounter.protocol.resp.framing.FrameError` and
  :class:`zcounter.protocol.resp.arguments.BadArgument` (ProtocolErrors) - a Redis client's
  stream is not a command the door takes / an argument is refused; each is answered
  with Redis's error text.
* :class:`zcounter.runtime.storage.StorageError` and
  :class:`zcounter.runtime.storage.log.LogError` - the disk failed; the node stops
  without acknowledging anything more (fail-stop).
* ``zcounter.runtime.respsetup._EncryptedKey`` (a ConfigError) and
  :class:`zcounter.bench.report.NotMeasured` - internal signals, caught where raised.

Not ZCounterErrors, on purpose: :class:`zcounter.sim.oracle.SimFailure` and
:class:`zcounter.fuzz.targets.TargetFailed` subclass ``AssertionError``: they report a bug
*in zcounter* found by the simulator or a fuzz target, not a condition a caller handles:
pytest shows them as failures, and code that catches ZCounterError around client calls
(``zcounter.fuzz.live``, ``tests/faults/agent.py``) must never swallow one.  Likewise
:class:`zcounter.sim.files.Crash`: the simulated process dying inside the real storage
code; no handler of the code under test may take it for an error and carry on.
"""

from __future__ import annotations

from enum import Enum


class ErrorCode(str, Enum):
    """Why a node refused (or could not confirm) a request."""

    #: Malformed request (bad key, field, size): certainly not applied.
    BAD_REQUEST = "bad_request"
    #: A total would pass 2**63-1: certainly not applied.
    OVERFLOW = "overflow"
    #: Too few nodes answered in time for the read level: nothing applied.
    UNAVAILABLE = "unavailable"
    #: The node is behind what the session has seen and could not catch up: not applied.
    BEHIND = "behind"
    #: Applied durably here, but the wait level was not confirmed in time.
    INDETERMINATE = "indeterminate"
    #: The connection's role may not do this (a peer operation from a client).
    FORBIDDEN = "forbidden"
    #: The node already holds as many waiting requests (``confirm``, waits and reads for
    #: a level) as it allows for this connection or in all: certainly not applied.  Not
    #: retried at once: waiting for held requests to end is the caller's call.
    BUSY = "busy"

    @property
    def applied(self) -> bool:
        """True when the request was applied despite the error."""
        return self is ErrorCode.INDETERMINATE

    @property
    def retryable(self) -> bool:
        """True when re-sending the same request to the same node may succeed and can
        never count twice (nothing applied, or the request id is remembered)."""
        return self in (ErrorCode.INDETERMINATE, ErrorCode.BEHIND, ErrorCode.UNAVAILABLE)

    # A script that printed ``exc.code`` when it was a str printed ``busy``; a (str, Enum)
    # member prints ``ErrorCode.BUSY`` from Python 3.11 on (3.10: ``busy``).  Both say
    # the value on every version, as StrEnum (3.11+) does.
    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class ZCounterError(Exception):
    """Root of every error zcounter raises on purpose."""


class ConfigError(ZCounterError):
    """The configuration (file, flags, environment, data directory) is unusable."""


class ProtocolError(ZCounterError):
    """A message does not follow the wire protocol (the *remote* side is at fault)."""


class RequestRefused(ZCounterError):
    """The node refused the request; it was certainly not applied.

    ``code`` is the machine-readable reason from the node's reply, an :class:`ErrorCode`
    (a ``str`` enum, so ``exc.code == "busy"`` holds as it did when it was a string).
    """

    def __init__(self, message: str, code: ErrorCode | str, node: int | None = None) -> None:
        super().__init__(message)
        #: A string is taken for the scripts that passed one (``"bad_request"``); one that
        #: names no code raises ValueError here rather than later, where it is compared.
        self.code = ErrorCode(code)
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
