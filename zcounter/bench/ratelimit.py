"""``bin/bench --ratelimit`` (issue 21): does state shrink back to the live keys?

A fresh three-node cluster (metrics on) gets the issue's rate-limit load for ``--minutes``
(:mod:`.rlload`: each second 2,000 new keys ``rl:{n}:{s}``, each incremented 5 times
within the second, the first increment with a 2 s ttl, keys spread over the nodes).
Meanwhile the parent samples every node every :data:`SAMPLE_S` (RSS, data directory,
``zcounter_keys``, the expired / collected totals, the collection lag) and the collection
lag alone every :data:`LAG_SAMPLE_S`.  Afterwards, paired rounds of plain increments and
increments with a ttl (same key pattern, interleaved, order alternating) give the ttl
throughput ratio.

How the figures are made (and why):

* **Live keys** are the loader's: keys whose first increment was sent less than the ttl
  ago (:func:`.rlload.live_at`) - every key counted is live, so "held <= 3x live" is
  judged strictly.
* **Gone within 5 s of the deadline (p99)** comes from each node's histogram
  ``zcounter_collection_delay_seconds`` (one observation per key it collects: deadline
  to collection): the buckets at the last scrape (after the final drain) less those at
  the baseline give the delays of the keys collected since; per node, the p99 is the
  smallest bucket bound holding 99 % of them (rounded *up* to the buckets: 0.1 .. 30 s).
  "Gone from every node" is the latest of the three nodes' delays; the figure judged is
  its union bound (:func:`union_quantile`: the smallest bound where the fractions of
  keys later than it on each node sum to <= 1 %), which holds whatever the correlation.
  Cross-check, from the gauge ``zcounter_collection_lag_seconds`` (the age, from its
  deadline, of the oldest dead key not yet collected): a key with deadline d collected
  at c is uncollected at every sample t in [d, c), where the gauge is >= t - d; the last
  sample before c is at most one interval I earlier, so c - d <= (largest lag seen) + I
  for *every* key (a bound of the max, so also of the p99).  Polling sampled keys cannot
  give it: a node answers "no such key" from the deadline on, whether it still holds the
  state or not, and a read that made state would change what it measures.
* **Reads honour deadlines**: sampled keys (200 a minute) are read (``ttl``) on every
  node 50 ms after first acknowledgement + ttl; each must answer -2.
* **Baseline**: the sample nearest to 1 minute after the start (half the run when it is
  shorter); RSS and data directory at the end are divided by it.
* **Throughput** (the project's benchmark rule): ``rounds`` interleaved pairs on node 1,
  window 256, keys of 5 increments each; plain vs ``ttl_ms`` on every increment (what
  ``--ttl`` sends); the figure is the median of the per-round ratios.  Each round starts
  when collection has drained (bounded wait), so a ttl round's collection does not land
  on the next plain round; the sustained load above is where collection's cost shows.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import multiprocessing
import queue
import time
import urllib.request
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from .keys import KeySpec, KeyStream
from .load import closed_loop
from .measure import median, ratio
from .progress import Progress
from .report import fmt
from .rlload import Schedule, first_sends_from, live_at, load_process
from .servers import BenchCluster, start_cluster

KEYS_PER_S = 2000
INCREMENTS_PER_KEY = 5
TTL_MS = 2000
#: Outstanding requests per node (the loader's window).
WINDOW = 256
SAMPLE_S = 5.0
LAG_SAMPLE_S = 1.0
PROBES_PER_MINUTE = 200
#: Bound on waiting for collection to drain before a throughput round.
DRAIN_S = 20.0
#: What the sampler reads from /metrics.
METRICS = {"zcounter_keys": "keys", "zcounter_expired_keys_total": "expired",
           "zcounter_collected_keys_total": "collected",
           "zcounter_collection_lag_seconds": "lag_s",
           "zcounter_collection_pending_keys": "pending"}
#: The nodes' histogram of each collected key's delay from its deadline (issue 21).
DELAY = "zcounter_collection_delay_seconds"


@dataclass(frozen=True)
class RateLimitOptions:
    seconds: int
    rounds: int = 3
    round_ops: int = 20_000
    keys_per_s: int = KEYS_PER_S
    increments: int = INCREMENTS_PER_KEY
    ttl_ms: int = TTL_MS
    window: int = WINDOW

    @property
    def baseline_s(self) -> float:
        """When the reference sample is taken: 1 minute, or half a shorter run."""
        return min(60.0, self.seconds / 2)

    def to_json(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "rounds": self.rounds, "round_ops": self.round_ops,
                "keys_per_s": self.keys_per_s, "increments": self.increments,
                "ttl_ms": self.ttl_ms, "window": self.window, "sample_s": SAMPLE_S,
                "lag_sample_s": LAG_SAMPLE_S, "probes_per_minute": PROBES_PER_MINUTE,
                "baseline_s": self.baseline_s}


# --------------------------------------------------------------------------- pure parts


def parse_metrics(text: str) -> dict[str, Any]:
    """The unlabelled figures of :data:`METRICS` from a /metrics body, by short name, and
    the cumulative buckets of :data:`DELAY` under ``"delay"`` (``{le: count}``, ``le`` as
    the exposition writes it, ``"+Inf"`` included)."""
    out: dict[str, Any] = {}
    buckets: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            short = METRICS.get(sample.name)
            if short is not None and not sample.labels:
                out[short] = float(sample.value)
            elif sample.name == DELAY + "_bucket" and "le" in sample.labels:
                buckets[sample.labels["le"]] = float(sample.value)
    if buckets:
        out["delay"] = buckets
    return out


def _cumulative(buckets: dict[str, float]) -> list[tuple[float, float]]:
    return sorted((float(le), count) for le, count in buckets.items())


def delay_delta(before: dict[str, float] | None,
                after: dict[str, float]) -> list[tuple[float, float]]:
    """Cumulative bucket counts of the keys collected between two scrapes (``before``
    None: since the start), sorted by bound (``inf`` last)."""
    base = dict(_cumulative(before or {}))
    return [(le, count - base.get(le, 0.0)) for le, count in _cumulative(after)]


def bucket_quantile(cum: list[tuple[float, float]], q: float) -> float | None:
    """The smallest bucket bound holding at least ``q`` of the observations: the
    quantile rounded up to the histogram's resolution (``inf``: beyond the last bound);
    None without observations."""
    total = cum[-1][1] if cum else 0.0
    if total <= 0:
        return None
    return next(le for le, count in cum if count >= q * total)


def union_quantile(per_node: list[list[tuple[float, float]]], q: float) -> float | None:
    """A bound ``x`` such that at least ``q`` of the keys are gone from *every* node
    within ``x``: the smallest bucket bound where the fractions of keys later than it,
    summed over the nodes, are at most ``1 - q`` (P(max > x) <= sum of P(node > x):
    the union bound, whatever the nodes' delays' correlation).  Every node collects the
    same keys (each one is collected everywhere), so the fractions are of one set."""
    hists = [h for h in per_node if h and h[-1][1] > 0]
    if not hists or len(hists) < len(per_node):
        return None
    bounds = sorted({le for h in hists for le, _ in h})
    for x in bounds:
        late = sum(1.0 - dict(h).get(x, 0.0) / h[-1][1] for h in hists)
        if late <= 1.0 - q + 1e-12:
            return x
    return math.inf


def baseline_index(samples: list[dict[str, Any]], at_s: float) -> int | None:
    """The full sample (RSS and disk taken) nearest to ``at_s`` after the start."""
    full = [i for i, s in enumerate(samples) if s.get("full")]
    if not full:
        return None
    return min(full, key=lambda i: abs(samples[i]["t"] - at_s))


def summarize_run(samples: list[dict[str, Any]], first_sends: list[float], wall0: float,
                  ttl_s: float, baseline_s: float, load_end_s: float = math.inf,
                  keys_per_s: float = KEYS_PER_S) -> dict[str, Any]:
    """Per node: RSS and data directory at the baseline and at the end (the last full
    sample), their ratios; the largest held / live between the baseline and the end of
    the load (after it, live keys fall to 0 while the last ones wait for collection);
    the largest collection lag after the baseline and the bound it gives (see the
    module).  A cross-check of the bound, by Little's law: dead keys held / keys made per
    second = how long a key stays held after its deadline, on average."""
    out: dict[str, Any] = {"per_node": {}}
    base = baseline_index(samples, baseline_s)
    full = [s for s in samples if s.get("full")]
    if base is None or not full:
        return out
    t_base = samples[base]["t"]
    after = [s for s in samples if s["t"] >= t_base]
    for node in sorted(samples[base]["nodes"], key=int):
        b, e = samples[base]["nodes"][node], full[-1]["nodes"].get(node, {})
        held = [(s["nodes"][node].get("keys"), live_at(first_sends, wall0 + s["t"], ttl_s))
                for s in after if node in s["nodes"] and s["t"] <= load_end_s]
        ratios = [h / live for h, live in held if h is not None and live]
        dead = [h - live for h, live in held if h is not None]
        lags = [s["nodes"][node]["lag_s"] for s in after
                if node in s["nodes"] and s["nodes"][node].get("lag_s") is not None]
        intervals = [b2["t"] - a2["t"] for a2, b2 in itertools.pairwise(after)]
        out["per_node"][node] = {
            "rss_base_kib": b.get("rss_kib"), "rss_end_kib": e.get("rss_kib"),
            "rss_ratio": ratio(e.get("rss_kib"), b.get("rss_kib")),
            "disk_base": b.get("disk"), "disk_end": e.get("disk"),
            "disk_ratio": ratio(e.get("disk"), b.get("disk")),
            "held_live_max": max(ratios) if ratios else None,
            "held_live_samples": len(ratios),
            "mean_dead_held_s": sum(dead) / len(dead) / keys_per_s if dead else None,
            "lag_max_s": max(lags) if lags else None,
            "gone_bound_s": max(lags) + max(intervals, default=0.0) if lags else None,
            "collected_end": e.get("collected"), "expired_end": e.get("expired"),
            **_delays(b.get("delay"), [s["nodes"][node].get("delay") for s in after
                                       if node in s["nodes"]])}
    hists = [v.pop("_delay_cum") for v in out["per_node"].values()]
    out["gone_p99_all_s"] = union_quantile(hists, 0.99)
    out["baseline_t_s"] = t_base
    out["end_t_s"] = full[-1]["t"]
    return out


def _delays(base: dict[str, float] | None,
            later: list[dict[str, float] | None]) -> dict[str, Any]:
    """A node's collection delays of the keys collected after the baseline: the last
    scrape's buckets less the baseline's (``_delay_cum`` for :func:`union_quantile`)."""
    end = next((d for d in reversed(later) if d), None)
    cum = delay_delta(base, end) if end else []
    return {"delay_n": cum[-1][1] if cum else 0, "delay_p50_s": bucket_quantile(cum, 0.5),
            "delay_p99_s": bucket_quantile(cum, 0.99), "_delay_cum": cum}


def worst(per_node: dict[str, Any], field: str) -> float | None:
    values = [v[field] for v in per_node.values() if v.get(field) is not None]
    return max(values) if values else None


class Blocks(KeyStream):
    """Keys ``first``, ``first``, ... (``per_key`` requests each), then ``first + 1``...:
    the rate limiter's pattern for the closed-loop rounds (a KeyStream's table)."""

    def __init__(self, first: int, per_key: int, ops: int) -> None:
        size = 1
        while size < ops:
            size <<= 1
        self.spec = KeySpec(max(1, size // per_key))
        self.table = array("q", (first + i // per_key for i in range(size)))
        self.mask = size - 1


# --------------------------------------------------------------------------- the run


class RateLimitSection:
    """Runs the section; its figures land in ``results["ratelimit"]``."""

    def __init__(self, opts: RateLimitOptions, root: Path, progress: Progress,
                 results: dict[str, Any]) -> None:
        self.o = opts
        self.root = root
        self.progress = progress
        self.res: dict[str, Any] = results.setdefault("ratelimit", {})
        self.res["options"] = opts.to_json()

    def run(self) -> None:
        started = time.perf_counter()
        with contextlib.ExitStack() as stack:
            cluster, ready = start_cluster(stack, self.root / "ratelimit", self.progress,
                                           metrics=True)
            self.res["ready_s"] = ready
            self.res["rss_start_kib"] = {str(i): v for i, v in cluster.rss().items()}
            load, samples = self._load(cluster)
            first_sends = first_sends_from(load.pop("first_sends", b""))
            wall0 = load.get("wall_start", samples[0]["wall"] if samples else 0.0)
            for s in samples:
                s["t"] = s["wall"] - wall0
            self.res["load"] = load
            self.res["samples"] = samples
            self.res["summary"] = summarize_run(samples, first_sends, wall0,
                                                self.o.ttl_ms / 1000, self.o.baseline_s,
                                                # the schedule's end, not the probes'
                                                load.get("last_send_s", math.inf),
                                                self.o.keys_per_s)
            self.res["keys_sent"] = len(first_sends)
            self.res["throughput"] = self._rounds(cluster)
        self.res["elapsed_s"] = time.perf_counter() - started

    def _load(self, cluster: BenchCluster) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        o = self.o
        sched = Schedule(o.keys_per_s, o.increments, len(cluster.ids), o.seconds, o.ttl_ms)
        stride = max(1, o.keys_per_s * 60 // PROBES_PER_MINUTE)
        mp = multiprocessing.get_context("spawn")
        results = mp.Queue()
        hard_limit = o.seconds * 1.5 + 30
        proc = mp.Process(target=load_process, daemon=True, args=(
            [cluster.router(i) for i in cluster.ids], sched, o.window, stride, hard_limit,
            results))
        samples: list[dict[str, Any]] = []
        self.progress.start(f"rate-limit load, {o.seconds} s", o.seconds)
        proc.start()
        try:
            load = self._sample_until_done(cluster, results, samples, hard_limit + 60)
        finally:
            self.progress.close()
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        # One last full sample after the load: the end figures.
        samples.append(self._sample(cluster, full=True))
        # Then the last keys' collection (bounded): the delay histogram's end, so that
        # the slowest keys of the run's last seconds are in it.
        drained = self._drain(cluster)
        samples.append({**self._sample(cluster, full=False, delay=True), "drained": drained})
        return load, samples

    def _sample_until_done(self, cluster: BenchCluster, results: Any,
                           samples: list[dict[str, Any]], limit_s: float) -> dict[str, Any]:
        start = time.monotonic()
        next_full = start
        shown = 0
        while time.monotonic() - start < limit_s:
            now = time.monotonic()
            full = now >= next_full
            if full:
                next_full += SAMPLE_S
            samples.append(self._sample(cluster, full))
            if int(now - start) > shown:
                self.progress.update(int(now - start) - shown)
                shown = int(now - start)
            with contextlib.suppress(queue.Empty):
                load: dict[str, Any] = results.get(
                    timeout=max(0.0, LAG_SAMPLE_S - (time.monotonic() - now)))
                return load
        return {"error": f"the loader did not finish within {limit_s:.0f} s"}

    def _sample(self, cluster: BenchCluster, full: bool, delay: bool = False
                ) -> dict[str, Any]:
        """Every node's metrics; RSS and disk too if ``full``; the delay histogram's
        buckets only with ``full`` or ``delay`` (the summary needs the baseline's and
        the last: the JSON stays small)."""
        nodes: dict[str, dict[str, Any]] = {}
        for i in cluster.ids:
            figures: dict[str, Any] = {}
            address = cluster.nodes[i].metrics
            try:
                with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as reply:
                    figures.update(parse_metrics(reply.read().decode()))
            except OSError as exc:
                figures["scrape_error"] = str(exc)[:200]
            if not (full or delay):
                figures.pop("delay", None)
            if full:
                figures["rss_kib"] = cluster.rss().get(i)
                figures["disk"] = cluster.disk(i)["total"]
            nodes[str(i)] = figures
        return {"wall": time.time(), "full": full, "nodes": nodes}

    # ------------------------------------------------------------------ throughput

    def _drain(self, cluster: BenchCluster) -> float | None:
        """Seconds until no node has a dead key waiting (lag 0); None if not within
        :data:`DRAIN_S`."""
        start = time.monotonic()
        while time.monotonic() - start < DRAIN_S:
            sample = self._sample(cluster, full=False)
            if all(n.get("lag_s", 0.0) == 0.0 and not n.get("pending")
                   for n in sample["nodes"].values()):
                return time.monotonic() - start
            time.sleep(0.2)
        return None

    def _rounds(self, cluster: BenchCluster) -> dict[str, Any]:
        o = self.o
        runs: dict[str, list[dict[str, Any]]] = {"plain": [], "ttl": []}
        drains: list[float | None] = []
        for r in range(o.rounds):
            order = ("plain", "ttl") if r % 2 == 0 else ("ttl", "plain")
            for kind in order:
                drains.append(self._drain(cluster))
                # Disjoint key ranges per round and kind: every key is new, as in the load.
                first = (1 if kind == "plain" else 2) * 100_000_000 + r * 10_000_000
                stream = Blocks(first, o.increments, o.round_ops)
                op = "increment" if kind == "plain" else "increment_ttl"
                self.progress.start(f"round {r + 1}/{o.rounds}: {kind} increments", o.round_ops)
                cpu0 = cluster.cpu(1)
                try:
                    run = closed_loop(cluster.router(1), op, stream, 256, o.round_ops, 60.0,
                                      self.progress.update)
                finally:
                    self.progress.close()
                run["cpu_us_per_op"] = ((cluster.cpu(1) - cpu0) / run["acked"] * 1e6
                                        if run["acked"] else None)
                runs[kind].append(run)
        ratios = [ratio(t["ops_per_s"], p["ops_per_s"])
                  for p, t in zip(runs["plain"], runs["ttl"], strict=True)]
        valid = [x for x in ratios if x is not None]
        return {"rounds": runs, "ratios": ratios, "drain_s": drains,
                "ratio": median(valid) if valid else None,
                "plain_ops_per_s": median([p["ops_per_s"] for p in runs["plain"]]),
                "ttl_ops_per_s": median([t["ops_per_s"] for t in runs["ttl"]])}


def run_ratelimit(opts: RateLimitOptions, root: Path, progress: Progress,
                  results: dict[str, Any]) -> dict[str, Any]:
    RateLimitSection(opts, root, progress, results).run()
    section: dict[str, Any] = results["ratelimit"]
    return section


# --------------------------------------------------------------------------- rendering


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _le(value: float | None) -> str:
    """A bucket bound: '<= 1.5 s', '> 30 s' past the last one."""
    if value is None:
        return "-"
    return "> last bucket" if math.isinf(value) else f"<= {value:g} s"


def render_ratelimit(res: dict[str, Any]) -> str:
    """The section's table: the load, then per node the figures the targets judge."""
    o, load = res["options"], res.get("load", {})
    lines = [f"rate limit: {o['keys_per_s']:,} new keys/s x {o['increments']} increments "
             f"(ttl {o['ttl_ms']} ms on the first), {o['seconds']} s, 3 nodes; "
             f"baseline sample at {res.get('summary', {}).get('baseline_t_s', 0):.0f} s"]
    if "error" in load:
        lines.append(f"  load failed: {load['error']}")
        return "\n".join(lines)
    late = load["lateness_s"]
    lines.append(f"  load: {load['acked']:,} of {load['scheduled']:,} scheduled increments "
                 f"acknowledged ({fmt(load['ops_per_s'], 'ops')}), {load['errors']} errors; "
                 f"behind schedule p50 {fmt(late['p50'], 'ms')}, p99 {fmt(late['p99'], 'ms')}, "
                 f"max {fmt(late['max'], 'ms')}; 5th increment read != 5: "
                 f"{load['count_mismatches']}")
    pr = load["probes"]
    lines.append(f"  deadline probes (1 key in {pr['keys_every']}, every node, 50 ms after "
                 f"ack + ttl): {pr['answered']:,} of {pr['sent']:,} answered, "
                 f"{pr['violations']} did not read -2")
    per = res.get("summary", {}).get("per_node", {})
    head = ["node", "RSS base", "RSS end", "ratio", "disk base", "disk end", "ratio",
            "held/live max", "delay p50", "delay p99", "lag max", "gone <=", "dead held",
            "collected"]
    body = [[n, fmt(v["rss_base_kib"], "MB"), fmt(v["rss_end_kib"], "MB"), _x(v["rss_ratio"]),
             fmt(v["disk_base"], "bytes"), fmt(v["disk_end"], "bytes"), _x(v["disk_ratio"]),
             _x(v["held_live_max"]), _le(v.get("delay_p50_s")), _le(v.get("delay_p99_s")),
             fmt(v["lag_max_s"], "s"), fmt(v["gone_bound_s"], "s"),
             fmt(v.get("mean_dead_held_s"), "s"),
             "-" if v["collected_end"] is None else f"{v['collected_end']:,.0f}"]
            for n, v in per.items()]
    widths = [max(len(str(r[i])) for r in [head, *body]) for i in range(len(head))]
    for row in [head, *body]:
        lines.append("  " + "  ".join(c.rjust(widths[i]) for i, c in enumerate(row)))
    summary = res.get("summary", {})
    if per:
        n = min((v.get("delay_n") or 0 for v in per.values()), default=0)
        lines.append(f"  gone from every node, p99 (union bound over the nodes' delay "
                     f"histograms, >= {n:,.0f} keys collected after the baseline on each): "
                     f"{_le(summary.get('gone_p99_all_s'))}")
    tp = res.get("throughput", {})
    if tp:
        lines.append(f"  paired rounds (node 1, window 256, {o['round_ops']:,} increments, "
                     f"keys of {o['increments']}): plain {fmt(tp['plain_ops_per_s'], 'ops')}, "
                     f"ttl {fmt(tp['ttl_ops_per_s'], 'ops')}; ratios "
                     + ", ".join(_x(r) for r in tp["ratios"]) + f", median {_x(tp['ratio'])}")
    lines.append("  note: 'delay p50/p99': zcounter_collection_delay_seconds (deadline to "
                 "collection, per key) since the baseline, rounded up to its buckets; ")
    lines.append("  note: 'gone <=' bounds every key's collection delay after its deadline: "
                 "the largest zcounter_collection_lag_seconds seen plus the sampling "
                 "interval (see zcounter/bench/ratelimit.py); 'dead held': mean dead keys "
                 "held / keys made per second (Little's law: mean time held past the "
                 "deadline, plus the loader's send-to-apply delay)")
    return "\n".join(lines)
