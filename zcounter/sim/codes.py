"""The simulator's vocabulary: crash modes, operation kinds and outcomes, fault actions.

Each is a ``str`` enum (as :class:`~zcounter.protocol.messages.ErrorCode` is), so traces,
statistics names and replay output read as before, and ``str()`` / f-strings give the
value on every Python version (3.12 changed how mixed-in enums format).
"""

from __future__ import annotations

from enum import Enum


class Code(str, Enum):
    def __str__(self) -> str:
        return str(self.value)


class CrashMode(Code):
    """How a node dies (:mod:`.cluster`; what survives: :mod:`.disk`)."""

    #: Between two batches.
    CLEAN = "clean"
    #: The next batch commits, sends only a prefix of its messages, and dies.
    TORN = "torn"
    #: The next batch consumes its inputs and dies before its commit.
    MIDBATCH = "midbatch"
    #: The next batch dies inside its commit, at one of its storage operations (a torn
    #: write, the fdatasync after it, a rotation step), or right after it.
    COMMIT = "commit"
    #: Between two batches, and the files lose what was not flushed.
    POWER = "power"

    @property
    def at_next_batch(self) -> bool:
        """The crash happens during the node's next batch, not at once."""
        return self in (CrashMode.TORN, CrashMode.MIDBATCH, CrashMode.COMMIT)


class OpKind(Code):
    """One logical operation of the ledger (:class:`.history.Op`)."""

    #: An increment or (``amount`` < 0) a decrement.
    ADD = "add"
    RESET = "reset"
    #: Expire (``at_ms`` None: PERSIST), with a mode or not.
    EXPIRE = "expire"
    READ = "read"
    #: A Ttl read of one key.
    TTL = "ttl"


class Action(Code):
    """What a simulated client does next (drawn with the swarm's ``mix`` weights)."""

    INCREMENT = "increment"
    DECREMENT = "decrement"
    RESET = "reset"
    READ = "read"
    EXPIRE = "expire"
    TTL = "ttl"

    @property
    def kind(self) -> OpKind:
        return _KINDS.get(self, OpKind.ADD)


_KINDS = {Action.READ: OpKind.READ, Action.RESET: OpKind.RESET,
          Action.EXPIRE: OpKind.EXPIRE, Action.TTL: OpKind.TTL}


class Outcome(Code):
    """How an operation ended, as its client saw it."""

    PENDING = "pending"
    OK = "ok"
    #: Refused, and never applied by any attempt the client knows of.
    FAIL = "fail"
    #: An attempt timed out: it may have been applied.
    UNKNOWN = "unknown"
    #: Some attempt was answered as applied at the node, then the operation failed.
    INDETERMINATE = "indeterminate"


class Fault(Code):
    """What the nemesis does next."""

    ISOLATE = "isolate"
    SPLIT = "split"
    ONEWAY = "oneway"
    HEAL = "heal"
    CRASH = "crash"
    PAUSE = "pause"
    #: An old node-to-node message delivered again (:meth:`.network.Network.replay`).
    REPLAY = "replay"


class Copy(Code):
    """Whether a node holds a write (an acknowledgement's copies, :mod:`.checker`)."""

    FSYNCED = "fsynced"
    #: Held fsynced on a disk wiped since: still counts for what it backed.
    WIPED = "fsynced, wiped since"
    UNSYNCED = "unsynced"
    NONE = "no"
