"""Simulated time: one clock in integer milliseconds and one queue of future events.

Events at the same millisecond run in the order they were scheduled (a sequence number
breaks ties), so nothing depends on how Python orders equal keys.  An event is either a
message in flight (:class:`~.network.Packet`, which the convergence check can inspect)
or a callable.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator

from .network import Packet

Event = Packet | Callable[[], None]


class Scheduler:
    def __init__(self) -> None:
        self.now_ms = 0
        self._seq = 0
        self._heap: list[tuple[int, int, Event]] = []

    def at(self, at_ms: int, event: Event) -> None:
        """Run ``event`` at simulated time ``at_ms`` (never earlier than now)."""
        self._seq += 1
        heapq.heappush(self._heap, (max(at_ms, self.now_ms), self._seq, event))

    def after(self, delay_ms: int, event: Event) -> None:
        self.at(self.now_ms + delay_ms, event)

    def next_instant(self) -> list[Event]:
        """Advance the clock to the next instant with events; return them in order."""
        heap = self._heap
        t = heap[0][0]
        self.now_ms = t
        out: list[Event] = []
        while heap and heap[0][0] == t:
            out.append(heapq.heappop(heap)[2])
        return out

    def __bool__(self) -> bool:
        return bool(self._heap)

    def packets(self) -> Iterator[Packet]:
        """Messages still in flight (any order)."""
        for _, _, event in self._heap:
            if isinstance(event, Packet):
                yield event
