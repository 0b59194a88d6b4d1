"""How far each peer's wall clock is from ours, measured on its heartbeats.

Expiry deadlines are wall-clock times, read by each node with its own clock, and
collection's stale-message rules compare a peer's ``at_ms`` with our clock
(:mod:`.intake`): both are only as good as the clocks agree.  Every heartbeat carries its
sender's wall clock (``Heartbeat.wall_ms``); the skew is that minus ours when it arrives
(so it includes the heartbeat's transit, a millisecond on a LAN: an overestimate, never
an underestimate, of a clock running ahead).  A peer whose skew goes above
``max_clock_skew_s`` is warned about once (a log line, ``clock_skew_warnings``), and once
more when it comes back within the bound.
"""

from __future__ import annotations

from ..config import Settings
from .batch import Batch
from .messages import Heartbeat
from .outputs import LogLevel
from .stats import NodeStats


class ClockWatch:
    def __init__(self, settings: Settings, batch: Batch, stats: NodeStats) -> None:
        self._bound_ms = settings.max_clock_skew_s * 1000.0
        self._batch = batch
        self._stats = stats
        #: peer -> its clock minus ours at its last heartbeat, ms (peers never heard, or
        #: that send no wall clock - 0.2 nodes - have none).
        self.skew_ms: dict[int, int] = {}
        #: Peers warned about and not yet back within the bound.
        self.warned: set[int] = set()

    def observe(self, peer: int, heartbeat: Heartbeat) -> None:
        wall = self._batch.wall_ms
        if not heartbeat.wall_ms or not wall:
            return  # a 0.2 peer, or a runtime that gives no wall clock
        skew = heartbeat.wall_ms - wall
        self.skew_ms[peer] = skew
        over = abs(skew) > self._bound_ms
        if over and peer not in self.warned:
            self.warned.add(peer)
            self._stats.clock_skew_warnings += 1
            self._batch.log(
                f"node {peer}'s clock is {skew / 1000:+.3f}s from ours (more than "
                f"max_clock_skew_s = {self._bound_ms / 1000:g}): expiry deadlines are read "
                "that much apart on the two nodes, and collection's stale-message rules "
                "assume the bound (WRITEUP, expiry and clocks)", LogLevel.WARNING)
        elif not over and peer in self.warned:
            self.warned.discard(peer)
            self._batch.log(f"node {peer}'s clock is back within max_clock_skew_s "
                            f"({skew / 1000:+.3f}s from ours)")


__all__ = ["ClockWatch"]
