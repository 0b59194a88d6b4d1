"""Fault scenarios on :class:`~.netns.NetCluster` and the Jepsen-style oracle they share.

Every scenario follows one timeline, so the numbers are comparable:

1. *load*: one writer session per node (``wait`` alternating local / majority, ``by``
   random in 1..5) and one reader per node, for ``WARMUP_S``;
2. *fault*: the scenario's fault, for about ``FAULT_S``, the load still running;
3. the load is stopped (in-flight calls finish or time out), then *heal* (network
   restored, process restarted or resumed) at ``t_heal``; we poll every node until all
   report the same count: ``convergence_s`` = that moment - ``t_heal``;
4. *recovery*: a second, short load phase; every node must serve a successful
   increment again (clients reconnect by themselves);
5. stop, converge again, check the oracle over both phases.

Oracle (:func:`check`): every increment ended ``ok`` / ``fail`` (refused: certainly not
applied) / ``unknown`` (no answer) / ``indet`` (Indeterminate: applied at the node, wait
level not confirmed); all nodes end equal; ``sum(ok) [+ sum(indet)] <= final <=
sum(ok) + sum(indet) + sum(unknown)`` weighted by ``by``; per node, reads never go down
(except across a restart with a wiped data directory) and never exceed what had been
attempted when they were answered.
"""

from __future__ import annotations

import signal
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .netns import NetCluster

WARMUP_S = 0.8
FAULT_S = 2.5
RECOVERY_S = 1.0
CONVERGE_TIMEOUT_S = 30.0
CLIENT_TIMEOUT_S = 1.0


@dataclass
class Result:
    name: str
    ops: list[list[Any]] = field(default_factory=list)  # [node, by, outcome, t0, t1, wait, why]
    reads: list[list[Any]] = field(default_factory=list)  # [node, value, t, attempted]
    read_errors: list[list[Any]] = field(default_factory=list)
    attempted: int = 0
    t_fault: float = 0.0
    t_heal: float = 0.0
    convergence_s: float = 0.0
    heal_s: float = 0.0
    converged_value: int = 0
    final: dict[int, int | None] = field(default_factory=dict)
    #: node -> time it came back with an empty data directory
    wiped_at: dict[int, float] = field(default_factory=dict)
    #: writers' wait levels (the wipe scenario needs majority, see there)
    waits: tuple[str, ...] = ("local", "majority")
    recovery_ok: dict[int, int] = field(default_factory=dict)
    stuck_threads: int = 0

    def totals(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for _, by, outcome, *_ in self.ops:
            out[outcome] += by
        return dict(out)

    def outcomes(self, during_fault: bool | None = None) -> dict[int, Counter[str]]:
        """Per node: how many increments ended ok / fail / unknown / indet."""
        per: dict[int, Counter[str]] = {}
        for node, _, outcome, t0, *_ in self.ops:
            if during_fault is not None and (self.t_fault <= t0 < self.t_heal) != during_fault:
                continue
            per.setdefault(node, Counter())[outcome] += 1
        return per

    def summary(self) -> str:
        during = self.outcomes(during_fault=True)
        parts = [f"{self.name}: final={self.converged_value} convergence={self.convergence_s:.3f}s"
                 f" (heal action {self.heal_s:.3f}s)",
                 f"by-weight totals {self.totals()}, attempted {self.attempted}"]
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
                 max_s: float) -> None:
        self.agent = cluster.client()
        self.agent.call("start", writers=[{"node": n, "waits": list(waits), "by_max": 5}
                                             for n in cluster.ids],
                        readers=cluster.ids, max_s=max_s, max_ops=20_000,
                        timeout=CLIENT_TIMEOUT_S, read_timeout=0.5, read_interval=0.05,
                        seed=seed)

    def stop(self, result: Result) -> list[list[Any]]:
        history = self.agent.call("stop")
        base = result.attempted
        result.ops += history["ops"]
        result.reads += [[n, v, t, a + base, *rest] for n, v, t, a, *rest in history["reads"]]
        result.read_errors += history["read_errors"]
        result.attempted += history["attempted"]
        result.stuck_threads += history["stuck_threads"]
        ops: list[list[Any]] = history["ops"]
        return ops


def run(name: str, root: Path, fault: Fault, waits: tuple[str, ...] = ("local", "majority"),
        seed: int = 1) -> Result:
    result = Result(name, waits=waits)

    def record(counts: dict[int, int | None]) -> None:
        # Convergence polls are reads too (right after a restart, the interesting ones).
        t = time.monotonic()
        result.reads += [[n, v, t, result.attempted] for n, v in counts.items()
                         if v is not None]

    with NetCluster(root) as cluster:
        cluster.start_all()
        load = Load(cluster, waits, seed, max_s=WARMUP_S + FAULT_S + 20)
        time.sleep(WARMUP_S)
        result.t_fault = time.monotonic()
        heal = fault(cluster, result)
        load.stop(result)
        # Convergence counts from the start of the heal action, so for the restart
        # scenarios it includes starting the process(es) (heal_s says how much).
        result.t_heal = time.monotonic()
        heal()
        result.heal_s = time.monotonic() - result.t_heal
        value, when = cluster.wait_converged(CONVERGE_TIMEOUT_S, on_poll=record)
        result.convergence_s = when - result.t_heal
        result.converged_value = value

        load = Load(cluster, waits, seed + 100, max_s=RECOVERY_S + 20)
        time.sleep(RECOVERY_S)
        ops = load.stop(result)
        result.recovery_ok = dict(Counter(op[0] for op in ops if op[2] == "ok"))
        value, _ = cluster.wait_converged(CONVERGE_TIMEOUT_S, on_poll=record)
        result.final = cluster.counts(timeout=1.0)
    return result


def check(result: Result) -> None:
    """The oracle; raises AssertionError with the evidence."""
    assert result.stuck_threads == 0, "a client thread did not stop"
    bad = [op for op in result.ops if op[2] not in ("ok", "fail", "unknown", "indet")]
    assert not bad, f"unclassified outcomes: {bad[:5]}"
    finals = set(result.final.values())
    assert len(finals) == 1 and None not in finals, f"nodes differ at the end: {result.final}"
    final = int(finals.pop())  # type: ignore[arg-type]
    t = result.totals()
    ok, indet, unknown = t.get("ok", 0), t.get("indet", 0), t.get("unknown", 0)
    # Indeterminate = applied and durable at its node: it must count, unless that node's
    # disk was wiped before it spread.
    lower = ok + (0 if result.wiped_at else indet)
    upper = ok + indet + unknown
    assert lower <= final <= upper, (
        f"final {final} outside [{lower}, {upper}] (ok {ok}, indet {indet}, "
        f"unknown {unknown}, fail {t.get('fail', 0)})")
    last: dict[int, tuple[int, float]] = {}
    for node, value, when, attempted in (r[:4] for r in sorted(result.reads,
                                                                 key=lambda r: r[2])):
        assert value <= attempted, (
            f"node {node} read {value} at {when:.3f} but only {attempted} was ever attempted")
        wiped = result.wiped_at.get(node)
        prev = last.get(node)
        if prev is not None and value < prev[0]:
            assert wiped is not None and prev[1] < wiped <= when, (
                f"node {node} went backwards: {prev[0]} at {prev[1]:.3f} then {value} "
                f"at {when:.3f}")
        last[node] = (value, when)
    missing = [n for n in result.final if not result.recovery_ok.get(n)]
    assert not missing, f"after heal, nodes {missing} served no successful increment"


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


def run_named(name: str, root: Path, seed: int = 1) -> Result:
    fault, waits = SCENARIOS[name]
    return run(name, root, fault, waits, seed)


def median_max(values: list[float]) -> tuple[float, float]:
    return statistics.median(values), max(values)
