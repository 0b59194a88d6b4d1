"""Fault scenarios on :class:`~.netns.NetCluster` and the Jepsen-style oracle they share.

Every scenario follows one timeline, so the numbers are comparable:

1. *load*: one writer session per node (``wait`` alternating local / majority; each
   update picks one of ``KEYS`` at random, decrements with probability
   ``DECREMENT_RATIO``, ``by`` random in 1..5) and one reader per node reading the states
   of every key, for ``WARMUP_S``;
2. *fault*: the scenario's fault, for about ``FAULT_S``, the load still running;
3. the load is stopped (in-flight calls finish or time out), then *heal* (network
   restored, process restarted or resumed) at ``t_heal``; we poll every node until all
   hold the same state of every key: ``convergence_s`` = that moment - ``t_heal``;
4. *recovery*: a second, short load phase; every node must serve a successful update
   again (clients reconnect by themselves);
5. stop, converge again, check the oracle over both phases.

Oracle (:func:`check`), per key: every update ended ``ok`` / ``fail`` (refused: certainly
not applied) / ``unknown`` (no answer) / ``indet`` (Indeterminate: applied at the node,
wait level not confirmed).  No reset is issued, so a key's state says exactly which
updates were applied: the total of its increments is ``sum(p)`` over its slots and of its
decrements ``sum(n)``, each bounded on both sides - at least the ``ok`` and ``indet``
amounts, at most those plus the ``unknown`` ones (an ``indet`` update at a node whose
data directory is wiped later may vanish) - and so is the count.  All nodes end with the
same state of every key.  Reads are checked on states, not counts (a count may go down
with decrements): per node, a key's state never goes backwards (no field of any slot
shrinks) except across a restart of that node with a wiped data directory, and its
totals never exceed what had been attempted when the read was answered.
"""

from __future__ import annotations

import bisect
import signal
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .netns import NetCluster, States, value

WARMUP_S = 0.8
FAULT_S = 2.5
RECOVERY_S = 1.0
CONVERGE_TIMEOUT_S = 30.0
CLIENT_TIMEOUT_S = 1.0
#: The keys the writers pick from, and how often an update is a decrement.
KEYS = [f"key-{i:02d}" for i in range(50)]
DECREMENT_RATIO = 0.4

# Fields of an op record (see agent.Shared.ops).
NODE, KEY, AMOUNT, OUTCOME, T0, T1, WAIT, DETAIL = range(8)


@dataclass
class Result:
    name: str
    keys: list[str] = field(default_factory=lambda: list(KEYS))
    #: [node, key, amount (signed), outcome, t0, t1, wait, detail]
    ops: list[list[Any]] = field(default_factory=list)
    #: [node, t, states]: a reader's states of the keys that changed since its previous
    #: read of that node, or a convergence poll's states of every key.
    reads: list[list[Any]] = field(default_factory=list)
    read_errors: list[list[Any]] = field(default_factory=list)
    t_fault: float = 0.0
    t_heal: float = 0.0
    convergence_s: float = 0.0
    heal_s: float = 0.0
    #: Counts of every key when all nodes first agreed after the heal.
    converged: dict[str, int] = field(default_factory=dict)
    #: Every node's states of every key at the very end.
    final: dict[int, States | None] = field(default_factory=dict)
    #: node -> time it came back with an empty data directory
    wiped_at: dict[int, float] = field(default_factory=dict)
    #: writers' wait levels (the wipe scenario needs majority, see there)
    waits: tuple[str, ...] = ("local", "majority")
    recovery_ok: dict[int, int] = field(default_factory=dict)
    stuck_threads: int = 0

    @property
    def converged_value(self) -> int:
        """The sum of every key's count at convergence (one number for reports)."""
        return sum(self.converged.values())

    def totals(self) -> dict[str, int]:
        """Amounts (increments and decrements alike, by size) per outcome."""
        out: Counter[str] = Counter()
        for op in self.ops:
            out[op[OUTCOME]] += abs(op[AMOUNT])
        return dict(out)

    def outcomes(self, during_fault: bool | None = None) -> dict[int, Counter[str]]:
        """Per node: how many updates ended ok / fail / unknown / indet."""
        per: dict[int, Counter[str]] = {}
        for op in self.ops:
            if during_fault is not None and (
                    self.t_fault <= op[T0] < self.t_heal) != during_fault:
                continue
            per.setdefault(op[NODE], Counter())[op[OUTCOME]] += 1
        return per

    def summary(self) -> str:
        during = self.outcomes(during_fault=True)
        downs = sum(1 for op in self.ops if op[AMOUNT] < 0)
        parts = [f"{self.name}: {len(self.keys)} keys, sum of counts {self.converged_value}, "
                 f"convergence={self.convergence_s:.3f}s (heal action {self.heal_s:.3f}s)",
                 f"{len(self.ops)} updates ({downs} decrements), by-weight totals "
                 f"{self.totals()}"]
        for node in sorted(during):
            c = during[node]
            parts.append(f"  node {node} during fault: ok={c['ok']} fail={c['fail']} "
                         f"unknown={c['unknown']} indet={c['indet']}")
        return "\n".join(parts)


Fault = Callable[[NetCluster, Result], Callable[[], None]]
"""Injects the fault (load running) and returns the heal action (run with load stopped)."""


class Load:
    """One load phase through the client agent."""

    def __init__(self, cluster: NetCluster, waits: tuple[str, ...], seed: int,
                 max_s: float, keys: list[str], decrement_ratio: float = DECREMENT_RATIO,
                 **plan: Any) -> None:
        self.agent = cluster.client()
        options: dict[str, Any] = {
            "max_ops": 20_000, "timeout": CLIENT_TIMEOUT_S, "read_timeout": 0.5,
            "read_interval": 0.05, **plan}
        self.agent.call("start", writers=[{"node": n, "waits": list(waits), "by_max": 5}
                                          for n in cluster.ids],
                        readers=cluster.ids, max_s=max_s, keys=keys,
                        decrement_ratio=decrement_ratio, seed=seed, **options)

    def stop(self, result: Result) -> list[list[Any]]:
        history = self.agent.call("stop")
        result.ops += history["ops"]
        result.reads += history["reads"]
        result.read_errors += history["read_errors"]
        result.stuck_threads += history["stuck_threads"]
        ops: list[list[Any]] = history["ops"]
        return ops


def run(name: str, root: Path, fault: Fault, waits: tuple[str, ...] = ("local", "majority"),
        seed: int = 1, secure: bool = False) -> Result:
    """``secure``: the cluster runs in ``curve`` mode (issue 10)."""
    result = Result(name, waits=waits)
    keys = result.keys

    def record(states: dict[int, States | None]) -> None:
        # Convergence polls are reads too (right after a restart, the interesting ones).
        t = time.monotonic()
        result.reads += [[n, t, st] for n, st in states.items() if st is not None]

    with NetCluster(root, secure=secure) as cluster:
        cluster.start_all()
        load = Load(cluster, waits, seed, max_s=WARMUP_S + FAULT_S + 20, keys=keys)
        time.sleep(WARMUP_S)
        result.t_fault = time.monotonic()
        heal = fault(cluster, result)
        load.stop(result)
        # Convergence counts from the start of the heal action, so for the restart
        # scenarios it includes starting the process(es) (heal_s says how much).
        result.t_heal = time.monotonic()
        heal()
        result.heal_s = time.monotonic() - result.t_heal
        counts, when = cluster.wait_converged(keys, CONVERGE_TIMEOUT_S, on_poll=record)
        result.convergence_s = when - result.t_heal
        result.converged = counts

        load = Load(cluster, waits, seed + 100, max_s=RECOVERY_S + 20, keys=keys)
        time.sleep(RECOVERY_S)
        ops = load.stop(result)
        result.recovery_ok = dict(Counter(op[NODE] for op in ops if op[OUTCOME] == "ok"))
        cluster.wait_converged(keys, CONVERGE_TIMEOUT_S, on_poll=record)
        result.final = cluster.states(keys, timeout=1.0)
    return result


# --------------------------------------------------------------------------- oracle


def totals(state: dict[str, list[int]]) -> tuple[int, int]:
    """A key's total of increments and of decrements (no resets: all of each count)."""
    return sum(r[0] for r in state.values()), sum(r[1] for r in state.values())


class Attempted:
    """How much of each key had been attempted (each direction) by a given time: an
    update counts from its ``t0``, taken before its first send."""

    def __init__(self, ops: Iterable[list[Any]]) -> None:
        per: dict[tuple[str, int], list[tuple[float, int]]] = {}
        for op in ops:
            per.setdefault((op[KEY], 0 if op[AMOUNT] > 0 else 1), []).append(
                (op[T0], abs(op[AMOUNT])))
        self._times: dict[tuple[str, int], list[float]] = {}
        self._sums: dict[tuple[str, int], list[int]] = {}
        for k, items in per.items():
            items.sort()
            self._times[k] = [t for t, _ in items]
            running, sums = 0, []
            for _, amount in items:
                running += amount
                sums.append(running)
            self._sums[k] = sums

    def by(self, key: str, direction: int, t: float) -> int:
        times = self._times.get((key, direction))
        if not times:
            return 0
        i = bisect.bisect_right(times, t)
        return self._sums[(key, direction)][i - 1] if i else 0


def slot_node(slot: str) -> int:
    return int(slot.split(".", 1)[0])


def bounds(result: Result) -> dict[tuple[str, int], tuple[int, int, int, int]]:
    """Per key and node: the least and most total of the increments, then of the
    decrements, that the node's slots (every incarnation) may hold of the key."""
    out: dict[tuple[str, int], list[int]] = {}
    for op in result.ops:
        outcome, amount = op[OUTCOME], op[AMOUNT]
        if outcome == "fail":
            continue
        wiped = result.wiped_at.get(op[NODE])
        certain = outcome == "ok" or (outcome == "indet" and not (
            wiped is not None and op[T0] < wiped))
        i = 0 if amount > 0 else 2
        row = out.setdefault((op[KEY], op[NODE]), [0, 0, 0, 0])
        if certain:
            row[i] += abs(amount)
        row[i + 1] += abs(amount)
    return {k: (r[0], r[1], r[2], r[3]) for k, r in out.items()}


def check(result: Result) -> None:
    """The oracle; raises AssertionError with the evidence."""
    assert result.stuck_threads == 0, "a client thread did not stop"
    bad = [op for op in result.ops if op[OUTCOME] not in ("ok", "fail", "unknown", "indet")]
    assert not bad, f"unclassified outcomes: {bad[:5]}"
    # 1. All nodes end with the same state of every key ...
    finals = list(result.final.values())
    assert finals and all(st is not None for st in finals), f"a node did not answer: {finals}"
    first: States = finals[0]  # type: ignore[assignment]
    differ = [k for k in result.keys
              if any(st.get(k, {}) != first.get(k, {}) for st in finals)]  # type: ignore[union-attr]
    assert not differ, f"nodes differ at the end on {len(differ)} keys, e.g. {differ[:3]}"
    # 2. ... and what each node's slots hold of each key is within what its clients
    #    were told (so is the count).
    limits = bounds(result)
    for key in result.keys:
        state = first.get(key, {})
        assert all(r[2] == 0 and r[3] == 0 for r in state.values()), (
            f"{key!r}: a base is set but no reset was issued: {state}")
        owners = {slot_node(slot) for slot in state} | {n for k, n in limits if k == key}
        for node in owners:
            p_lo, p_hi, n_lo, n_hi = limits.get((key, node), (0, 0, 0, 0))
            p, n = totals({s: r for s, r in state.items() if slot_node(s) == node})
            assert p_lo <= p <= p_hi and n_lo <= n <= n_hi, (
                f"{key!r} at node {node}: increments {p} outside [{p_lo}, {p_hi}] or "
                f"decrements {n} outside [{n_lo}, {n_hi}] (count {value(state)}); the "
                "updates: " + str([[*op[:4], op[WAIT]] for op in result.ops
                                   if op[KEY] == key and op[NODE] == node][:20]))
    # 3. Reads (the final states last): states never go backwards (but across a wipe)
    #    nor pass what was attempted.
    attempted = Attempted(result.ops)
    last: dict[int, tuple[float, dict[str, dict[str, list[int]]]]] = {}
    end = max([r[1] for r in result.reads] + [op[T1] for op in result.ops], default=0.0)
    reads = sorted(result.reads, key=lambda r: r[1]) + [
        [n, end + 1, st] for n, st in result.final.items() if st is not None]
    for node, t, states in reads:
        prev_t, held = last.get(node, (float("-inf"), {}))
        wiped = result.wiped_at.get(node)
        across_wipe = wiped is not None and prev_t < wiped <= t
        if across_wipe:
            held = {}
        for key, state in states.items():
            p, n = totals(state)
            assert p <= attempted.by(key, 0, t) and n <= attempted.by(key, 1, t), (
                f"node {node} at {t:.3f} holds {p} increments and {n} decrements of {key!r}"
                f", but only {attempted.by(key, 0, t)} and {attempted.by(key, 1, t)} had "
                "been attempted")
            before = held.get(key, {})
            for slot, old in before.items():
                new = state.get(slot, [0, 0, 0, 0])
                assert all(a >= b for a, b in zip(new, old, strict=True)), (
                    f"node {node}: {key!r} went backwards in slot {slot}: {old} at "
                    f"{prev_t:.3f}, then {new} at {t:.3f}")
        last[node] = (t, {**held, **states})
    missing = [n for n in result.final if not result.recovery_ok.get(n)]
    assert not missing, f"after heal, nodes {missing} served no successful update"


# --------------------------------------------------------------------------- scenarios


def isolate_one(c: NetCluster, r: Result) -> Callable[[], None]:
    """Node 1's link goes down: it loses peers *and* its clients."""
    c.link(1, False)
    time.sleep(FAULT_S)
    return c.heal


def split_1_23(c: NetCluster, r: Result) -> Callable[[], None]:
    """1 | 2,3 between nodes; every client still reaches its own node."""
    c.partition([1], [2, 3])
    time.sleep(FAULT_S)
    return c.heal


def asymmetric(c: NetCluster, r: Result) -> Callable[[], None]:
    """1 can send to 2 but receives nothing from 2 (drop 2 -> 1 at node 1's input)."""
    c.block(2, 1)
    time.sleep(FAULT_S)
    return c.heal


def flapping(c: NetCluster, r: Result) -> Callable[[], None]:
    """1 | 2,3 cut and healed every 300 ms."""
    end = time.monotonic() + FAULT_S
    cut = False
    for _ in range(100):  # bounded whatever the clock does
        if time.monotonic() >= end:
            break
        if cut:
            c.heal()
        else:
            c.partition([1], [2, 3])
        cut = not cut
        time.sleep(0.3)
    return c.heal


def lossy(c: NetCluster, r: Result) -> Callable[[], None]:
    """20% random packet loss, both directions, on node 1 (peers and clients)."""
    c.loss(1, 20)
    time.sleep(FAULT_S + 0.5)
    return c.heal


def kill_restart(c: NetCluster, r: Result) -> Callable[[], None]:
    """SIGKILL node 3 under load; restart it from its data directory."""
    c.kill(3)
    time.sleep(FAULT_S)

    def heal() -> None:
        c.start(3)
        c.wait_ready([3])
    return heal


def wipe_restart(c: NetCluster, r: Result) -> Callable[[], None]:
    """SIGKILL node 3, delete its data directory, restart it empty (new incarnation)."""
    c.kill(3)
    c.wipe(3)
    time.sleep(FAULT_S)

    def heal() -> None:
        r.wiped_at[3] = time.monotonic()
        c.start(3)
        c.wait_ready([3])
    return heal


def pause_resume(c: NetCluster, r: Result) -> Callable[[], None]:
    """SIGSTOP node 2 for FAULT_S (far past peer_timeout_s = 0.5 s), then SIGCONT."""
    c.signal(2, signal.SIGSTOP)
    time.sleep(FAULT_S)
    # On SIGCONT the node finds a backlog of requests whose clients already gave up
    # (their outcome is "unknown"): it applies them, and the oracle allows for that.
    return lambda: c.signal(2, signal.SIGCONT)


def kill_all(c: NetCluster, r: Result) -> Callable[[], None]:
    """SIGKILL all three under load; restart all from their data directories."""
    for n in c.ids:
        c.kill(n)
    time.sleep(FAULT_S / 2)

    def heal() -> None:
        for n in c.ids:
            c.start(n)
        c.wait_ready(c.ids)
    return heal


#: name -> (fault, writers' wait levels)
SCENARIOS: dict[str, tuple[Fault, tuple[str, ...]]] = {
    "isolate-1": (isolate_one, ("local", "majority")),
    "split-1|23": (split_1_23, ("local", "majority")),
    "asymmetric-2->1": (asymmetric, ("local", "majority")),
    "flapping-1|23": (flapping, ("local", "majority")),
    "loss-20%-1": (lossy, ("local", "majority")),
    "sigkill-restart-3": (kill_restart, ("local", "majority")),
    # A wiped disk loses what only it held: wait=local acks on node 3 may vanish by
    # design, so this scenario writes with majority (acked = on >= 2 disks).
    "wipe-restart-3": (wipe_restart, ("majority",)),
    "sigstop-2": (pause_resume, ("local", "majority")),
    "kill-all": (kill_all, ("local", "majority")),
}


def run_named(name: str, root: Path, seed: int = 1, secure: bool = False) -> Result:
    fault, waits = SCENARIOS[name]
    return run(name, root, fault, waits, seed, secure)


def median_max(values: list[float]) -> tuple[float, float]:
    return statistics.median(values), max(values)
