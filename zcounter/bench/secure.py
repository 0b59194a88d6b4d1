"""``bin/bench --secure``: what CurveZMQ costs (issue 10).

Two fresh three-node clusters side by side, default settings: one in ``none`` mode, one
in ``curve`` mode (keys made for the run, :func:`zcounter.localcluster.make_keys`).
Both are started before the first measurement; then, in each round, every measurement
runs on both clusters back to back (which one goes first alternates between rounds), so
a noisy stretch of this shared machine hurts both alike:

1. throughput, one client (a raw DEALER, the default sections' loader; a CURVE client
   for the curve cluster), increments to node 1 with ``window`` 1, 16 and 256 in flight;
   node 1's CPU per increment, and all three nodes' (each peer decrypts every delta);
2. latency and convergence at ``rates`` increments/s, open loop, observers at nodes 2
   and 3 (the default sections' method).

Reported per figure: the median over the rounds for each mode and curve / none.  The
target (:data:`zcounter.bench.report.TARGETS`): curve at least 0.8x none at window 256.
Every run is bounded by its request count and by ``seconds``.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from ..localcluster import LocalCluster
from .keys import KeySpec, KeyStream
from .load import Curve, closed_loop, open_loop
from .measure import cpu_s, ratio
from .progress import Progress
from .report import fmt

WINDOWS = (1, 16, 256)
RATES = (1000, 5000)
MODES = ("none", "curve")


def _curve(cluster: LocalCluster) -> Curve | None:
    """The client side of every node's ROUTER, for the load generators."""
    curve: dict[str, tuple[Path, Path]] = {}
    for node in cluster.ids:
        pair = cluster.curve(node)
        if pair is None:
            return None
        curve[cluster.router(node)] = pair
    return curve


def _cpu(cluster: LocalCluster) -> list[float]:
    return [cpu_s(cluster.pid(node)) for node in cluster.ids]


def run_secure(root: Path, ops: int, seconds: float, latency_seconds: float, rounds: int,
               keys: KeySpec, poll_interval_s: float, progress: Progress,
               rates: tuple[int, ...] = RATES) -> dict[str, Any]:
    clusters = {"none": LocalCluster(root / "none"),
                "curve": LocalCluster(root / "curve", secure=True)}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {m: {} for m in MODES}
    try:
        progress.start("starting two clusters (none, curve)", 6)
        ready = {mode: c.start_all() for mode, c in clusters.items()}
        progress.close()
        curves = {mode: _curve(c) for mode, c in clusters.items()}
        for i in range(rounds):
            order = MODES if i % 2 == 0 else MODES[::-1]
            for window in WINDOWS:
                n = ops if window > 1 else max(100, ops // 10)
                for mode in order:
                    progress.note(f"round {i + 1}/{rounds}: window {window}, {mode}")
                    c = clusters[mode]
                    before = _cpu(c)
                    res = closed_loop(c.router(1), "increment", KeyStream(keys, i), window, n,
                                      seconds, curve=curves[mode])
                    spent = [b - a for a, b in zip(before, _cpu(c), strict=True)]
                    acked = max(1, res["acked"])
                    res["cpu_us_node1"] = spent[0] / acked * 1e6
                    res["cpu_us_all"] = sum(spent) / acked * 1e6
                    runs[mode].setdefault(f"w{window}", []).append(res)
            for rate in rates:
                for mode in order:
                    progress.note(f"round {i + 1}/{rounds}: {rate}/s + convergence, {mode}")
                    c = clusters[mode]
                    others = [c.router(n) for n in c.ids if n != 1]
                    before = _cpu(c)
                    res = open_loop(c.router(1), rate, latency_seconds, keys, others,
                                    poll_interval_s, curve=curves[mode])
                    spent = [b - a for a, b in zip(before, _cpu(c), strict=True)]
                    res["cpu_us_all"] = sum(spent) / max(1, res["acked"]) * 1e6
                    runs[mode].setdefault(f"r{rate}", []).append(res)
    finally:
        for c in clusters.values():
            c.stop_all()
    return {"ops": ops, "seconds": seconds, "latency_seconds": latency_seconds,
            "rounds": rounds, "windows": list(WINDOWS), "rates": list(rates),
            "ready_s": ready, "runs": runs, "summary": summarize(runs)}


def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def summarize(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Medians over the rounds, per mode, and curve / none of each."""
    out: dict[str, Any] = {}
    for name in runs["none"]:
        row: dict[str, Any] = {}
        for mode in MODES:
            rs = runs[mode][name]
            if name.startswith("w"):
                row[mode] = {"ops_per_s": _median([r["ops_per_s"] for r in rs]),
                             "cpu_us_node1": _median([r["cpu_us_node1"] for r in rs]),
                             "cpu_us_all": _median([r["cpu_us_all"] for r in rs]),
                             "errors": sum(r["errors"] for r in rs),
                             "stalled": any(r["stalled"] for r in rs)}
            else:
                row[mode] = {
                    "latency_p50_s": _median([r["latency_s"]["p50"] for r in rs]),
                    "latency_p99_s": _median([r["latency_s"]["p99"] for r in rs]),
                    "convergence_p50_s": _median([r["convergence_s"]["p50"] for r in rs]),
                    "convergence_p99_s": _median([r["convergence_s"]["p99"] for r in rs]),
                    "cpu_us_all": _median([r["cpu_us_all"] for r in rs]),
                    "acked": sum(r["acked"] for r in rs), "offered": sum(r["offered"] for r in rs),
                    "unseen": sum(r.get("convergence_unseen", 0) for r in rs)}
        key = "ops_per_s" if name.startswith("w") else "convergence_p99_s"
        row["ratio"] = ratio(row["curve"][key], row["none"][key])
        out[name] = row
    return out


def render_secure(res: dict[str, Any]) -> str:
    s = res["summary"]
    lines = [f"secure section: CurveZMQ against none, two fresh clusters in the same run, "
             f"median of {res['rounds']} interleaved round(s); curve/none = curve's figure "
             "divided by none's"]
    head = ["increments to node 1", "none", "curve", "curve/none", "node 1 CPU/incr none",
            "curve", "3 nodes CPU/incr none", "curve"]
    body = []
    for w in res["windows"]:
        row = s[f"w{w}"]
        body.append([f"throughput, window {w}", fmt(row["none"]["ops_per_s"], "ops"),
                     fmt(row["curve"]["ops_per_s"], "ops"), _x(row["ratio"]),
                     fmt(row["none"]["cpu_us_node1"], "us"),
                     fmt(row["curve"]["cpu_us_node1"], "us"),
                     fmt(row["none"]["cpu_us_all"], "us"), fmt(row["curve"]["cpu_us_all"], "us")])
    for rate in res["rates"]:
        row = s[f"r{rate}"]
        for q in ("p50", "p99"):
            none, curve = row["none"][f"convergence_{q}_s"], row["curve"][f"convergence_{q}_s"]
            body.append([f"convergence at {rate}/s, {q}", fmt(none, "ms"), fmt(curve, "ms"),
                         _x(ratio(curve, none)), "", "",
                         fmt(row["none"]["cpu_us_all"], "us") if q == "p50" else "",
                         fmt(row["curve"]["cpu_us_all"], "us") if q == "p50" else ""])
        for q in ("p50", "p99"):
            none, curve = row["none"][f"latency_{q}_s"], row["curve"][f"latency_{q}_s"]
            body.append([f"latency at {rate}/s, {q}", fmt(none, "ms"), fmt(curve, "ms"),
                         _x(ratio(curve, none)), "", "", "", ""])
    widths = [max(len(str(r[i])) for r in [head, *body]) for i in range(len(head))]
    for r in [head, *body]:
        lines.append("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    for name, row in s.items():
        for mode in MODES:
            fig = row[mode]
            if fig.get("errors") or fig.get("stalled"):
                lines.append(f"  note: {mode} {name}: {fig['errors']} errors"
                             + (", stalled" if fig.get("stalled") else ""))
            if fig.get("unseen") or fig.get("acked", 0) < fig.get("offered", 0):
                lines.append(f"  note: {mode} {name}: {fig['acked']} of {fig['offered']} "
                             f"answered, {fig['unseen']} never seen at every peer")
    return "\n".join(lines)


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


__all__ = ["RATES", "WINDOWS", "render_secure", "run_secure", "summarize"]
