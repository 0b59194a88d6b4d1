"""The oracle's own reference for expiry, lives and collection (issue 21, ttl-spec 1).

Written from the spec, not imported from :mod:`zcounter.model`: the oracle must not
compute its expected values with the code it judges.  Everything here is a pure
function of explicit data (states by slot name, as ``Keyspace.state`` and the wire show
them: records of 4 or 5 ints, ``b`` = 0 when absent; the meta ``[F, S, D]`` under the
pseudo-slot ``"~"``, ``(0, 0, 0)`` when absent) and of a node's wall clock ``now`` (ms).

The checks that use it:

* :func:`check_no_resurrection` - after a node collected a key with dead state ``Z``,
  whatever it holds of the key later must read the same with or without ``Z`` joined
  in: a state that only brings back old counts changes the value (or the existence)
  once the death it ignores is joined back;
* :func:`check_collected_dead` - what a node collects is dead at its own now;
* :func:`expected_value` - a key's final value from the ledger alone: the updates born
  at or after the ledger's effective floor that no surviving reset observed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise

#: The meta's pseudo-slot (ttl-spec 2).
META = "~"
MAX_TOTAL = 2**63 - 1
#: "No expiry" in the register's order: beats every deadline at equal S (ttl-spec 1).
NO_DEADLINE = 2**63

Rec5 = tuple[int, int, int, int, int]
Meta = tuple[int, int, int]
#: slot name -> record (4 or 5 ints), plus ``"~"`` -> ``[F, S, D]``.
AnyState = Mapping[str, Sequence[int]]
ZERO_META: Meta = (0, 0, 0)


def split(state: AnyState) -> tuple[dict[str, Rec5], Meta]:
    """Records as 5-tuples (``b`` = 0 when absent) and the meta (zeros when absent)."""
    recs: dict[str, Rec5] = {}
    meta = ZERO_META
    for slot, rec in state.items():
        if slot == META:
            meta = (int(rec[0]), int(rec[1]), int(rec[2]))
        else:
            r = tuple(rec) + (0,) * (5 - len(rec))
            recs[slot] = (r[0], r[1], r[2], r[3], r[4])
    return recs, meta


def register_order(meta: Meta) -> tuple[int, int]:
    """The register's total order: later ``S`` wins; at equal ``S`` the longer deadline,
    and "no expiry" beats any deadline (PERSIST beats EXPIRE).  The register never set,
    ``(0, 0)``, is the bottom (else it would beat a deadline set at wall time 0)."""
    _, s, d = meta
    if not s and not d:
        return -1, 0
    return s, d if d else NO_DEADLINE


def join_meta(a: Meta, b: Meta) -> Meta:
    f = max(a[0], b[0])
    reg = a if register_order(a) >= register_order(b) else b
    return f, reg[1], reg[2]


def join(a: AnyState, b: AnyState) -> dict[str, Sequence[int]]:
    """The merge of two states: per field max (``b`` included), ``F`` max, the register
    last-writer-wins.  The meta is left out when it is all zeros."""
    ra, ma = split(a)
    rb, mb = split(b)
    out: dict[str, Sequence[int]] = dict(ra)
    for slot, rec in rb.items():
        mine = ra.get(slot)
        out[slot] = rec if mine is None else tuple(map(max, mine, rec))
    meta = join_meta(ma, mb)
    if meta != ZERO_META:
        out[META] = meta
    return out


def ended_lives(registers: Iterable[tuple[Meta, int]]) -> int:
    """The highest deadline that took effect, from every register ever written (each
    meta with the wall time, at its writer, of the first application that carried it):
    one that had passed when the next register (in the register order) was written.
    A node that overwrites a register it never saw cannot fold it (rule R needs the old
    ``D``); the life that deadline ended is over all the same (ttl-spec 1: "a passed
    deadline kills every record born before it, on every node, whatever the delivery
    order").  The writer's clock, not the next ``S``: a register's ``S`` can run ahead
    of its writer's clock (stamped after the one it overwrote, bin/sim --seed 54)."""
    written: dict[tuple[int, int], int] = {}
    for meta, wall in registers:
        if meta[1] or meta[2]:
            reg = (meta[1], meta[2])
            written[reg] = min(written.get(reg, wall), wall)
    regs = sorted(written, key=lambda r: register_order((0, r[0], r[1])))
    out = 0
    for (_, d), nxt in pairwise(regs):
        if d and d <= written[nxt]:
            out = max(out, d)
    return out


def effective_floor(meta: Meta, now: int) -> int:
    """``E(now)``: the floor, or the deadline once it has passed, whichever is higher."""
    f, _, d = meta
    return max(f, d) if d and now >= d else f


def _counting(state: AnyState, now: int) -> list[Rec5]:
    recs, meta = split(state)
    floor = effective_floor(meta, now)
    return [r for r in recs.values() if r[4] >= floor]


def value(state: AnyState, now: int) -> int:
    """What a read at ``now`` answers (saturated like the model's)."""
    v = sum(p - bp - n + bn for p, n, bp, bn, _ in _counting(state, now))
    return max(-MAX_TOTAL, min(MAX_TOTAL, v))


def exists(state: AnyState, now: int) -> bool:
    """Live at ``now``: some counting record holds an update no reset covered."""
    return any(p > bp or n > bn for p, n, bp, bn, _ in _counting(state, now))


def deadline(state: AnyState, now: int) -> int:
    """-2 (no such key), -1 (no expiry; a passed deadline only floors) or the deadline."""
    if not exists(state, now):
        return -2
    d = split(state)[1][2]
    return d if d and now < d else -1


def fold(meta: Meta, now: int) -> Meta:
    """Rule R: before the register is overwritten, a passed deadline becomes the floor."""
    f, s, d = meta
    return (max(f, d), s, d) if d and now >= d else meta


# --------------------------------------------------------------------------- checks


def check_no_resurrection(grave: AnyState, state: AnyState, now: int) -> str | None:
    """``state`` (what a node holds of a key it collected as ``grave``) must read at
    ``now`` as it would with the grave joined back in."""
    joined = join(grave, state)
    got, want = value(state, now), value(joined, now)
    if got != want or exists(state, now) != exists(joined, now):
        return (f"a collected key came back: it reads {got} "
                f"({'live' if exists(state, now) else 'dead'}), but {want} "
                f"({'live' if exists(joined, now) else 'dead'}) with the state it was "
                f"collected in joined back (state {dict(state)}, collected {dict(grave)})")
    return None


def check_collected_dead(state: AnyState, now: int) -> str | None:
    if exists(state, now):
        return f"collected while live at its now ({now}): {dict(state)}"
    return None


def expected_meta(metas: Iterable[Meta]) -> Meta:
    """The join of every meta the ledger saw applied: the register all nodes converge
    to is the last writer's (:func:`register_order`), the floor the highest fold."""
    out = ZERO_META
    for meta in metas:
        out = join_meta(out, meta)
    return out


def counts_at(birth: int, meta: Meta, now: int) -> bool:
    """An update whose record was born at ``birth`` belongs to the life current at
    ``now`` under ``meta``."""
    return birth >= effective_floor(meta, now)
