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

Bounds (issue 19), the rule and why:

* A *record* is four integers in 0..``MAX_TOTAL`` (2**63-1, the largest integer orjson
  writes signed) with ``bp <= p`` and ``bn <= n``.  That is all a state must satisfy to
  be merged: **a merge of valid records is never refused**, whatever their sums.
* A *step* (increment or decrement) is refused with :class:`Overflow`, changing nothing,
  when it would take the key's *live* total in its direction, ``sum(p - bp)`` or
  ``sum(n - bn)``, past ``MAX_TOTAL``, or the stepping node's own ``p`` or ``n`` past
  ``MAX_TOTAL`` (a record's range).
* A read answers the value *saturated* to ``-MAX_TOTAL..MAX_TOTAL`` (:func:`saturate`).

Why not bound the sums of a merged state (what 0.2 did: ``sum(p)`` and ``sum(n)`` each
at most 2**63-1, checked on steps and on merges)?  Because legal histories break it.
Two nodes that both hold a key at ``sum(p) = 2**63 - 11`` may each add 10 before hearing
of the other: each step passed its node's check, and the merge of the two states sums
to 2**63 + 9.  Refusing that merge leaves the replicas apart for good, and any rule that
refuses a merge on a sum across slots does the same: each node checks only the slots it
has seen, so concurrent steps on n nodes can legally reach n times any bound on one
node's view.  So the only bound a merge can enforce without refusing a legal history is
per record, and that is what the codec checks (``tests/model/test_bounds.py`` runs
legal histories of adds, resets and merges across three replicas, none refused, and
shows that such a history does pass the old rule).

Why live totals for steps, not lifetime totals: 0.2's bound on ``sum(p)`` was never
lowered by a reset (a reset raises bases, not totals), so one state with ``p`` at
2**63-1 - forged by anything that could speak as a peer, in ``none`` mode any local
process - made a key refuse every increment on every node forever, ``DEL`` included
(issue 19).  With live totals, a reset (``DEL``) brings both to 0, and the key takes
steps again at once.  A value beyond the signed 64-bit range (concurrent steps near the
bound, or a forged record) reads as the bound until steps the other way or a reset bring
it back: reads never fail, and nothing a peer sends is refused for its size alone.

What stays: a record never shrinks, so a node whose own ``p`` (or ``n``) for a key has
reached 2**63-1 takes no more steps that way on that key - after 2**31 steps of the
largest size (2**32) on that key, or after a forged record of that node's *current*
slot.  Only the slot's owner knows what its slot reached, and a claim that it holds more
than it does is also what a node that lost commits to a lying disk is told (and must
adopt, or its next steps would be swallowed by the larger totals its peers hold): such
claims are adopted, counted (``own_slot_ahead``) and logged.  Forging them needs a peer's
standing; in ``curve`` mode that is a node's key (README, "Security").

This module works on plain mappings ``slot name -> (p, n, bp, bn)`` (:data:`State`): the
form on the wire, in sessions and in tests.  :mod:`zcounter.model.keyspace` stores the
same thing packed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from ..errors import ZCounterError

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


class Overflow(ZCounterError, ValueError):
    """A step or a merge would take a total past ``MAX_TOTAL``; nothing was changed."""


def make_slot(node_id: int, incarnation: str) -> str:
    """The slot name of ``node_id`` in ``incarnation``."""
    return f"{node_id}.{incarnation}"


def slot_node(slot: str) -> int | None:
    """The node id a slot name names, or None when the name is malformed."""
    match = _SLOT_RE.fullmatch(slot)
    return int(match.group(1)) if match else None


def saturate(count: int) -> int:
    """``count`` within ``-MAX_TOTAL..MAX_TOTAL``: what a read answers (see Bounds)."""
    return MAX_TOTAL if count > MAX_TOTAL else -MAX_TOTAL if count < -MAX_TOTAL else count


def value(state: State) -> int:
    """The count a read answers: the exact value, saturated (:func:`saturate`)."""
    return saturate(sum(p - bp - n + bn for p, n, bp, bn in state.values()))


def totals(state: State) -> tuple[int, int]:
    """``(sum of p, sum of n)``: everything ever added and subtracted."""
    return sum(r[P] for r in state.values()), sum(r[N] for r in state.values())


def live_totals(state: State) -> tuple[int, int]:
    """``(sum of p - bp, sum of n - bn)``: what no reset has covered; the quantities a
    step is bounded by (see Bounds)."""
    return (sum(r[P] - r[BP] for r in state.values()),
            sum(r[N] - r[BN] for r in state.values()))


def is_live(state: State) -> bool:
    """True when some update is not covered by a reset (a never-written or fully reset
    counter is not live: it reads 0 and is not listed)."""
    return any(p > bp or n > bn for p, n, bp, bn in state.values())


def join_record(a: Record, b: Record) -> Record:
    return (max(a[0], b[0]), max(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def merge_into(target: dict[str, Record], state: State) -> None:
    """Join ``state`` into ``target`` in place (the by-name join the client's session,
    the simulator's history and its workload keep; the packed one is
    :func:`zcounter.model.records.join`)."""
    for slot, rec in state.items():
        mine = target.get(slot)
        target[slot] = rec if mine is None else join_record(mine, rec)


def merge(a: State, b: State) -> dict[str, Record]:
    """The join of two states (neither is changed)."""
    out = dict(a)
    merge_into(out, b)
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

    Raises :class:`Overflow` if the live total in the step's direction, or the slot's
    own total, would pass ``MAX_TOTAL``; ValueError for 0.
    """
    if amount == 0:
        raise ValueError("a step must not be zero")
    p_live, n_live = live_totals(state)
    p, n, bp, bn = state.get(slot, ZERO)
    if amount > 0 and (p_live + amount > MAX_TOTAL or p + amount > MAX_TOTAL):
        raise Overflow("the counter's total of increments would pass 2**63-1")
    if amount < 0 and (n_live - amount > MAX_TOTAL or n - amount > MAX_TOTAL):
        raise Overflow("the counter's total of decrements would pass 2**63-1")
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
