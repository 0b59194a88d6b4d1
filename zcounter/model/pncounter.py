"""One counter's replicated state: a PN-counter with an *observed reset*.

Every node incarnation that ever changed a counter owns a *slot* in it, named
``"<node id>.<12 hex digits>"`` (``"2.5f0c1a9e3b7d"``).  A slot holds a *record* of four
totals, each only ever growing:

* ``p``: everything that slot's owner added (increments),
* ``n``: everything it subtracted (decrements),
* ``bp``, ``bn``: the *bases*: how much of ``p`` and ``n`` some reset has observed.

The value is ``sum(p - bp) - sum(n - bn)`` over the slots.  Only a slot's owner raises
its ``p`` and ``n``; any node may raise bases, and only to totals it has seen, so
``bp <= p`` and ``bn <= n`` always hold.  Merge is the per-field maximum: commutative,
associative and idempotent, so states may be duplicated, reordered or replayed, and any
full state repairs any other.

Observed reset (Baquero, Almeida, Lerche, PaPoC 2016 reach the same effect with dots):
a reset at a node sets, for every slot *it knows of*, ``bp := p`` and ``bn := n``.  What it
had not seen - a larger ``p`` elsewhere, or a slot it never heard of - stays above the
bases after the merge and keeps counting.  Two concurrent resets merge to the union of
what they observed.  No update is lost (an unobserved one survives every reset) and none
comes back (bases never go down).

Bounds: the totals ``sum(p)`` and ``sum(n)`` of a counter are each at most ``MAX_TOTAL``
(2**63-1, the largest integer orjson writes signed), so the value stays within signed
64 bits; a step that would break a bound is refused and changes nothing.

This module works on plain mappings ``slot name -> (p, n, bp, bn)`` (:data:`State`): the
form on the wire, in sessions and in tests.  :mod:`zcounter.model.keyspace` stores the
same thing packed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

MAX_TOTAL = 2**63 - 1
#: Largest step of one increment or decrement request.
MAX_STEP = 2**32

Record = tuple[int, int, int, int]
#: slot name -> (p, n, bp, bn)
State = Mapping[str, Record]

P, N, BP, BN = range(4)
ZERO: Record = (0, 0, 0, 0)

# fullmatch, not ``$``: ``$`` also matches before a trailing newline.
_SLOT_RE = re.compile(r"([1-9][0-9]{0,8})\.([0-9a-f]{12})")


class Overflow(ValueError):
    """A step or a merge would take a total past ``MAX_TOTAL``; nothing was changed."""


def make_slot(node_id: int, incarnation: str) -> str:
    """The slot name of ``node_id`` in ``incarnation``."""
    return f"{node_id}.{incarnation}"


def slot_node(slot: str) -> int | None:
    """The node id a slot name names, or None when the name is malformed."""
    match = _SLOT_RE.fullmatch(slot)
    return int(match.group(1)) if match else None


def value(state: State) -> int:
    return sum(p - bp - n + bn for p, n, bp, bn in state.values())


def totals(state: State) -> tuple[int, int]:
    """``(sum of p, sum of n)``: the quantities the bounds apply to."""
    return sum(r[P] for r in state.values()), sum(r[N] for r in state.values())


def is_live(state: State) -> bool:
    """True when some update is not covered by a reset (a never-written or fully reset
    counter is not live: it reads 0 and is not listed)."""
    return any(p > bp or n > bn for p, n, bp, bn in state.values())


def join_record(a: Record, b: Record) -> Record:
    return (max(a[0], b[0]), max(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def merge(a: State, b: State) -> dict[str, Record]:
    """The join of two states (neither is changed)."""
    out = dict(a)
    for slot, rec in b.items():
        mine = out.get(slot)
        out[slot] = rec if mine is None else join_record(mine, rec)
    return out


def merge_all(states: Iterable[State]) -> dict[str, Record]:
    out: dict[str, Record] = {}
    for state in states:
        out = merge(out, state)
    return out


def dominates(a: State, b: State) -> bool:
    """True when ``a`` holds everything ``b`` does (per slot, per field)."""
    for slot, rec in b.items():
        mine = a.get(slot, ZERO)
        if (mine[0] < rec[0] or mine[1] < rec[1] or mine[2] < rec[2]
                or mine[3] < rec[3]):
            return False
    return True


def add(state: State, slot: str, amount: int) -> dict[str, Record]:
    """``state`` after ``slot``'s owner adds ``amount`` (negative: a decrement).

    Raises :class:`Overflow` if a total would pass ``MAX_TOTAL``, ValueError for 0.
    """
    if amount == 0:
        raise ValueError("a step must not be zero")
    p_total, n_total = totals(state)
    if (amount > 0 and p_total + amount > MAX_TOTAL) or (
            amount < 0 and n_total - amount > MAX_TOTAL):
        raise Overflow("the counter's total would pass 2**63-1")
    p, n, bp, bn = state.get(slot, ZERO)
    out = dict(state)
    out[slot] = (p + amount, n, bp, bn) if amount > 0 else (p, n - amount, bp, bn)
    return out


def reset(state: State) -> dict[str, Record]:
    """``state`` after an observed reset: every base raised to its total."""
    return {slot: (p, n, p, n) for slot, (p, n, _, _) in state.items()}


def is_valid_record(rec: object) -> bool:
    """Four integers in 0..MAX_TOTAL with ``bp <= p`` and ``bn <= n``."""
    if not isinstance(rec, (tuple, list)) or len(rec) != 4:
        return False
    for v in rec:
        if type(v) is not int or not 0 <= v <= MAX_TOTAL:
            return False
    return bool(rec[2] <= rec[0] and rec[3] <= rec[1])
