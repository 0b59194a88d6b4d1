"""The checks, as functions of explicit data (each can be tested on its own).

Each returns ``None`` when the property holds and a sentence saying what broke when it
does not; the driver turns that sentence into a :class:`SimFailure` with the time and
the node.  The final oracle (:func:`check_final`) raises directly.

Checked as the run goes (after every batch, on every reply):

* :func:`check_grows`: a stored state only grows, field by field (a commit never
  lowers anything; only a wipe or a power loss of that node takes data away);
* :func:`unknown_value`: every field a node holds is a value some application produced
  (an update's new total, or a base some reset wrote) - a merge that adds or invents
  shows up here at once;
* :func:`check_chain`: an update continues its slot's running total exactly;
* :func:`copies_holding`: a ``wait=k`` acknowledgement is backed by k fsynced copies of
  what it acknowledged;
* :func:`check_includes`: a session's reply holds what it sent as ``seen``; a read holds
  every write acknowledged before it began at a level that intersects its own
  (:func:`required_for`: nodes written + nodes read > N);
* :func:`check_counts`: the counts of a reply are the values of the states it carries.

After the heal (:func:`check_final`): every node holds the same states and hash-tree
roots; each field equals the join of every application's target (:func:`expected_states`)
unless a wipe or power loss removed its last copy; each key's value equals the sum of
the updates no surviving reset observed (:func:`value_of_updates`), computed from the
ledger alone; an acknowledged or indeterminate write is included unless its copies were
lost that way; a refused one was never applied; no request id was applied twice except
once more after the wipe of the node that applied it (its window was on that disk).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from ..model.pncounter import BN, BP, N, P, Record, value
from .codes import Outcome

if TYPE_CHECKING:
    from .history import App, FieldId, Op

State = Mapping[str, Record]
States = Mapping[str, State]
FIELDS = ("p", "n", "bp", "bn")
_ZERO: Record = (0, 0, 0, 0)


class SimFailure(AssertionError):
    """An invariant did not hold; the message says which and where."""


def short(key: str) -> str:
    """A key as messages show it (the run's keys go up to 256 bytes)."""
    return repr(key if len(key) <= 16 else f"{key[:12]}...({len(key.encode())}B)")


# --------------------------------------------------------------------------- as it runs


def check_grows(before: State, after: State) -> str | None:
    """``after`` holds every field of ``before`` at least as high."""
    for slot, rec in before.items():
        now = after.get(slot, _ZERO)
        for f in (P, N, BP, BN):
            if now[f] < rec[f]:
                return f"{slot}.{FIELDS[f]} went down from {rec[f]} to {now[f]}"
    return None


def unknown_value(key: str, state: State, known: Mapping[FieldId, set[int]]) -> str | None:
    """A field of ``state`` whose value no application produced, if any."""
    for slot, rec in state.items():
        for f in (P, N, BP, BN):
            v = rec[f]
            if v and v not in known.get((key, slot, f), ()):
                return (f"{short(key)} {slot}.{FIELDS[f]} = {v} is not the result of any "
                        f"{'update' if f in (P, N) else 'reset'}")
    return None


def check_chain(top: int, amount: int, boundary: int) -> str | None:
    """An update of ``amount`` that left its slot's total at ``boundary`` must start
    where the slot's previous update ended (``top``)."""
    if boundary - abs(amount) != top:
        return (f"an update of {amount:+d} left its slot's total at {boundary}, but the "
                f"previous update had left it at {top}")
    return None


def check_reset_observed(key: str, target: State, known: Mapping[FieldId, set[int]]
                         ) -> str | None:
    """A reset writes ``(p, n, p, n)`` from totals some update produced."""
    for slot, rec in target.items():
        if rec[BP] != rec[P] or rec[BN] != rec[N]:
            return f"reset of {short(key)} wrote {slot}={rec}: bases are not its totals"
        for f in (P, N):
            if rec[f] and rec[f] not in known.get((key, slot, f), ()):
                return (f"reset of {short(key)} observed {slot}.{FIELDS[f]} = {rec[f]}, which "
                        "no update produced")
    return None


def holds(state: State, target: State) -> bool:
    for slot, rec in target.items():
        mine = state.get(slot, _ZERO)
        if (mine[0] < rec[0] or mine[1] < rec[1] or mine[2] < rec[2]
                or mine[3] < rec[3]):
            return False
    return True


def copies_holding(key: str, target: State, stores: Iterable[States]) -> int:
    """How many stores hold ``target`` of ``key``."""
    return sum(1 for store in stores if holds(store.get(key, {}), target))


def check_includes(want: States, got: States, what: str) -> str | None:
    """``got`` holds every key's state in ``want``."""
    for key, state in want.items():
        mine = got.get(key)
        if mine is None:
            return f"{what}: the reply has no state of {short(key)}"
        for slot, rec in state.items():
            have = mine.get(slot, _ZERO)
            for f in (P, N, BP, BN):
                if have[f] < rec[f]:
                    return (f"{what}: {short(key)} {slot}.{FIELDS[f]} = {have[f]} in the reply, "
                            f"below {rec[f]}")
    return None


def required_for(read_needed: int, cluster_size: int, required: Mapping[int, States],
                 keys: Sequence[str]) -> dict[str, dict[str, Record]]:
    """What a read of ``keys`` asking ``read_needed`` nodes must include: every write
    acknowledged at a level ``w`` with ``w + read_needed > cluster_size``."""
    out: dict[str, dict[str, Record]] = {}
    for written, per_key in required.items():
        if written + read_needed <= cluster_size:
            continue
        for key in keys:
            state = per_key.get(key)
            if state:
                mine = out.setdefault(key, {})
                for slot, rec in state.items():
                    old = mine.get(slot, _ZERO)
                    mine[slot] = (max(old[0], rec[0]), max(old[1], rec[1]),
                                  max(old[2], rec[2]), max(old[3], rec[3]))
    return out


#: The wall time the oracle reads states at: the simulator's workload sets no expiry, so
#: every wall time reads the same (the floor alone; issue 21's simulator part passes each
#: read's own).
READ_AT_MS = 0


def check_counts(keys: Sequence[str], counts: Sequence[int], states: States) -> str | None:
    if len(counts) != len(keys):
        return f"{len(counts)} counts for {len(keys)} keys"
    for key, count in zip(keys, counts, strict=True):
        if key in states and value(states[key], READ_AT_MS) != count:
            return f"count {count} of {short(key)} is not the value of its state {states[key]}"
    return None


# --------------------------------------------------------------------------- final


def expected_states(apps: Iterable[App]) -> dict[str, dict[str, Record]]:
    """The join of every application's target: what the nodes hold if nothing was lost."""
    out: dict[str, dict[str, Record]] = {}
    for app in apps:
        mine = out.setdefault(app.key, {})
        for slot, rec in app.target.items():
            old = mine.get(slot, _ZERO)
            mine[slot] = (max(old[0], rec[0]), max(old[1], rec[1]),
                          max(old[2], rec[2]), max(old[3], rec[3]))
    return out


def value_of_updates(key: str, apps: Iterable[App], final: State) -> int:
    """``key``'s value from the ledger alone: the sum of the updates that survive in
    ``final`` and that no surviving reset observed.

    A reset observed an update iff it wrote a base at or above the update's boundary.
    Bases are totals some reset saw, so a base never falls inside an update (checked).
    """
    adds: list[App] = []
    bases: dict[tuple[str, int], int] = {}
    for app in apps:
        if app.key != key:
            continue
        if app.is_reset:
            for slot, rec in app.target.items():
                for f in (BP, BN):
                    if rec[f] <= final.get(slot, _ZERO)[f]:
                        bases[(slot, f)] = max(bases.get((slot, f), 0), rec[f])
        elif app.boundary <= final.get(app.slot, _ZERO)[app.field]:
            adds.append(app)
    total = 0
    for app in adds:
        base = bases.get((app.slot, BP if app.amount > 0 else BN), 0)
        if base >= app.boundary:
            continue  # observed by a reset
        if base > app.boundary - abs(app.amount):
            raise SimFailure(f"a reset of {short(key)} observed part of an update of "
                             f"{app.amount:+d} ({app.slot} base {base}, update "
                             f"{app.boundary - abs(app.amount)}..{app.boundary})")
        total += app.amount
    return total


def _excused(fid: FieldId, have: int, floors: Mapping[FieldId, int],
             known: Mapping[FieldId, set[int]]) -> bool:
    floor = floors.get(fid)
    return floor is not None and have >= floor and (have == 0 or have in known.get(fid, ()))


def check_final(states: Mapping[int, States], roots: Mapping[int, int],
                values: Mapping[int, Mapping[str, int]], ops: Sequence[Op],
                apps: Sequence[App], floors: Mapping[FieldId, int],
                known: Mapping[FieldId, set[int]], stats: Counter[str]) -> None:
    """The oracle after the heal.  ``states``/``roots``/``values``: per node, its states
    by key, its hash-tree root, its value of each key.  Raises :class:`SimFailure`."""
    nodes = sorted(states)
    first = nodes[0]
    final = states[first]
    for node in nodes[1:]:
        if states[node] != final:
            differ = sorted(k for k in set(final) | set(states[node])
                            if final.get(k) != states[node].get(k))
            raise SimFailure(f"converged, yet nodes {first} and {node} hold different "
                             f"states of {differ[:3]}")
        if roots[node] != roots[first]:
            raise SimFailure(f"nodes {first} and {node} hold identical states but "
                             f"different hash-tree roots")
    expected = expected_states(apps)
    for key in sorted(set(expected) | set(final)):
        exp, fin = expected.get(key, {}), final.get(key, {})
        for slot in sorted(set(exp) | set(fin)):
            e, f_ = exp.get(slot, _ZERO), fin.get(slot, _ZERO)
            for f in (P, N, BP, BN):
                if f_[f] > e[f]:
                    raise SimFailure(f"final {short(key)} {slot}.{FIELDS[f]} = {f_[f]}: more than "
                                     f"every application together ({e[f]})")
                if f_[f] < e[f] and not _excused((key, slot, f), f_[f], floors, known):
                    raise SimFailure(
                        f"final {short(key)} {slot}.{FIELDS[f]} = {f_[f]}, but applications "
                        f"reached {e[f]} and no wipe or power loss removed every copy")
        expected_value = value_of_updates(key, apps, fin)
        if value(fin, READ_AT_MS) != expected_value:
            raise SimFailure(f"final {short(key)}: the state's value is "
                             f"{value(fin, READ_AT_MS)}, but the "
                             f"updates no reset observed sum to {expected_value}")
        for node in nodes:
            got = values[node].get(key, 0)
            if got != expected_value:
                raise SimFailure(f"node {node} counts {short(key)} as {got}, the ledger says "
                                 f"{expected_value}")
    for op in ops:
        _check_op(op, final, floors, known, stats)


def _check_op(op: Op, final: States, floors: Mapping[FieldId, int],
              known: Mapping[FieldId, set[int]], stats: Counter[str]) -> None:
    if not op.is_write:
        return
    apps = op.apps
    what = f"op {op.index} ({op.kind} {op.amount:+d} of {short(op.key)}, rid {op.rid})"
    if op.outcome == Outcome.FAIL and apps:  # == : scripted tests set plain strings
        raise SimFailure(f"{what} was refused, yet applied: {apps}")
    if len({a.slot for a in apps}) != len(apps) or len({a.node for a in apps}) > 1:
        raise SimFailure(f"{what} applied {len(apps)} times: {apps}")
    if len(apps) > 1:
        stats["reapplied_after_wipe"] += len(apps) - 1
    if op.outcome not in (Outcome.OK, Outcome.INDETERMINATE):
        return
    if not apps:
        raise SimFailure(f"{what} answered {op.outcome} but never applied")
    state = final.get(op.key, {})
    for app in apps:
        if holds(state, app.target):
            return
    lost = [(slot, f) for app in apps for slot, rec in app.target.items()
            for f in (P, N, BP, BN) if state.get(slot, _ZERO)[f] < rec[f]]
    if all(_excused((op.key, slot, f), state.get(slot, _ZERO)[f], floors, known)
           for slot, f in lost):
        stats["excused_by_wipe"] += 1
        return
    raise SimFailure(f"{what} answered {op.outcome} but is missing from the final state "
                     f"{dict(state)}; applied as {apps}")
