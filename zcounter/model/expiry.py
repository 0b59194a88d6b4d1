"""Expiry of a key, pure: the rules of issue 21's design (the spec's section 1).

A key's *meta* is ``(F, S, D)``, wall-clock unix milliseconds: ``F`` the *floor* (records
born before it belong to an earlier life of the key and never count), ``(S, D)`` the
*expiry register*: the deadline ``D`` (0: none) and when it was set, ``S``.  ``(0, 0, 0)``
is the meta of a key that never had an expiry; it is never stored nor sent.

The join of two metas is the per-field maximum of ``F`` and the last-writer-wins register:
the larger ``(S, D')`` where ``D' = D or 2**63`` (a later change wins; at the same ``S``
the later deadline, and "no expiry" beats any deadline: PERSIST beats EXPIRE, the rule of
Redis Active-Active).  A product of a max and a total order: a join-semilattice, so metas
merge in any order, any number of times.

Reads and steps take ``now``; a merge never does.  The floor in force at ``now`` is
:func:`effective_floor`: a passed deadline acts as a floor.  Rule R (:func:`set_register`):
whoever overwrites a register whose deadline has passed first raises ``F`` to it, so the
old life stays dead once the register no longer shows its deadline.
"""

from __future__ import annotations

from enum import Enum

#: The reserved pseudo-slot under which a by-name state carries its key's meta.
META = "~"
#: (F, S, D): floor, when the register was set, deadline (0: none).
Meta = tuple[int, int, int]
DEFAULT_META: Meta = (0, 0, 0)
#: The longest expiry a node accepts: 10 years of 365 days, in ms.  Bounded so that every
#: deadline stays far below 2**63-1 whatever the clock (issue 21: "at most 10 years").
MAX_TTL_MS = 10 * 365 * 24 * 3600 * 1000
#: Every field of a meta is at most this (pncounter.MAX_TOTAL; not imported: pncounter
#: imports this module).
_MAX_FIELD = 2**63 - 1
#: What "no expiry" weighs in the register's order: above any deadline (2**63-1 at most).
NO_EXPIRY = 2**63


class ExpireMode(str, Enum):
    """The conditions of Redis 7's EXPIRE family."""

    NX = "nx"  # only if the key has no (future) deadline
    XX = "xx"  # only if it has one
    GT = "gt"  # only if the new deadline is later (no deadline is infinite: never)
    LT = "lt"  # only if earlier (no deadline: always)


def effective_floor(meta: Meta, now: int) -> int:
    """The floor in force at ``now``: ``max(F, D)`` once the deadline has passed, else F.
    A record counts iff its birth is at least this (:func:`counts`)."""
    floor, _, deadline = meta
    if deadline and now >= deadline and deadline > floor:
        return deadline
    return floor


def counts(birth: int, floor: int) -> bool:
    """Whether a record born at ``birth`` counts under the effective floor ``floor``."""
    return birth >= floor


def register_order(set_ms: int, deadline: int) -> tuple[int, int]:
    """The register's position in its total order (the larger wins a merge).  The
    default register ``(0, 0)`` ("never set") is the bottom, below a deadline set at
    wall time 0 (a test's or the simulator's clock can read 0: without this, the
    default would win over it as "no expiry")."""
    if not set_ms and not deadline:
        return -1, 0
    return set_ms, deadline or NO_EXPIRY


def join_meta(a: Meta, b: Meta) -> Meta:
    """The join of two metas: ``F`` max, the register last-writer-wins."""
    floor = a[0] if a[0] >= b[0] else b[0]
    if register_order(a[1], a[2]) >= register_order(b[1], b[2]):
        return floor, a[1], a[2]
    return floor, b[1], b[2]


def meta_dominates(a: Meta, b: Meta) -> bool:
    """True when ``a`` holds everything ``b`` does (the join of both is ``a``)."""
    return a[0] >= b[0] and register_order(a[1], a[2]) >= register_order(b[1], b[2])


def future_deadline(meta: Meta, now: int) -> int:
    """The deadline if it is still ahead at ``now``, else 0 (a passed deadline only
    acts as a floor)."""
    deadline = meta[2]
    return deadline if deadline and now < deadline else 0


def set_register(meta: Meta, now: int, deadline: int) -> Meta:
    """The meta after this node writes the register ``(now, deadline)``, rule R first:
    a passed deadline becomes the floor, so the life it ended stays ended.

    The write is stamped after the register it overwrites (``S = max(now, S + 1)``), so
    that it wins the merge against what it replaced: two changes within the same
    millisecond (or behind a peer's faster clock) would otherwise be ordered by their
    deadlines, not by when they were made - ``EXPIRE k 40; PERSIST k; EXPIRE k 10 NX``
    in one millisecond came back as a 40 s expiry once a peer's copy of the first was
    merged in (found by tests/protocol/test_resp_golden.py, its wall clock fixed)."""
    floor, set_ms, old = meta
    if old and now >= old and old > floor:
        floor = old
    # Bounded as every field is (a peer's S of 2**63-1, accepted, leaves a tie).
    return floor, now if now > set_ms else min(set_ms + 1, _MAX_FIELD), deadline


def allowed(mode: ExpireMode | None, current: int, at_ms: int) -> bool:
    """Whether an EXPIRE to ``at_ms`` in ``mode`` applies to a key whose future deadline
    is ``current`` (0: none), Redis 7's rules."""
    if mode is None:
        return True
    if mode is ExpireMode.NX:
        return not current
    if mode is ExpireMode.XX:
        return bool(current)
    if mode is ExpireMode.GT:
        return bool(current) and at_ms > current
    return not current or at_ms < current  # LT


def is_valid_meta(meta: object, max_total: int) -> bool:
    """Three integers in ``0..max_total``."""
    if not isinstance(meta, (tuple, list)) or len(meta) != 3:
        return False
    return all(type(v) is int and 0 <= v <= max_total for v in meta)
