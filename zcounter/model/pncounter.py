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

Expiry and lives (issue 21; the rules in :mod:`.expiry`).  A record has a fifth field,
its *birth* ``b``: the wall-clock ms (of the slot's owner) at which it began counting in
the key's current *life*; 0, "since ever", for every record written before expiry existed.
A key has a *meta* ``(F, S, D)``: the *floor* ``F`` and the expiry register (deadline
``D``, set at ``S``).  At wall time ``now`` a record *counts* iff ``b >= E(now)``, the
effective floor (``max(F, D)`` once ``D`` has passed, else ``F``); value, existence and
the bounds of a step take only counting records.  A key that does not *exist* (no
counting record above its bases) reads as never written.  Merge stays a join: ``b`` is
one more per-field maximum, ``F`` another, the register is last-writer-wins; nothing in
a merge depends on ``now``.

A step by a slot's owner first puts its record in the current life: a record born
before ``E(now)`` is *rebased* (``bp, bn := p, n``, ``b := max(now, E)``), and a slot's
first record starts at the node's *high-water* ``(Gp, Gn, Gp, Gn, b)``: the largest own
totals of any key this node collected, so that a fresh record is not swallowed by the
dead state other nodes still hold (a merge takes the maximum).

Why births and a floor, not a counter of lives: two nodes that both see a key expired and
both increment it must land in the *same* new life - each one's increment counts - and a
node that already collected the key (holds nothing of it) must still produce a state that
beats the dead state other nodes hold.  With births, each owner decides for its own record
which life a step belongs to, exactly, since only it steps its slot; a passed deadline
kills every record born before it, on every node, whatever the delivery order.  A counter
of lives would need the nodes to agree on it: two nodes starting life 2 concurrently are
fine, but one that collected the key knows no number to start from.

This module works on plain mappings ``slot name -> (p, n, bp, bn[, b])`` (:data:`State`),
with the key's meta under the pseudo-slot ``"~"`` (:data:`.expiry.META`) when it is not
``(0, 0, 0)``: the form on the wire, in sessions and in tests.  Records are *normal*: a
record of birth 0 is the 4-tuple it always was, so a key without expiry reads, hashes and
travels exactly as before.  :mod:`zcounter.model.keyspace` stores the same thing packed,
and is tested against this module (the reference).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from ..errors import ZCounterError
from .expiry import (
    DEFAULT_META,
    META,
    ExpireMode,
    Meta,
    allowed,
    effective_floor,
    future_deadline,
    join_meta,
    meta_dominates,
    set_register,
)

MAX_TOTAL = 2**63 - 1
#: Largest step of one increment or decrement request.
MAX_STEP = 2**32

#: ``(p, n, bp, bn)`` or ``(p, n, bp, bn, b)`` (birth 0 is written as the 4-tuple); in a
#: :data:`State` the ``"~"`` entry is the key's meta ``(F, S, D)`` instead.
Record = tuple[int, ...]
#: slot name -> record, and ``"~"`` -> meta when it is not (0, 0, 0)
State = Mapping[str, Record]

P, N, BP, BN, B = range(5)
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


def birth(rec: Record) -> int:
    """A record's birth (0 when it has four fields)."""
    return rec[4] if len(rec) > 4 else 0


def normal(p: int, n: int, bp: int, bn: int, b: int) -> Record:
    """A record in its normal form: four fields when born at 0."""
    return (p, n, bp, bn, b) if b else (p, n, bp, bn)


def meta_of(state: State) -> Meta:
    """The key's meta ((0, 0, 0) when the state carries none)."""
    meta = state.get(META)
    return DEFAULT_META if meta is None else (meta[0], meta[1], meta[2])


def records_of(state: State) -> list[tuple[str, Record]]:
    """The state's records by slot name (the meta left out)."""
    return [(slot, rec) for slot, rec in state.items() if slot != META]


def counting(state: State, now: int) -> list[Record]:
    """The records that count at wall time ``now`` (born at or after the floor)."""
    floor = effective_floor(meta_of(state), now)
    return [rec for slot, rec in state.items() if slot != META and birth(rec) >= floor]


def value(state: State, now: int) -> int:
    """The count a read at ``now`` answers: the exact value of the counting records,
    saturated (:func:`saturate`)."""
    return saturate(sum(r[P] - r[BP] - r[N] + r[BN] for r in counting(state, now)))


def totals(state: State) -> tuple[int, int]:
    """``(sum of p, sum of n)``: everything ever added and subtracted."""
    recs = [rec for _, rec in records_of(state)]
    return sum(r[P] for r in recs), sum(r[N] for r in recs)


def live_totals(state: State, now: int) -> tuple[int, int]:
    """``(sum of p - bp, sum of n - bn)`` over the records counting at ``now``: what no
    reset nor expiry has covered; the quantities a step is bounded by (see Bounds)."""
    recs = counting(state, now)
    return sum(r[P] - r[BP] for r in recs), sum(r[N] - r[BN] for r in recs)


def exists(state: State, now: int) -> bool:
    """True when, at ``now``, some counting record holds an update no reset covered (a
    key that does not exist reads as never written: 0, not listed)."""
    return any(r[P] > r[BP] or r[N] > r[BN] for r in counting(state, now))


def deadline(state: State, now: int) -> int:
    """``-2`` if the key does not exist at ``now``, ``-1`` if it has no future deadline,
    else the deadline (unix ms)."""
    if not exists(state, now):
        return -2
    d = meta_of(state)[2]
    return d if d and now < d else -1


def join_record(a: Record, b: Record) -> Record:
    """The per-field maximum, birth included, in normal form."""
    return normal(max(a[0], b[0]), max(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]),
                  max(birth(a), birth(b)))


def merge_into(target: dict[str, Record], state: State) -> None:
    """Join ``state`` into ``target`` in place (the by-name join the client's session,
    the simulator's history and its workload keep; the packed one is
    :func:`zcounter.model.records.join`)."""
    for slot, rec in state.items():
        mine = target.get(slot)
        if slot == META:
            meta = join_meta(meta_of(target), meta_of(state))
            if meta != DEFAULT_META:
                target[META] = meta
        else:
            target[slot] = join_record(ZERO if mine is None else mine, rec)


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
    """True when ``a`` holds everything ``b`` does (per slot, per field, and the meta)."""
    for slot, rec in b.items():
        if slot == META:
            if not meta_dominates(meta_of(a), meta_of(b)):
                return False
            continue
        mine = a.get(slot, ZERO)
        if (mine[0] < rec[0] or mine[1] < rec[1] or mine[2] < rec[2]
                or mine[3] < rec[3] or birth(mine) < birth(rec)):
            return False
    return True


def add(state: State, slot: str, amount: int, now: int, ttl_ms: int = 0,
        high_water: tuple[int, int] = (0, 0)) -> dict[str, Record]:
    """``state`` after ``slot``'s owner adds ``amount`` (negative: a decrement) at wall
    time ``now``; with ``ttl_ms``, the key expires ``ttl_ms`` after ``now`` unless it
    already has a future deadline (INCR + EXPIRE NX).  ``high_water``: where the slot's
    first record starts (the node's high-water, see above).

    Raises :class:`Overflow` if the live total in the step's direction, or the slot's
    own total, would pass ``MAX_TOTAL``; ValueError for 0.
    """
    if amount == 0:
        raise ValueError("a step must not be zero")
    meta = meta_of(state)
    floor = effective_floor(meta, now)
    born = now if now > floor else floor
    rec = state.get(slot)
    if rec is None:
        p, n, bp, bn, b = high_water[0], high_water[1], high_water[0], high_water[1], born
    else:
        p, n, bp, bn, b = *rec[:4], birth(rec)
        if b < floor:  # a record of an earlier life: rebase it into this one
            bp, bn, b = p, n, born
    out = dict(state)
    out[slot] = normal(p, n, bp, bn, b)
    p_live, n_live = live_totals(out, now)
    if amount > 0 and (p_live + amount > MAX_TOTAL or p + amount > MAX_TOTAL):
        raise Overflow("the counter's total of increments would pass 2**63-1")
    if amount < 0 and (n_live - amount > MAX_TOTAL or n - amount > MAX_TOTAL):
        raise Overflow("the counter's total of decrements would pass 2**63-1")
    out[slot] = normal(p + amount, n, bp, bn, b) if amount > 0 else normal(
        p, n - amount, bp, bn, b)
    if ttl_ms and not (meta[2] and now < meta[2]):
        out[META] = set_register(meta, now, now + ttl_ms)
    return out


def reset(state: State, now: int) -> dict[str, Record]:
    """``state`` after an observed reset at ``now``: every base raised to its total, and
    no expiry any more (a DEL'd key incremented again has none, as in Redis).  A key that
    does not exist at ``now`` is left as it is (nothing to observe)."""
    if not exists(state, now):
        return dict(state)
    out: dict[str, Record] = {slot: normal(rec[0], rec[1], rec[0], rec[1], birth(rec))
                              for slot, rec in records_of(state)}
    meta = meta_of(state)
    if meta[2]:
        meta = set_register(meta, now, 0)
    if meta != DEFAULT_META:
        out[META] = meta
    return out


def is_valid_record(rec: object) -> bool:
    """Four or five integers in 0..MAX_TOTAL with ``bp <= p`` and ``bn <= n``."""
    if not isinstance(rec, (tuple, list)) or not 4 <= len(rec) <= 5:
        return False
    for v in rec:
        if type(v) is not int or not 0 <= v <= MAX_TOTAL:
            return False
    return bool(rec[2] <= rec[0] and rec[3] <= rec[1])


def expire(state: State, at_ms: int | None, mode: ExpireMode | None, now: int
           ) -> tuple[dict[str, Record], bool]:
    """``state`` after EXPIRE/PERSIST at ``now``, and whether it changed anything.

    ``at_ms`` None is PERSIST: a future deadline is dropped (register ``(now, 0)``).  Else,
    if ``mode`` allows it (:func:`.expiry.allowed`), the register becomes ``(now, at_ms)``
    (rule R first).  A deadline not after ``now`` removes the key at once, as Redis does
    (its EXPIRE with a past time deletes the key): an observed :func:`reset`.  Only a
    reset does that exactly: a passed deadline kills the records born before it, and a
    record born between it and ``now`` (an increment at 1,000 ms, then PEXPIREAT 500 at
    2,000 ms) would keep counting.  A key that does not exist: nothing, False."""
    if not exists(state, now):
        return dict(state), False
    meta = meta_of(state)
    current = future_deadline(meta, now)
    out = dict(state)
    if at_ms is None:
        if not current:
            return out, False
        out[META] = set_register(meta, now, 0)
        return out, True
    if not allowed(mode, current, at_ms):
        return out, False
    if at_ms <= now:
        return reset(state, now), True
    out[META] = set_register(meta, now, at_ms)
    return out, True
