"""What a node knows about each peer, and when it must repair from one.

Each peer is a small state machine:

==========  ============================================  =============================
liveness    meaning                                        leaves when
==========  ============================================  =============================
UNHEARD     nothing received since we started             its first broadcast arrives
LIVE        a broadcast within ``peer_timeout_s``          silent for ``peer_timeout_s``
SILENT      heard before, nothing for ``peer_timeout_s``   a broadcast arrives
==========  ============================================  =============================

Beside liveness, the peer's *delta stream*: the ``epoch`` (one per process start of the
peer) and ``seq`` up to which this node holds every delta the peer published.  Deltas
arrive in order on one PUB/SUB connection, so a delta or heartbeat whose ``seq`` lies
beyond ``seq + 1`` proves that something was lost (slow joiner, high-water-mark drop,
a cut); deltas merged past a gap are remembered in ``ahead`` so that one repair closes
the gap for good.

Repair is needed from a peer (:meth:`Peer.wants_repair`) when

* its heartbeat shows deltas of its current epoch we do not hold (a loss), or we hold no
  position for it at all (this node just started), or
* ``flag`` is set: it has held more of some third node's deltas than we do for longer
  than a settling delay (we cannot hear that node, or its deltas to us were lost), or
  its root differs from ours while both of us report the same delta positions (silent
  divergence), or the periodic check found roots that differ.

A completed repair with a peer gives us everything in its state when the repair began,
so our positions for every origin rise to the ones it reported (``SyncDiff.applied``).

A peer that *restarted* (a new epoch, while we held a position in its old one) is not a
reason to repair from it: it repairs itself from us, which also gives back whatever it
holds that we lack, and it re-publishes what its log replayed at start (the batches it
may have committed without publishing).  Repairing from every restarted node as well
made both of its peers stream hash lists at it while it was busiest: at a million keys
it received 18.6x the bytes of the 10,000 keys that had changed (bin/bench --scale).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from .messages import Applied, Heartbeat

#: Out-of-order delta numbers remembered per peer; beyond this the next repair closes
#: the gap instead.
MAX_AHEAD = 4096


class Liveness(Enum):
    UNHEARD = "unheard"
    LIVE = "live"
    SILENT = "silent"


@dataclass(slots=True)
class Stream:
    """How far this node holds one origin's deltas: every delta of ``epoch`` up to
    ``seq``, and the ones in ``ahead`` (merged out of order, past a gap)."""

    epoch: str | None = None
    seq: int = 0
    ahead: set[int] = field(default_factory=set)

    def covers(self, epoch: str, seq: int) -> bool:
        return self.epoch == epoch and self.seq >= seq

    def applied(self, epoch: str, seq: int) -> bool:
        """A delta (epoch, seq) was merged; False if it leaves a gap behind it."""
        if epoch != self.epoch:
            self.epoch, self.seq = epoch, 0
            self.ahead.clear()
        if seq <= self.seq:
            return True
        if seq == self.seq + 1:
            self.seq = seq
            self._absorb()
            return True
        if len(self.ahead) < MAX_AHEAD:
            self.ahead.add(seq)
        return False

    def adopt(self, epoch: str) -> None:
        """The origin restarted (a new epoch): its old positions mean nothing now."""
        self.epoch, self.seq = epoch, 0
        self.ahead.clear()

    def raise_to(self, epoch: str, seq: int) -> None:
        """We now hold everything up to (epoch, seq) (a repair completed)."""
        if epoch != self.epoch:
            self.epoch, self.seq = epoch, seq
            self.ahead.clear()
        elif seq > self.seq:
            self.seq = seq
            self._absorb()

    def _absorb(self) -> None:
        ahead = self.ahead
        if ahead:
            while self.seq + 1 in ahead:
                ahead.discard(self.seq + 1)
                self.seq += 1
            if ahead and min(ahead) <= self.seq:
                self.ahead = {s for s in ahead if s > self.seq}


@dataclass(slots=True)
class Peer:
    node_id: int
    stream: Stream = field(default_factory=Stream)
    last_heard: float | None = None
    silent_logged: bool = False
    #: The last heartbeat received (its root, positions and request-id log length).
    heartbeat: Heartbeat | None = None
    #: Repair wanted for a reason the heartbeat positions do not show (see module doc).
    flag: bool = False
    #: Third nodes this peer holds more of than we do: node -> (epoch, seq, since).
    watch: dict[int, tuple[str, int, float]] = field(default_factory=dict)
    #: Stamp of the newest fetch this peer answered (reads, see pending.py).
    fresh_as_of: int = 0
    #: Stamp of the newest fetch sent to it.
    fetch_stamp: int = 0
    last_fetch: float = float("-inf")
    #: How long its latest answered fetch took.  An unanswered fetch is re-sent after
    #: twice that (at least ``retry_interval_s``, at most ``peer_timeout_s``): when
    #: answers are slower than the retry interval (a read of thousands of keys on a
    #: loaded node), re-sending every interval buried the answers under ever more copies
    #: of the same fetch and the read expired (tests/integration/test_keyspace.py:
    #: 596 fetches of 6,000 keys in 9 s, where 8-20 serve the same read).
    fetch_rtt: float = 0.0
    last_push: float = float("-inf")
    #: Position in this peer's request-id log that we have read up to.
    rid_epoch: str = ""
    rid_cursor: int = 0
    #: A RidPull of our own (outside repairs) is unanswered, and when the last was sent.
    rid_pull_pending: bool = False
    last_rid_pull: float = float("-inf")
    #: When the last repair with this peer started and ended (for rate limits, status).
    last_repair_start: float = float("-inf")
    last_repair_end: float | None = None
    repairs: int = 0
    keys_repaired: int = 0
    #: Root equality at the last heartbeat (status only).
    same_root: bool = False

    def liveness(self, now: float, timeout_s: float) -> Liveness:
        if self.last_heard is None:
            return Liveness.UNHEARD
        return Liveness.LIVE if now - self.last_heard <= timeout_s else Liveness.SILENT

    def wants_repair(self) -> bool:
        hb = self.heartbeat
        if hb is None:
            return False
        return self.flag or not self.stream.covers(hb.epoch, hb.seq)

    def rids_behind(self) -> bool:
        """Its request-id log (as its heartbeat tells) holds entries we have not read."""
        hb = self.heartbeat
        return hb is not None and (hb.rid_epoch != self.rid_epoch
                                   or hb.rid_next - 1 > self.rid_cursor)

    def position(self) -> tuple[str, int] | None:
        s = self.stream
        return None if s.epoch is None else (s.epoch, s.seq)


def vector(own: tuple[str, int], node_id: int, peers: dict[int, Peer]) -> Applied:
    """This node's positions for every origin it knows (itself included)."""
    out: Applied = {node_id: own}
    for pid, peer in peers.items():
        pos = peer.position()
        if pos is not None:
            out[pid] = pos
    return out
