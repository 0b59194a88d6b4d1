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

from ..model.pncounter import BN, BP, N, P, Record
from . import lives
from .codes import OpKind, Outcome
from .lives import META

if TYPE_CHECKING:
    from .history import App, FieldId, Op

State = Mapping[str, Record]
States = Mapping[str, State]
FIELDS = ("p", "n", "bp", "bn", "b")
META_FIELDS = ("F", "S", "D")
#: A record's birth (the fifth field; absent = 0).
B = 4
_ZERO: Record = (0, 0, 0, 0)


def _field(rec: Record, f: int) -> int:
    return rec[f] if f < len(rec) else 0


class SimFailure(AssertionError):
    """An invariant did not hold; the message says which and where."""


def short(key: str) -> str:
    """A key as messages show it (the run's keys go up to 256 bytes)."""
    return repr(key if len(key) <= 16 else f"{key[:12]}...({len(key.encode())}B)")


# --------------------------------------------------------------------------- as it runs


def check_grows(before: State, after: State) -> str | None:
    """``after`` holds every field of ``before`` at least as high (births included), and
    the meta did not go back: the floor never falls, the register only moves forward."""
    for slot, rec in before.items():
        if slot == META:
            old, new = lives.split({META: rec})[1], lives.split(after)[1]
            if new[0] < old[0] or lives.register_order(new) < lives.register_order(old):
                return f"the meta went back from {old} to {new}"
            continue
        now = after.get(slot, _ZERO)
        for f in (P, N, BP, BN, B):
            if _field(now, f) < _field(rec, f):
                return f"{slot}.{FIELDS[f]} went down from {_field(rec, f)} to {_field(now, f)}"
    return None


def unknown_value(key: str, state: State, known: Mapping[FieldId, set[int]]) -> str | None:
    """A field of ``state`` whose value no application produced, if any: totals are
    update results or high-water starts, bases reset results or rebases, births the
    steps' own, ``S`` and ``D`` some register write's, ``F`` some deadline (rule R)."""
    for slot, rec in state.items():
        if slot == META:
            f_, s_, d_ = rec[0], rec[1], rec[2]
            deadlines = known.get((key, META, 2), set())
            if f_ and f_ not in deadlines:
                return f"{short(key)} floor F = {f_} is no deadline any change wrote"
            for f, v in ((1, s_), (2, d_)):
                if v and v not in known.get((key, META, f), ()):
                    return (f"{short(key)} {META_FIELDS[f]} = {v} is not what any expiry "
                            "change wrote")
            continue
        for f in range(len(rec)):
            v = rec[f]
            if v and v not in known.get((key, slot, f), ()):
                return (f"{short(key)} {slot}.{FIELDS[f]} = {v} is not the result of any "
                        f"{'update' if f in (P, N, B) else 'reset or step'}")
    return None


def check_chain(top: int, amount: int, boundary: int, base: int | None = None
                ) -> str | None:
    """An update of ``amount`` that left its slot's total at ``boundary`` must start
    where the slot's previous update ended (``top``), or - the first step after the
    node collected the key - at the record's new base (its high-water), never below."""
    start = boundary - abs(amount)
    if start != top and not (base is not None and start == base and base >= top):
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
        if slot == META:
            continue
        mine = state.get(slot, _ZERO)
        if (mine[0] < rec[0] or mine[1] < rec[1] or mine[2] < rec[2]
                or mine[3] < rec[3]):
            return False
    return True


def copies_holding(key: str, target: State, stores: Iterable[States]) -> int:
    """How many stores hold ``target`` of ``key``."""
    return sum(1 for store in stores if holds(store.get(key, {}), target))


def check_includes(want: States, got: States, what: str, now: int,
                   folds: Mapping[str, int] | None = None,
                   graves: Mapping[str, State] | None = None) -> str | None:
    """``got`` holds every key's state in ``want``, or reads at ``now`` exactly as if it
    did (a collected key's dead records are gone from every node for good).  ``folds``:
    per key, the ledger's floor (:meth:`.History.ledger_floor`: the highest deadline a
    holder folded, or that had passed when the next register was written - a node that
    overwrote a register it never held answers without that life, bin/sim --seed 57):
    a fold is a meta change of the ledger, so both sides are read with it (an extension
    that had not reached the folder lost: its life ended, and a node may have collected
    it).  ``graves``: what the answering node collected, by key: it holds a write it
    collected in a death that covers it (the no-resurrection check
    makes its state read as it does with the grave joined: a key reset, dead and
    collected everywhere has no state to show, bin/sim --seed 2)."""
    for key, state in want.items():
        mine = got.get(key, {})
        grave = (graves or {}).get(key)
        if grave:
            mine = lives.join(grave, mine)  # type: ignore[assignment]
        problem = _missing(key, state, mine)
        if problem is None:
            continue
        fold = (folds or {}).get(key, 0)
        if fold:
            # Both sides under the fold: the reply may not have it yet, and once it
            # does, what either showed of the life it ended stops counting (seed 32).
            mine = lives.join(mine, {META: (fold, 0, 0)})  # type: ignore[assignment]
        joined = lives.join(state, mine)
        if (lives.value(joined, now) != lives.value(mine, now)
                or lives.exists(joined, now) != lives.exists(mine, now)):
            return f"{what}: {problem}"
    return None


def _missing(key: str, want: State, have: State) -> str | None:
    if not have:
        return f"the reply has no state of {short(key)}"
    for slot, rec in want.items():
        if slot == META:
            if lives.join(have, {META: rec}).get(META) != lives.join(have, {}).get(META):
                return f"{short(key)}: the reply's meta {have.get(META)} is older than {rec}"
            continue
        mine = have.get(slot, _ZERO)
        for f in (P, N, BP, BN, B):
            if _field(mine, f) < _field(rec, f):
                return (f"{short(key)} {slot}.{FIELDS[f]} = {_field(mine, f)} in the reply, "
                        f"below {_field(rec, f)}")
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
                out[key] = dict(lives.join(out.get(key, {}), state))  # type: ignore[arg-type]
    return out


def check_counts(keys: Sequence[str], counts: Sequence[int], states: States, now: int
                 ) -> str | None:
    """The counts of a reply are its states' values at the node's ``now``."""
    if len(counts) != len(keys):
        return f"{len(counts)} counts for {len(keys)} keys"
    for key, count in zip(keys, counts, strict=True):
        if key in states and lives.value(states[key], now) != count:
            return (f"count {count} of {short(key)} is not the value of its state "
                    f"{states[key]} at {now}")
    return None


def check_ttl(key: str, counts: Sequence[int], state: State | None, now: int) -> str | None:
    """A Ttl reply ``(pttl, deadline)`` against the state it carries, at ``now``."""
    if len(counts) != 2:
        return f"a Ttl reply of {len(counts)} counts"
    pttl, at = counts
    if pttl != (at - now if at >= 0 else at):
        return f"Ttl of {short(key)}: pttl {pttl} and deadline {at} disagree at {now}"
    if state is not None and lives.deadline(state, now) != at:
        return (f"Ttl of {short(key)} answered {at}, its state {dict(state)} says "
                f"{lives.deadline(state, now)} at {now}")
    return None


# --------------------------------------------------------------------------- final


def expected_states(apps: Iterable[App]) -> dict[str, dict[str, Record]]:
    """The join of every application's target, an update's whole record and every
    meta it wrote: what the nodes hold if nothing was lost or collected."""
    out: dict[str, dict[str, Record]] = {}
    for app in apps:
        mine = out.setdefault(app.key, {})
        parts: list[Mapping[str, Record]] = [app.target]
        if app.record:
            parts.append({app.slot: app.record})
        if app.meta is not None:
            parts.append({META: app.meta})
        for part in parts:
            mine.update(lives.join(mine, part))  # type: ignore[arg-type]
    return out


def ledger_meta(key: str, apps: Iterable[App]) -> lives.Meta:
    """The meta every node converges to, from the ledger: the last writer's register,
    the highest floor any change folded (:func:`.lives.expected_meta`)."""
    return lives.expected_meta(lives.split({META: a.meta})[1] for a in apps
                               if a.key == key and a.meta is not None)


def live_updates(key: str, apps: Iterable[App], final: State, floor: int) -> list[App]:
    """``key``'s updates that count, from the ledger alone: those of the life current
    at ``floor`` (born at or after it), that survive in ``final`` and that no surviving
    reset observed.

    A reset observed an update iff it wrote a base at or above the update's boundary.
    Bases are totals some reset saw, so a base never falls inside an update (checked).
    """
    adds: list[App] = []
    bases: dict[tuple[str, int], int] = {}
    for app in apps:
        if app.key != key:
            continue
        if app.amount == 0:  # a reset, or an Expire that reset (a past time) or not ({})
            for slot, rec in app.target.items():
                for f in (BP, BN):
                    if rec[f] <= final.get(slot, _ZERO)[f]:
                        bases[(slot, f)] = max(bases.get((slot, f), 0), rec[f])
            continue
        # The bases an update's record carries: a reset's, or the owner's rebase into a
        # new life (a step after a deadline or floor it saw: ttl-spec 1 step 2), which
        # ends the record's old counts like a reset of that slot would.
        for f in (BP, BN) if len(app.record) > BN else ():
            if app.record[f] <= final.get(app.slot, _ZERO)[f]:
                key_f = (app.slot, f)
                bases[key_f] = max(bases.get(key_f, 0), app.record[f])
        if app.boundary <= final.get(app.slot, _ZERO)[app.field] and app.birth >= floor:
            adds.append(app)
    out = []
    for app in adds:
        base = bases.get((app.slot, BP if app.amount > 0 else BN), 0)
        if base >= app.boundary:
            continue  # observed by a reset
        if base > app.boundary - abs(app.amount):
            raise SimFailure(f"a reset of {short(key)} observed part of an update of "
                             f"{app.amount:+d} ({app.slot} base {base}, update "
                             f"{app.boundary - abs(app.amount)}..{app.boundary})")
        out.append(app)
    return out


def value_of_updates(key: str, apps: Iterable[App], final: State, floor: int = 0) -> int:
    """``key``'s value from the ledger alone (:func:`live_updates`)."""
    return sum(app.amount for app in live_updates(key, apps, final, floor))


def _excused(fid: FieldId, have: int, floors: Mapping[FieldId, int],
             known: Mapping[FieldId, set[int]]) -> bool:
    floor = floors.get(fid)
    return floor is not None and have >= floor and (have == 0 or have in known.get(fid, ()))


def check_final(states: Mapping[int, States], roots: Mapping[int, int],
                values: Mapping[int, Mapping[str, int]], ops: Sequence[Op],
                apps: Sequence[App], floors: Mapping[FieldId, int],
                known: Mapping[FieldId, set[int]], stats: Counter[str],
                nows: Mapping[int, int] | None = None,
                collected: Iterable[str] = (),
                folds: Mapping[str, int] | None = None) -> None:
    """The oracle after the heal.  ``states``/``roots``/``values``: per node, its states
    by key, its hash-tree root, its value of each key; ``nows``: each node's wall clock
    (ms); ``collected``: keys some node collected during the run (their old lives'
    records are gone for good); ``folds``: per key, the highest fold any node applied,
    committed or not (:attr:`.History.folds_seen`).  Raises :class:`SimFailure`."""
    nodes = sorted(states)
    first = nodes[0]
    final = states[first]
    nows = nows or dict.fromkeys(nodes, 0)
    for node in nodes[1:]:
        if states[node] != final:
            differ = sorted(k for k in set(final) | set(states[node])
                            if final.get(k) != states[node].get(k))
            raise SimFailure(f"converged, yet nodes {first} and {node} hold different "
                             f"states of {differ[:3]}")
        if roots[node] != roots[first]:
            raise SimFailure(f"nodes {first} and {node} hold identical states but "
                             f"different hash-tree roots")
    for node in nodes:
        dead = [k for k in final if not lives.exists(final[k], nows[node])]
        if dead:
            raise SimFailure(f"node {node} still holds dead keys after the heal: "
                             f"{[short(k) for k in dead[:3]]} (never collected)")
    gone = set(collected)
    expected = expected_states(apps)
    by_key: dict[str, list[App]] = {}
    for app in apps:
        by_key.setdefault(app.key, []).append(app)
    for key in sorted(set(expected) | set(final)):
        _check_key(key, expected.get(key, {}), final.get(key), by_key.get(key, []), nodes,
                   values, nows, floors, known, key in gone, (folds or {}).get(key, 0))
    for op in ops:
        _check_op(op, final, floors, known, stats, gone)


#: Wall clocks differ by up to ``max_clock_skew_s`` (at most 1 s in the swarm): an update
#: applied less than this before a deadline set by another node's clock may belong to
#: either life.
SKEW_TOLERANCE_MS = 1000


def _check_key(key: str, exp: State, fin: State | None, apps: list[App], nodes: list[int],
               values: Mapping[int, Mapping[str, int]], nows: Mapping[int, int],
               floors: Mapping[FieldId, int], known: Mapping[FieldId, set[int]],
               was_collected: bool, fold_seen: int = 0) -> None:
    meta = ledger_meta(key, apps)
    if fin is not None and meta[0] < lives.split(fin)[1][0] <= fold_seen:
        # A fold its node never committed (a crash lost its deferred write) that a
        # repair page had carried on first: the ledger's floor is the one that escaped.
        meta = (lives.split(fin)[1][0], meta[1], meta[2])
    lost = any(fid[0] == key for fid in floors)
    # Lives that ended by a deadline no later register's writer folded (it never saw it).
    ended = 0 if lost else lives.ended_lives(
        (lives.split({META: a.meta})[1], a.wall_ms) for a in apps if a.meta is not None)
    if fin is None:
        # Collected everywhere: the ledger must agree that nothing of it counts.
        for node in nodes:
            floor = lives.effective_floor(meta, nows[node])
            live = live_updates(key, apps, exp, floor)
            if live and not lost:
                raise SimFailure(f"{short(key)} was collected, but the ledger says updates "
                                 f"of its current life count at node {node}: "
                                 f"{[(a.op, a.amount) for a in live[:3]]}")
        return
    for slot in sorted(set(exp) | set(fin)):
        if slot == META:
            continue
        e, f_ = exp.get(slot, _ZERO), fin.get(slot, _ZERO)
        for f in (P, N, BP, BN, B):
            if _field(f_, f) > _field(e, f):
                raise SimFailure(f"final {short(key)} {slot}.{FIELDS[f]} = {_field(f_, f)}: "
                                 f"more than every application together ({_field(e, f)})")
            if (_field(f_, f) < _field(e, f) and not was_collected and f != B
                    and not _excused((key, slot, f), f_[f], floors, known)):
                raise SimFailure(
                    f"final {short(key)} {slot}.{FIELDS[f]} = {f_[f]}, but applications "
                    f"reached {_field(e, f)} and no wipe or power loss removed every copy")
    fin_meta = lives.split(fin)[1]
    if not was_collected and fin_meta != meta and not any(fid[0] == key for fid in floors):
        raise SimFailure(f"final {short(key)} meta {fin_meta}, but the ledger's expiry "
                         f"changes converge to {meta} (last writer wins)")
    for node in nodes:
        now = nows[node]
        live = live_updates(key, apps, fin, lives.effective_floor(meta, now))
        expected_value = sum(app.amount for app in live)
        # The ledger's own view of lives: an update applied (by its node's clock) well
        # before a deadline that took effect belongs to a life that ended, whatever the
        # registers the nodes kept say.  (By time of application, not birth: a node that
        # never learnt of that deadline gives its later steps the old birth.)
        old = [a for a in live if a.wall_ms < ended - SKEW_TOLERANCE_MS]
        if old:
            raise SimFailure(
                f"final {short(key)}: updates applied before the deadline {ended} that "
                f"ended their life count again "
                f"{[(a.op, a.amount, a.node, a.wall_ms) for a in old[:3]]}: a node "
                f"overwrote the expiry register after that deadline had passed without "
                f"folding it (rule R) - it never held it")
        if lives.value(fin, now) != expected_value:
            raise SimFailure(f"final {short(key)}: the state's value at node {node}'s now is "
                             f"{lives.value(fin, now)}, but the updates of its current life "
                             f"no reset observed sum to {expected_value}")
        got = values[node].get(key, 0)
        if got != expected_value:
            raise SimFailure(f"node {node} counts {short(key)} as {got}, the ledger says "
                             f"{expected_value}")


def _check_op(op: Op, final: States, floors: Mapping[FieldId, int],
              known: Mapping[FieldId, set[int]], stats: Counter[str],
              gone: set[str] | frozenset[str] = frozenset()) -> None:
    if not op.is_write:
        return
    if op.kind is OpKind.EXPIRE:
        _check_expire(op, final, floors, gone)
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
    if op.key in gone:
        return  # a collected life: no-resurrection and the final values judge it
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


def _check_expire(op: Op, final: States, floors: Mapping[FieldId, int],
                  gone: set[str] | frozenset[str]) -> None:
    what = f"op {op.index} (expire {op.at_ms} {op.mode} of {short(op.key)}, rid {op.rid})"
    if op.outcome == Outcome.FAIL and op.apps:
        raise SimFailure(f"{what} was refused, yet applied: {op.apps}")
    if len({a.node for a in op.apps}) > 1 or len({a.slot for a in op.apps}) != len(op.apps):
        raise SimFailure(f"{what} applied {len(op.apps)} times: {op.apps}")
    if (op.outcome not in (Outcome.OK, Outcome.INDETERMINATE) or not op.apps
            or op.key in gone or any(fid[0] == op.key for fid in floors)):
        return
    have = lives.split(final.get(op.key, {}))[1]
    want = lives.split({META: op.apps[-1].meta or (0, 0, 0)})[1]
    if lives.join_meta(have, want) != have:
        raise SimFailure(f"{what} answered {op.outcome}, but the final meta {have} does not "
                         f"include what it wrote ({want})")
