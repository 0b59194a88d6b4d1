"""Every message of the protocol, as frozen dataclasses, and the enums they use.

Three conversations (the codec, :mod:`.codec`, turns these into bytes and back):

* **client -> node** over the node's ROUTER (clients are DEALERs): :class:`Add`,
  :class:`Reset`, :class:`Expire`, :class:`Get`, :class:`Ttl`, :class:`ListKeys`,
  :class:`Status`, :class:`Ping`, :class:`Confirm`; answered by :class:`Counted`, :class:`KeysPage`,
  :class:`StatusReply`, :class:`Pong`, :class:`Held` or :class:`Refused`.  ``id`` is the
  caller's correlation tag, echoed verbatim.  The Redis-protocol door
  (:mod:`zcounter.protocol.resp`) turns RESP commands into these same requests.
* **node -> node requests** over the same ROUTER from each peer's DEALER:
  :class:`Fetch` (states of some keys), :class:`Merge` (hold these states durably),
  the three steps of a repair (:class:`SyncBuckets`, :class:`SyncSegments`,
  :class:`SyncKeys`), :class:`RidPull` (pages of the request-id log) and :class:`Hold`
  (collection: do you hold these dead keys?); answered by :class:`StatesReply`,
  :class:`SyncDiff`, :class:`SyncStates`, :class:`RidPage` or :class:`Holding`.
* **node -> all peers** over PUB/SUB: :class:`Delta` (what a batch changed here) and
  :class:`Heartbeat` (alive; constant size whatever the number of keys).

States on the wire are by slot *name*: ``{slot: (p, n, bp, bn)}``
(:mod:`zcounter.model.pncounter`), except in a repair's pages of states, which name each
slot once per page (:mod:`zcounter.model.page`).

Every message that carries states from a peer also carries ``at_ms``: the sender's wall
clock (unix ms) when it read them from its keyspace, 0 if unknown (a 0.2 peer: treated as
fresh).  The receiver drops states of keys it does not hold that are too old to be safe
after a collection (:mod:`.intake`, spec "No resurrection").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NamedTuple

# ErrorCode is defined in zcounter.errors beside RequestRefused, which carries it: that
# module imports nothing of the package, so it has no import cycle with the model (whose
# Overflow is a ZCounterError).  Re-exported: the wire's messages name it from here.
from ..errors import ErrorCode as ErrorCode
from ..model.expiry import MAX_TTL_MS as MAX_TTL_MS
from ..model.expiry import ExpireMode as ExpireMode
from ..model.page import StatePage
from ..model.pncounter import Record

#: key -> {slot name -> record}
States = dict[str, dict[str, Record]]
Tag = str | int | None

#: The counter a request names when it names none (zcounter 0.1's single counter).
DEFAULT_KEY = "default"
MAX_KEY_BYTES = 256


class Level(str, Enum):
    """How many nodes a write waits for / a read merges (this node included)."""

    LOCAL = "local"
    MAJORITY = "majority"
    ALL = "all"

    def needed(self, cluster_size: int) -> int:
        if self is Level.LOCAL:
            return 1
        return cluster_size // 2 + 1 if self is Level.MAJORITY else cluster_size


# --------------------------------------------------------------------------- client side
#
# The messages of the per-request path - Add, Reset, Get and Counted - are named tuples,
# the others frozen dataclasses: building a frozen dataclass of eight fields cost 2.7 us
# here against 0.9 us for a NamedTuple (timeit, same run), paid twice per increment
# (request and reply) at tens of thousands of increments per second.  Both are immutable
# and typed; a named tuple's ``seen`` default is one shared empty dict, never mutated.

_NO_STATES: States = {}


class Add(NamedTuple):
    """Add ``amount`` to ``key`` (negative: a decrement); acknowledge once ``wait``
    nodes hold it durably.  ``seen``: the session's view of this key."""

    id: Tag
    key: str = DEFAULT_KEY
    amount: int = 1
    rid: str | None = None
    wait: Level = Level.LOCAL
    timeout_ms: int = 2000
    seen: States = _NO_STATES
    #: Ask for the key's state in the reply (sessions do; raw clients need not).
    session: bool = False
    #: Give the key this expiry (ms from the node's now) if it has none after the step:
    #: ``INCR`` + ``EXPIRE NX`` in one durable request (the rate limiter).  0: none;
    #: else 1..:data:`MAX_TTL_MS` (the codec refuses the rest).
    ttl_ms: int = 0


class Reset(NamedTuple):
    """Observed reset of ``key``: zero as of everything the answering node has seen."""

    id: Tag
    key: str = DEFAULT_KEY
    rid: str | None = None
    wait: Level = Level.LOCAL
    timeout_ms: int = 2000
    seen: States = _NO_STATES
    session: bool = False


class Expire(NamedTuple):
    """Set, change or remove ``key``'s expiry; answered ``Counted(counts=(1,))`` if that
    changed something, ``(0,)`` if not (no such key, or ``mode`` said no), as Redis's
    EXPIRE and PERSIST answer.  Replicated like a reset (a delta of the key's meta),
    exactly once by ``rid``.

    The deadline is ``at_ms`` (unix ms, absolute: EXPIREAT) or ``ttl_ms`` (ms from the
    answering node's own clock: EXPIRE - the door and the clients have no clock the
    node's deadlines agree with); neither is PERSIST (remove the expiry), both is a bad
    request.  A deadline at or before the node's now expires the key at once (Redis).
    ``also_xx``: and only if the key has an expiry - Redis's ``XX`` beside ``LT`` (with
    ``GT`` it says nothing more, with ``NX`` it is refused), the one pair of its options
    a single ``mode`` cannot say."""

    id: Tag
    key: str = DEFAULT_KEY
    at_ms: int | None = None
    mode: ExpireMode | None = None
    rid: str | None = None
    wait: Level = Level.LOCAL
    timeout_ms: int = 2000
    seen: States = _NO_STATES
    session: bool = False
    ttl_ms: int | None = None
    also_xx: bool = False


class Get(NamedTuple):
    """Read ``keys`` after merging the states of ``read`` nodes (self included)."""

    id: Tag
    keys: tuple[str, ...] = (DEFAULT_KEY,)
    read: Level = Level.LOCAL
    timeout_ms: int = 2000
    seen: States = _NO_STATES
    session: bool = False


class Ttl(NamedTuple):
    """``key``'s expiry after merging the states of ``read`` nodes (self included):
    ``Counted(counts=(pttl_ms, deadline_ms))``, each ``-2`` (no such key), ``-1`` (no
    expiry) or the value (ms left; the deadline, unix ms)."""

    id: Tag
    key: str = DEFAULT_KEY
    read: Level = Level.LOCAL
    timeout_ms: int = 2000
    seen: States = _NO_STATES
    session: bool = False


@dataclass(frozen=True, slots=True)
class ListKeys:
    """One page of live keys (sorted) starting with ``prefix``, after ``after``."""

    id: Tag
    prefix: str = ""
    after: str | None = None
    limit: int = 1000


@dataclass(frozen=True, slots=True)
class Status:
    id: Tag


@dataclass(frozen=True, slots=True)
class Ping:
    id: Tag


@dataclass(frozen=True, slots=True)
class Confirm:
    """Wait until ``nodes`` nodes (this one included) hold durably everything this node
    holds of ``key`` now - so every write it applied to ``key`` so far - or until
    ``timeout_ms`` passes; answered with :class:`Held` either way.  Redis's ``WAIT``
    over the RESP door: writes are acknowledged at once (``wait=local``) and confirmed
    afterwards, and the answer says how many nodes were reached, not whether a level was.
    """

    id: Tag
    key: str
    nodes: int
    timeout_ms: int = 2000


ClientRequest = Add | Reset | Expire | Get | Ttl | ListKeys | Status | Ping | Confirm


class Counted(NamedTuple):
    """Success of Add, Reset or Get: one count per key, in request order (Expire: 1 or
    0; Ttl: pttl and deadline).  ``states``: the keys' states, for sessions (empty
    unless the request asked).  ``exists``: for a Get that asked for states, whether
    each key exists at the node's now (a key can hold state and not exist: expired, or
    reset; the RESP door answers nil for it, as Redis does for a missing key)."""

    id: Tag
    node: int
    counts: tuple[int, ...]
    states: States
    duplicate: bool = False
    exists: tuple[bool, ...] = ()


@dataclass(frozen=True, slots=True)
class KeysPage:
    id: Tag
    node: int
    entries: tuple[tuple[str, int], ...]
    more: bool


@dataclass(frozen=True, slots=True)
class StatusReply:
    id: Tag
    node: int
    status: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Pong:
    id: Tag
    node: int


@dataclass(frozen=True, slots=True)
class Refused:
    id: Tag
    node: int
    code: ErrorCode
    message: str


@dataclass(frozen=True, slots=True)
class Held:
    """Answer to :class:`Confirm`: ``nodes`` nodes (this one included) are known to hold
    ``key`` as this node held it when the Confirm arrived (at least ``Confirm.nodes`` of
    them unless the timeout passed first)."""

    id: Tag
    node: int
    key: str
    nodes: int


ClientReply = Counted | KeysPage | StatusReply | Pong | Held | Refused


# --------------------------------------------------------------------------- peer side

#: A request id with the key it changed and the partial state that proves it applied.
RidEntry = tuple[str, str, dict[str, Record]]
#: node id -> (epoch, last update sequence applied)
Applied = dict[int, tuple[str, int]]


@dataclass(frozen=True, slots=True)
class Delta:
    """Broadcast: what one batch changed at ``origin`` (its own records only), with the
    request ids it applied.  ``seq`` counts deltas within the origin's ``epoch``."""

    origin: int
    epoch: str
    seq: int
    states: States
    rids: tuple[RidEntry, ...] = ()
    #: The origin's wall clock (unix ms) when it read ``states`` (0: unknown).
    at_ms: int = 0


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Broadcast: alive.  Constant size whatever the number of keys: the root of the
    hash tree, the last delta sent, how far this node has applied every origin's deltas,
    and how long its request-id log is."""

    origin: int
    epoch: str
    seq: int
    root: int
    keys: int
    applied: Applied
    rid_epoch: str
    rid_next: int
    #: The origin's wall clock (unix ms) when it sent this (0: unknown, a 0.2 peer):
    #: peers measure clock skew with it.
    wall_ms: int = 0


@dataclass(frozen=True, slots=True)
class Fetch:
    """Peer request: your states of ``keys`` (reads, session catch-up, bootstrap)."""

    id: int
    origin: int
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Merge:
    """Peer request: merge these states and request ids, answer once they are durable
    (``wait=majority|all``, and a repair giving back what the responder lacked)."""

    id: int
    origin: int
    states: States
    rids: tuple[RidEntry, ...] = ()
    #: The sender's wall clock when it read ``states`` (a retry keeps the original).
    at_ms: int = 0


@dataclass(frozen=True, slots=True)
class SyncBuckets:
    """Repair step 1: the initiator's 256 bucket hashes."""

    id: int
    origin: int
    hashes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SyncSegments:
    """Repair step 2: the initiator's 256 segment hashes of each bucket in ``buckets``."""

    id: int
    origin: int
    buckets: tuple[int, ...]
    hashes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SyncKeys:
    """Repair step 3: the initiator's keys in ``segments`` with their hashes; the
    responder answers with its states of every key that differs."""

    id: int
    origin: int
    segments: tuple[int, ...]
    entries: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class RidPull:
    """Peer request: your request-id log after position ``after`` of log ``epoch``."""

    id: int
    origin: int
    epoch: str
    after: int


#: Keys one Hold may name (and one collection round takes).
MAX_HOLD_KEYS = 4000


@dataclass(frozen=True, slots=True)
class Hold:
    """Collection (:mod:`.collect`): do you hold each of these keys dead, with this key
    hash (or have you collected it within ``gc_grace_s``)?  At most
    :data:`MAX_HOLD_KEYS` (key, hash) pairs."""

    id: int
    origin: int
    keys: tuple[tuple[str, int], ...]


PeerRequest = Fetch | Merge | SyncBuckets | SyncSegments | SyncKeys | RidPull | Hold


@dataclass(frozen=True, slots=True)
class StatesReply:
    """Answer to Fetch (the states it has of those keys) or Merge (the states it now
    holds durably)."""

    id: int
    node: int
    states: States
    #: The answering node's wall clock when it read ``states``.
    at_ms: int = 0


@dataclass(frozen=True, slots=True)
class SyncDiff:
    """Answer to SyncBuckets / SyncSegments: which of the indexes differ.  The answer to
    SyncBuckets also carries the responder's ``applied`` vector at that moment: once the
    repair completes, the initiator holds everything those deltas carried."""

    id: int
    node: int
    indexes: tuple[int, ...]
    applied: Applied = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SyncStates:
    """Answer to SyncKeys: the responder's states of the keys that differ (or that the
    initiator lacks), the keys the initiator listed that the responder lacks or holds
    differently (the initiator gives those back), and how far it got: segments up to
    ``done`` (an index into the request's ``segments``) are complete.  The states come
    as one :class:`~zcounter.model.page.StatePage` (slot names once per page)."""

    id: int
    node: int
    states: StatePage
    differ: tuple[str, ...]
    done: int
    #: The responder's wall clock when it read ``states``.
    at_ms: int = 0


@dataclass(frozen=True, slots=True)
class RidPage:
    """Answer to RidPull: entries of the log, its epoch, the position of the last entry
    sent, and whether more follow."""

    id: int
    node: int
    entries: tuple[RidEntry, ...]
    epoch: str
    cursor: int
    more: bool


@dataclass(frozen=True, slots=True)
class Holding:
    """Answer to :class:`Hold`: ``ok[i]`` iff the node holds ``keys[i]`` with that hash
    and dead at its own clock, or collected it within ``gc_grace_s``.  Sent only after
    the batch's commit (rule R1), so a True is durable."""

    id: int
    node: int
    ok: tuple[bool, ...]


PeerReply = StatesReply | SyncDiff | SyncStates | RidPage | Holding
Broadcast = Delta | Heartbeat

#: Operations only peers may send (role checks: issue 10).
PEER_REQUESTS = (Fetch, Merge, SyncBuckets, SyncSegments, SyncKeys, RidPull, Hold)
