"""``bin/bench --scrape-cost``: what metrics cost the request path.

Two fresh three-node clusters side by side: one without ``metrics`` (the figures are not
kept at all: no request timing, no histograms), one with.  The same closed-loop load
(native protocol, one client, ``window`` in flight, to node 1) runs in interleaved
rounds on: the cluster without metrics; the one with metrics, nobody scraping; the same
while a scraper fetches node 1's ``/metrics`` every ``interval_s`` (100 ms: 150 times
Prometheus's default rate).  Reported per case: the median over rounds of ops/s and of
node 1's CPU per increment (``/proc``; on a shared machine the stable figure), and the
scrapes' durations.  Every run is bounded by ``ops`` and ``seconds``.
"""

from __future__ import annotations

import statistics
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from ..localcluster import LocalCluster
from .keys import KeySpec, KeyStream
from .load import closed_loop
from .measure import cpu_s, percentile, ratio
from .progress import Progress
from .report import fmt

CASES = ("no metrics", "metrics, not scraped", "metrics, scraped")


class _Scraper:
    def __init__(self, url: str, interval_s: float) -> None:
        self.url = url
        self.interval_s = interval_s
        self.durations: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            started = time.perf_counter()
            with urllib.request.urlopen(self.url, timeout=10) as reply:
                reply.read()
            self.durations.append(time.perf_counter() - started)

    def __enter__(self) -> _Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def run_scrape_cost(root: Path, ops: int, seconds: float, rounds: int, window: int,
                    interval_s: float, progress: Progress) -> dict[str, Any]:
    plain = LocalCluster(root / "no-metrics")
    metered = LocalCluster(root / "metrics", metrics=True)
    runs: dict[str, list[dict[str, float]]] = {case: [] for case in CASES}
    scrapes: list[float] = []
    try:
        progress.start("starting two clusters", 6)
        plain.start_all()
        metered.start_all()
        progress.close()
        address = metered.nodes[1].metrics
        assert address is not None
        url = f"http://{address}/metrics"
        for i in range(rounds):
            for case in CASES:
                progress.note(f"round {i + 1}/{rounds}: {case}")
                cluster = plain if case == CASES[0] else metered
                pid = cluster.pid(1)
                stream = KeyStream(KeySpec(1, "uniform", i))
                before = cpu_s(pid)
                if case == CASES[2]:
                    with _Scraper(url, interval_s) as scraper:
                        res = closed_loop(cluster.router(1), "increment", stream, window, ops,
                                          seconds)
                    scrapes += scraper.durations
                else:
                    res = closed_loop(cluster.router(1), "increment", stream, window, ops,
                                      seconds)
                cpu = (cpu_s(pid) - before) / max(1, res["acked"]) * 1e6
                runs[case].append({"ops_per_s": res["ops_per_s"], "cpu_us_per_op": cpu,
                                   "acked": res["acked"]})
    finally:
        plain.stop_all()
        metered.stop_all()
    summary = {case: {"ops_per_s": statistics.median(r["ops_per_s"] for r in rs),
                      "cpu_us_per_op": statistics.median(r["cpu_us_per_op"] for r in rs)}
               for case, rs in runs.items()}
    ordered = sorted(scrapes)
    return {"ops": ops, "seconds": seconds, "rounds": rounds, "window": window,
            "interval_s": interval_s, "runs": runs, "summary": summary,
            "scrapes": {"count": len(ordered),
                        "p50_s": percentile(ordered, 50) if ordered else None,
                        "max_s": ordered[-1] if ordered else None}}


def render_scrape_cost(res: dict[str, Any]) -> str:
    s = res["summary"]
    base = s[CASES[0]]
    lines = [f"scrape cost: native increments, window {res['window']}, node 1; median of "
             f"{res['rounds']} interleaved rounds; scraper every {res['interval_s'] * 1000:.0f} ms"]
    for case in CASES:
        lines.append(f"  {case:22} {fmt(s[case]['ops_per_s'], 'ops'):>12}  "
                     f"{fmt(s[case]['cpu_us_per_op'], 'us'):>10} node CPU/op  "
                     f"({_x(ratio(s[case]['ops_per_s'], base['ops_per_s']))} ops/s, "
                     f"{_x(ratio(s[case]['cpu_us_per_op'], base['cpu_us_per_op']))} CPU "
                     "vs no metrics)")
    sc = res["scrapes"]
    if sc["count"]:
        lines.append(f"  scrapes: {sc['count']}, p50 {fmt(sc['p50_s'], 'ms')}, "
                     f"max {fmt(sc['max_s'], 'ms')}")
    return "\n".join(lines)


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


__all__ = ["CASES", "render_scrape_cost", "run_scrape_cost"]
