"""Requests that cannot be answered at once: waits for replication, reads for freshness.

* A :class:`Wait` is an applied write (``wait=majority|all``) waiting until ``needed``
  nodes hold its ``target`` durably: this node (always, once committed) plus the peers
  that answered a :class:`~.messages.Merge` with a state that holds it.
* A :class:`Read` waits until ``needed`` nodes' states of its keys were merged *after*
  it began, and until this node dominates what the session has seen of those keys.
  Freshness is ordered by *stamps*, not clock readings: every read started and every
  fetch sent takes the next stamp, and a peer's answer counts for a read only if its
  fetch's stamp is larger than the read's (a coarse or stalled clock gave a fetch sent
  before a read the read's own time, and counting that stale answer broke
  read=majority after wait=majority: found by the simulator, ``bin/sim --seed 184
  --nodes 5`` in zcounter 0.1).  A write gated on the session (or on a fresh node's
  bootstrap) also waits here as a read, and is applied when the read is done.

Both are *held*: kept across batches on behalf of a connection.  :attr:`Pending.per_client`
counts them per connection so that the core can refuse one more past its caps
(:data:`zcounter.limits.MAX_HELD_PER_CONNECTION`, ``MAX_HELD_PER_NODE``) before it is
made, not after.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..model.pncounter import Record
from .messages import Add, Confirm, Expire, Get, Reset, Ttl
from .outputs import ClientId


@dataclass(slots=True)
class Wait:
    client: ClientId
    #: A write waiting for its level, or a :class:`~.messages.Confirm` of writes already
    #: answered (its target: the key's whole state when it arrived).
    request: Add | Reset | Expire | Confirm
    target: dict[str, Record]
    needed: int
    deadline: float
    duplicate: bool
    holders: set[int] = field(default_factory=set)
    #: Peers it was pushed to at least once (new waits are pushed at once, not at the
    #: next retry: that added ~retry_interval_s to every majority write in 0.1).
    pushed: set[int] = field(default_factory=set)

    @property
    def key(self) -> str:
        return self.request.key


@dataclass(slots=True)
class Read:
    client: ClientId
    request: Get | Ttl | Add | Reset | Expire
    keys: tuple[str, ...]
    #: Nodes (this one included) whose fresh state is needed.
    needed: int
    #: Peers that must have answered (1 while this node bootstraps), whatever ``needed``.
    min_peers: int
    deadline: float
    stamp: int
    fresh: set[int] = field(default_factory=set)
    #: Peer -> keys of this read it answered fresh fetches of, while the read's keys
    #: span several fetches (see :meth:`Pending.answered`).
    partial: dict[int, set[str]] = field(default_factory=dict)


class Pending:
    """The waits and reads of one node."""

    def __init__(self) -> None:
        self.waits: list[Wait] = []
        self.reads: list[Read] = []
        #: Connection -> its waits and reads held here (no entry once it holds none).
        self.per_client: Counter[ClientId] = Counter()
        self._stamp = 0

    def __bool__(self) -> bool:
        return bool(self.waits or self.reads)

    def __len__(self) -> int:
        return len(self.waits) + len(self.reads)

    def _release(self, done: Iterable[Wait | Read]) -> None:
        held = self.per_client
        for item in done:
            left = held[item.client] - 1
            if left > 0:
                held[item.client] = left
            else:
                del held[item.client]

    def next_stamp(self) -> int:
        self._stamp += 1
        return self._stamp

    # ------------------------------------------------------------------ waits

    def add_wait(self, wait: Wait) -> None:
        self.waits.append(wait)
        self.per_client[wait.client] += 1

    def held(self, peer: int, states: dict[str, dict[str, Record]],
             holds: Callable[[dict[str, Record], dict[str, Record]], bool]) -> None:
        """``peer`` confirmed holding ``states`` durably."""
        for wait in self.waits:
            state = states.get(wait.key)
            if state is not None and holds(state, wait.target):
                wait.holders.add(peer)

    def take_confirmed(self) -> list[Wait]:
        """Waits whose level is met (this node holds every applied write it answers)."""
        done = [w for w in self.waits if len(w.holders) + 1 >= w.needed]
        if done:
            self.waits = [w for w in self.waits if len(w.holders) + 1 < w.needed]
            self._release(done)
        return done

    def unconfirmed_keys(self, peer: int) -> set[str]:
        """Keys of waits that ``peer`` has not confirmed yet."""
        return {w.key for w in self.waits if peer not in w.holders}

    # ------------------------------------------------------------------ reads

    def add_read(self, read: Read) -> None:
        self.reads.append(read)
        self.per_client[read.client] += 1

    def answered(self, peer: int, stamp: int, keys: Iterable[str]) -> None:
        """``peer`` answered a fetch of ``keys`` that was sent with ``stamp``.  A read
        of more keys than one fetch carries is fresh from ``peer`` once fetches sent after
        it began have covered all its keys."""
        fetched = set(keys)
        for read in self.reads:
            if read.stamp >= stamp or peer in read.fresh:
                continue
            if fetched.issuperset(read.keys):
                read.fresh.add(peer)
                continue
            got = read.partial.setdefault(peer, set())
            got.update(k for k in read.keys if k in fetched)
            if len(got) == len(set(read.keys)):
                read.fresh.add(peer)
                del read.partial[peer]

    def take_done(self, done: Callable[[Read], bool]) -> list[Read]:
        ready: list[Read] = []
        waiting: list[Read] = []
        for read in self.reads:
            (ready if done(read) else waiting).append(read)
        self.reads = waiting
        self._release(ready)
        return ready

    def stale_peers(self, peers: Iterable[int]) -> list[int]:
        """Peers some pending read still needs a fresh answer from."""
        return [p for p in peers if any(p not in r.fresh for r in self.reads)]

    def read_keys(self) -> list[str]:
        keys: dict[str, None] = {}
        for read in self.reads:
            keys.update(dict.fromkeys(read.keys))
        return list(keys)

    # ------------------------------------------------------------------ time

    def take_expired(self, now: float) -> tuple[list[Wait], list[Read]]:
        waits = [w for w in self.waits if now >= w.deadline]
        if waits:
            self.waits = [w for w in self.waits if now < w.deadline]
            self._release(waits)
        reads = [r for r in self.reads if now >= r.deadline]
        if reads:
            self.reads = [r for r in self.reads if now < r.deadline]
            self._release(reads)
        return waits, reads

    def next_deadline(self) -> float:
        return min([w.deadline for w in self.waits] + [r.deadline for r in self.reads],
                   default=float("inf"))
