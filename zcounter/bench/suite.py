"""The default sections: zcounter against the echo ceiling and Redis, interleaved.

Every system is started first; then each measurement runs on every system back to
back (zcounter, echo, Redis ``always``, Redis ``everysec``), so a noisy stretch of this
shared machine hurts all of them alike and the ratios stay meaningful:

1. throughput, one client, window 1, 16 and 256 (zcounter: node 1's CPU per increment
   and peer messages/bytes per increment too);
2. throughput, one client per node at once, window 256 (baselines: three clients on
   the one server);
3. latency at fixed offered loads, open loop (zcounter: a second run with observers at
   the other nodes gives convergence and peer traffic per increment at low load);
4. memory: every node's RSS at start, before and after a ``--count``-increment soak
   (one client per node, window 256); the baselines' RSS;
5. start-up: from process start to the first answered ``ping`` (every system).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .keys import KeySpec, KeyStream
from .load import Workload, closed_loop, concurrent, open_loop, redis_closed_loop, redis_open_loop
from .measure import per_increment, rss_kib
from .progress import Progress, Tick
from .servers import BenchCluster, System, start_baselines, start_cluster

WINDOWS = (1, 16, 256)
RATES = (1000, 5000)
#: The soak and the concurrent runs keep this many requests in flight per client.
SOAK_WINDOW = 256
#: Bound on waiting for the cluster to agree between sections.
SETTLE_S = 15.0


@dataclass(frozen=True)
class Options:
    ops: int
    seconds: float
    latency_seconds: float
    count: int
    poll_interval_s: float
    keys: KeySpec
    baselines: bool = True
    windows: tuple[int, ...] = WINDOWS
    rates: tuple[int, ...] = RATES

    def to_json(self) -> dict[str, Any]:
        return {"ops": self.ops, "seconds": self.seconds,
                "latency_seconds": self.latency_seconds, "count": self.count,
                "poll_interval_ms": self.poll_interval_s * 1000, "keys": self.keys.to_json(),
                "windows": list(self.windows), "rates": list(self.rates)}


def wait_same_root(cluster: BenchCluster, timeout_s: float = SETTLE_S,
                   nodes: list[int] | None = None) -> float | None:
    """Seconds until ``nodes`` (default: all) report the same hash-tree root; None if
    they did not within ``timeout_s``."""
    started = time.perf_counter()
    nodes = nodes or cluster.ids
    while True:
        roots = {cluster.status(node)["root"] for node in nodes}
        elapsed = time.perf_counter() - started
        if len(roots) == 1:
            return elapsed
        if elapsed > timeout_s:
            return None
        time.sleep(0.02)


class DefaultSuite:
    """Runs the default sections; results land in ``results`` (the ``--json`` layout)."""

    def __init__(self, opts: Options, root: Path, progress: Progress,
                 results: dict[str, Any]) -> None:
        self.o = opts
        self.root = root
        self.progress = progress
        self.results = results
        results.setdefault("systems", {})
        results.setdefault("skipped", [])
        self.zc: dict[str, Any] = results.setdefault("zcounter", {})

    def _run(self, label: str, total: int,
             run: Callable[[Tick], dict[str, Any]]) -> dict[str, Any]:
        self.progress.start(label, total)
        try:
            return run(self.progress.update)
        finally:
            self.progress.close()

    def _closed(self, system: System, window: int, tick: Tick) -> dict[str, Any]:
        o = self.o
        stream = KeyStream(o.keys)
        if system.kind == "redis":
            return redis_closed_loop(system.target, "increment", stream, window, o.ops,
                                     o.seconds, tick)
        return closed_loop(system.target, "increment", stream, window, o.ops, o.seconds, tick)

    def _open(self, system: System, rate: int, observe: list[str], tick: Tick) -> dict[str, Any]:
        o = self.o
        if system.kind == "redis":
            return redis_open_loop(system.target, rate, o.latency_seconds, o.keys, tick)
        return open_loop(system.target, rate, o.latency_seconds, o.keys, observe,
                         o.poll_interval_s, tick)

    def _concurrent(self, label: str, system: System, window: int, ops: int,
                    seconds: float) -> dict[str, Any]:
        self.progress.start(label, len(system.targets))
        try:
            return concurrent(system.kind, system.targets, Workload("increment", self.o.keys),
                              window, ops, seconds)
        finally:
            self.progress.close()

    def run(self) -> None:
        o, res, zc = self.o, self.results, self.zc
        with contextlib.ExitStack() as stack:
            cluster, ready = start_cluster(stack, self.root / "zcounter", self.progress)
            zc.update(ready_s=ready, rss_start_kib=cluster.rss(), throughput={}, latency={},
                      replication={}, cpu_us_per_increment={})
            systems = [System("zcounter", "zmq", cluster.router(1),
                              [cluster.router(i) for i in cluster.ids], cluster.pid(1),
                              max(ready.values()))]
            if o.baselines:
                systems += start_baselines(stack, self.root, res["skipped"])
            else:
                res["skipped"].append("baselines (--skip-baselines)")
            for sysm in systems[1:]:
                res["systems"][sysm.name] = {"ready_s": sysm.ready_s, "throughput": {},
                                             "latency": {}}
            self._throughput(cluster, systems)
            zc["settle_s"] = wait_same_root(cluster)
            self._latency(cluster, systems)
            for sysm in systems[1:]:
                res["systems"][sysm.name]["rss_kib"] = rss_kib(sysm.pid)
            self._soak(cluster, systems[0])

    def _throughput(self, cluster: BenchCluster, systems: list[System]) -> None:
        o, zc = self.o, self.zc
        for w in o.windows:
            for sysm in systems:
                label = f"{sysm.name} throughput, window {w}"
                if sysm.name != "zcounter":
                    self.results["systems"][sysm.name]["throughput"][f"w{w}"] = self._run(
                        label, o.ops, functools.partial(self._closed, sysm, w))
                    continue
                before, cpu0 = cluster.peer_totals(), cluster.cpu(1)
                r = self._run(label, o.ops, functools.partial(self._closed, sysm, w))
                zc["cpu_us_per_increment"][f"w{w}"] = (
                    (cluster.cpu(1) - cpu0) / r["acked"] * 1e6 if r["acked"] else None)
                zc["replication"][f"w{w}"] = per_increment(before, cluster.peer_totals(),
                                                           r["acked"])
                zc["throughput"][f"w{w}"] = r
        for sysm in systems:
            r = self._concurrent(f"{sysm.name} throughput, 3 clients, window {SOAK_WINDOW}",
                                 sysm, SOAK_WINDOW, o.ops, o.seconds)
            if sysm.name == "zcounter":
                zc["throughput"]["per_node"] = r
            else:
                self.results["systems"][sysm.name]["throughput"]["per_node"] = r

    def _latency(self, cluster: BenchCluster, systems: list[System]) -> None:
        o, zc = self.o, self.zc
        others = [cluster.router(i) for i in cluster.ids if i != 1]
        for rate in o.rates:
            n = int(rate * o.latency_seconds)
            for sysm in systems:
                label = f"{sysm.name} latency at {rate}/s"
                if sysm.name != "zcounter":
                    self.results["systems"][sysm.name]["latency"][f"r{rate}"] = self._run(
                        label, n, functools.partial(self._open, sysm, rate, []))
                    continue
                # Latency from a run like the baselines' (one client, nothing else);
                # convergence from a second run with an observer per other node. The
                # observers share the client's loop and load nodes 2 and 3 with up to
                # 2,000 gets/s each: latency measured during that run is not comparable
                # with the baselines' (one run: p50 at 1,000/s 2.45 ms with them, 1.25 ms
                # alone; it is kept as latency_with_observers_s).
                r = self._run(label, n, functools.partial(self._open, sysm, rate, []))
                before = cluster.peer_totals()
                c = self._run(label + " + convergence", n,
                              functools.partial(self._open, sysm, rate, others))
                zc["replication"][f"r{rate}"] = per_increment(before, cluster.peer_totals(),
                                                              c["acked"])
                r["convergence_s"] = c["convergence_s"]
                r["convergence_unseen"] = c["convergence_unseen"]
                r["observer_samples"] = c["observer_samples"]
                r["latency_with_observers_s"] = c["latency_s"]
                zc["latency"][f"r{rate}"] = r

    def _soak(self, cluster: BenchCluster, system: System) -> None:
        """``--count`` increments, one client per node: the memory figure."""
        zc = self.zc
        zc["rss_before_soak_kib"] = cluster.rss()

        def applied() -> int:
            return sum(cluster.stats(i).get("increments", 0) for i in cluster.ids)

        last = [applied()]

        def show() -> None:
            done = applied()
            self.progress.update(done - last[0])
            last[0] = done

        count = self.o.count
        self.progress.start(f"zcounter soak, {count:,} increments", count)
        try:
            zc["soak"] = concurrent(system.kind, system.targets,
                                    Workload("increment", self.o.keys), SOAK_WINDOW,
                                    -(-count // len(system.targets)),
                                    max(self.o.seconds, 900.0), show)
        finally:
            self.progress.close()
        zc["rss_after_soak_kib"] = cluster.rss()
        status = cluster.status(1)
        zc["keys_after_soak"] = status["keys"]
        zc["disk_after_soak"] = {i: cluster.disk(i) for i in cluster.ids}
