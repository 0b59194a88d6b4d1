"""File descriptors as a budget, and how a door takes connections without spinning.

Before (issue 19): with the usual soft limit of 1,024 open files, ~1,000 idle RESP
connections used every descriptor; the door's listener stayed readable and each poll
cycle failed ``accept`` again (~100,000 "accept failed" lines in 25 s, clients of every
door timed out), and the next checkpoint failed with EMFILE and stopped the node.

Now, at start (:func:`raise_nofile_limit`, then :func:`plan`):

1. the soft ``RLIMIT_NOFILE`` is raised to the hard limit where the system allows it
   (Redis does the same for ``maxclients``);
2. what is open once storage and the ZeroMQ sockets are set up is counted, and room is
   set aside for what storage, the peers and the process open later
   (:data:`~zcounter.limits.FD_RESERVE_STORAGE` and the others);
3. each door's cap is min(its setting, its share of the rest), so no door can take the
   descriptors storage needs; the node logs what each door can hold.  At its cap a door
   refuses (RESP: ``-ERR max number of clients reached``; metrics: closed at once).

If ``accept`` still fails for want of a resource (descriptors used by native clients,
whose connections libzmq accepts with no cap, or the system's table is full), the door
stops polling its listener for a while (:class:`AcceptBackoff`: 10 ms, doubling to 1 s)
and logs the cause once per interval with a count (:class:`Throttled`).

:func:`plan` and the two classes are pure (the time is passed in); only
:func:`raise_nofile_limit` and :func:`open_fds` touch the process.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass
from enum import Enum

from ..errors import ConfigError
from ..limits import (
    ACCEPT_BACKOFF_FIRST_S,
    ACCEPT_BACKOFF_MAX_S,
    FD_MIN_FOR_CONNECTIONS,
    FD_RESERVE_PER_PEER,
    FD_RESERVE_SLACK,
    FD_RESERVE_STORAGE,
    FD_RESP_SHARE,
    LOG_INTERVAL_S,
)

try:
    import resource
except ImportError:  # pragma: no cover - not on Windows, which zcounter does not run on
    resource = None  # type: ignore[assignment]

#: ``accept`` errors that mean "no resource now, try later": back off.
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: Linux refuses a soft limit above /proc/sys/fs/nr_open even when the hard limit is
#: RLIM_INFINITY; this is its default.
_NR_OPEN_DEFAULT = 1 << 20


class Door(str, Enum):
    """The doors that take TCP connections (label ``door`` in metrics)."""

    RESP = "resp"
    METRICS = "metrics"
    #: The ROUTER (native clients and peers' DEALERs) and the PUB (peers' SUBs).
    NATIVE = "native"
    PUB = "pub"


class Rejection(str, Enum):
    """Why a door refused or closed a connection (label ``reason`` in metrics)."""

    #: The door holds its cap of connections: refused at once.
    MAX_CLIENTS = "max_clients"
    #: A connection still without a request head, closed to make room for a new one
    #: (metrics, at its cap).
    EVICTED = "evicted"
    #: ``accept`` failed for want of a resource (EMFILE, ENFILE, ENOBUFS, ENOMEM).
    ACCEPT_FAILED = "accept_failed"
    #: No complete request head within the head timeout (metrics).
    HEAD_TIMEOUT = "head_timeout"
    #: A request head over the byte bound (metrics).
    HEAD_TOO_LARGE = "head_too_large"
    #: Not a request the door serves: malformed, another method (metrics).
    BAD_REQUEST = "bad_request"
    #: The client did not take the response within the write timeout (metrics).
    WRITE_TIMEOUT = "write_timeout"


@dataclass(frozen=True)
class NofileLimit:
    """The soft limit before and after :func:`raise_nofile_limit`, and the hard one."""

    before: int
    soft: int
    hard: int
    #: Why the soft limit could not be raised (None if it was, or needed not be).
    error: str | None = None


def raise_nofile_limit() -> NofileLimit:
    """Raise the soft RLIMIT_NOFILE to the hard limit where allowed; say what it is."""
    if resource is None:  # pragma: no cover
        return NofileLimit(1024, 1024, 1024, "no resource module")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        try:
            with open("/proc/sys/fs/nr_open") as fh:
                target = int(fh.read())
        except (OSError, ValueError):
            target = _NR_OPEN_DEFAULT
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:
            return NofileLimit(soft, soft, hard, str(exc))
        return NofileLimit(soft, target, hard)
    effective = target if soft == resource.RLIM_INFINITY else soft
    return NofileLimit(soft, effective, hard)


def open_fds() -> int:
    """Descriptors this process has open now."""
    for directory in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(directory)) - 1  # listdir's own descriptor
        except OSError:
            continue
    return 0  # pragma: no cover - the reserves then cover what is open


@dataclass(frozen=True)
class FdBudget:
    """How the descriptors of one node are shared (all counts are descriptors)."""

    limit: int
    in_use: int
    reserved: int
    #: Connections each door holds at most (0: the door is off).
    resp_clients: int
    metrics_clients: int
    #: What is left for native clients (ZeroMQ connections: not capped by the node).
    native_room: int

    def describe(self) -> str:
        return (f"open files limit {self.limit}, {self.in_use} open at start, "
                f"{self.reserved} reserved for storage, peers and slack; connections: "
                f"RESP {self.resp_clients}, metrics {self.metrics_clients}, native "
                f"clients about {self.native_room}")


def plan(limit: int, in_use: int, peers: int, resp_max_clients: int | None,
         metrics_max_clients: int | None) -> FdBudget:
    """Share ``limit`` descriptors: ``in_use`` are open, the reserves are set aside,
    and each door (None: off) gets min(its setting, its share of the rest): metrics
    an eighth, RESP :data:`FD_RESP_SHARE` of what then remains, the rest is native
    clients'.  Raises :class:`ConfigError` if too little is left to serve anyone."""
    reserved = FD_RESERVE_STORAGE + FD_RESERVE_SLACK + FD_RESERVE_PER_PEER * peers
    free = limit - in_use - reserved
    if free < FD_MIN_FOR_CONNECTIONS:
        raise ConfigError(
            f"the open files limit ({limit}) leaves {max(free, 0)} descriptors for "
            f"connections ({in_use} open, {reserved} reserved); at least "
            f"{FD_MIN_FOR_CONNECTIONS} are needed: raise it (ulimit -n)")
    metrics = 0 if metrics_max_clients is None else max(1, min(metrics_max_clients,
                                                               free // 8))
    rest = free - metrics
    resp = 0 if resp_max_clients is None else max(1, min(resp_max_clients,
                                                         int(rest * FD_RESP_SHARE)))
    return FdBudget(limit, in_use, reserved, resp, metrics, rest - resp)


class AcceptBackoff:
    """When a door's listener may be polled again after failed ``accept`` calls.

    A listener whose ``accept`` fails for want of descriptors stays readable: polling
    it again at once spins.  Each failure in a row doubles the pause, from
    :data:`ACCEPT_BACKOFF_FIRST_S` up to :data:`ACCEPT_BACKOFF_MAX_S`; an accept that
    succeeds starts over."""

    __slots__ = ("failures", "first_s", "max_s", "until")

    def __init__(self, first_s: float = ACCEPT_BACKOFF_FIRST_S,
                 max_s: float = ACCEPT_BACKOFF_MAX_S) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self.failures = 0
        #: While paused, when the listener may be polled again; else None.
        self.until: float | None = None

    def failed(self, now: float) -> float:
        """An accept failed at ``now``: returns how long to stop polling."""
        pause = min(self.max_s, self.first_s * float(2 ** min(self.failures, 30)))
        self.failures += 1
        self.until = now + pause
        return pause

    def succeeded(self) -> None:
        self.failures = 0

    def due(self, now: float) -> bool:
        """True once, when the pause is over (the caller polls the listener again)."""
        if self.until is not None and now >= self.until:
            self.until = None
            return True
        return False


class Throttled:
    """One log line per cause per interval, with how often it happened meanwhile."""

    __slots__ = ("counts", "interval_s", "last", "logger")

    def __init__(self, logger: logging.Logger, interval_s: float = LOG_INTERVAL_S) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.counts: dict[str, int] = {}
        self.last: dict[str, float] = {}

    def log(self, level: int, cause: str, now: float, message: str) -> bool:
        """Count one ``cause``; log ``message`` (with the count) if its last line is at
        least an interval old.  Returns whether a line was written."""
        self.counts[cause] = self.counts.get(cause, 0) + 1
        last = self.last.get(cause)
        if last is not None and now - last < self.interval_s:
            return False
        count = self.counts.pop(cause)
        self.last[cause] = now
        self.logger.log(level, "%s (%d time%s since the last such line; at most one "
                        "line per %.0fs)", message, count, "" if count == 1 else "s",
                        self.interval_s)
        return True


__all__ = ["RESOURCE_ERRNOS", "AcceptBackoff", "Door", "FdBudget", "NofileLimit",
           "Rejection", "Throttled", "open_fds", "plan", "raise_nofile_limit"]
