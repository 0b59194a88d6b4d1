"""The replicated state: a grow-only counter (G-Counter) keyed by slot.

A *slot* belongs to one incarnation of one node, written ``"<node>.<incarnation>"``
(``"2.5f0c1a9e3b7d"``).  Only that incarnation ever raises its slot; everybody else
learns slot values by merging.  Merge takes the per-slot maximum, so it is commutative,
associative and idempotent: replication may duplicate, reorder or replay states and
still converge, and any full state is a valid repair ("snapshot") for any other.

The value is the sum of all slots.  Values are bounded by ``MAX_COUNT`` (2**63-1, the
largest integer orjson encodes) and the bound is enforced on the sum, so no reachable
state can overflow the wire format.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping

MAX_COUNT = 2**63 - 1
MAX_INCREMENT = 2**32

_SLOT_RE = re.compile(r"^([1-9][0-9]{0,8})\.([0-9a-f]{12})$")


def make_slot(node_id: int, incarnation: str) -> str:
    """Return the slot key of ``node_id`` in ``incarnation``."""
    return f"{node_id}.{incarnation}"


def slot_node(slot: str) -> int | None:
    """Return the node id a slot key names, or None when the key is malformed."""
    match = _SLOT_RE.match(slot)
    return int(match.group(1)) if match else None


class GCounter:
    """A mutable G-Counter.  Not thread-safe; the node core owns exactly one."""

    __slots__ = ("_digest", "_slots", "_total")

    def __init__(self, slots: Mapping[str, int] | None = None) -> None:
        self._slots: dict[str, int] = {}
        self._total = 0
        self._digest: str | None = None
        if slots:
            self.merge(slots)

    @property
    def value(self) -> int:
        return self._total

    def slots(self) -> dict[str, int]:
        """A copy of the slot map, safe to hand to another component."""
        return dict(self._slots)

    def get(self, slot: str) -> int:
        return self._slots.get(slot, 0)

    def __len__(self) -> int:
        return len(self._slots)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GCounter) and self._slots == other._slots

    def __repr__(self) -> str:
        return f"GCounter({self._slots!r})"

    def increment(self, slot: str, by: int) -> int:
        """Raise ``slot`` by ``by``; return the slot's new value.

        Raises ValueError (and changes nothing) if ``by`` is not positive or the total
        would pass ``MAX_COUNT``.
        """
        if by <= 0:
            raise ValueError("increment must be positive")
        if self._total + by > MAX_COUNT:
            raise OverflowError("count would exceed 2**63-1")
        new = self._slots.get(slot, 0) + by
        self._slots[slot] = new
        self._total += by
        self._digest = None
        return new

    def merge_gain(self, other: Mapping[str, int]) -> int:
        """How much ``merge(other)`` would add to the value (0 if nothing)."""
        gain = 0
        for slot, value in other.items():
            current = self._slots.get(slot, 0)
            if value > current:
                gain += value - current
        return gain

    def merge(self, other: Mapping[str, int]) -> dict[str, int]:
        """Merge ``other`` in by per-slot max; return the slots that grew (new values).

        Raises OverflowError (and changes nothing) if the merged total would pass
        ``MAX_COUNT``; callers validate peers' states with :meth:`merge_gain` first.
        """
        if self._total + self.merge_gain(other) > MAX_COUNT:
            raise OverflowError("merged count would exceed 2**63-1")
        grown: dict[str, int] = {}
        for slot, value in other.items():
            current = self._slots.get(slot, 0)
            if value > current:
                self._slots[slot] = value
                self._total += value - current
                grown[slot] = value
        if grown:
            self._digest = None
        return grown

    def dominates(self, other: Mapping[str, int]) -> bool:
        """True when every slot of ``other`` is at most our value for it."""
        slots = self._slots
        return all(slots.get(slot, 0) >= value for slot, value in other.items())

    def digest(self) -> str:
        """A short hash of the whole state: equal states have equal digests.

        Heartbeats carry it so peers can notice divergence without shipping state.
        """
        if self._digest is None:
            h = hashlib.blake2b(digest_size=8)
            for slot in sorted(self._slots):
                h.update(f"{slot}={self._slots[slot]};".encode())
            self._digest = h.hexdigest()
        return self._digest


def merge_all(states: Iterable[Mapping[str, int]]) -> GCounter:
    """Merge several states into a fresh counter (used by tests and the client)."""
    counter = GCounter()
    for state in states:
        counter.merge(state)
    return counter
