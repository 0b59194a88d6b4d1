"""Prometheus metrics: ``/metrics`` over HTTP on ``[nodes.N] metrics = "HOST:PORT"``.

Exposition is ``prometheus_client``'s (its registry, its text and OpenMetrics formats),
served by :class:`~.httpdoor.HttpDoor` (one thread, bounded connections, head timeout
and size: issue 19); the figures come from the node's loop thread without a lock on its
path:

* The loop keeps plain figures: the core's ``stats`` (a :class:`~..protocol.stats.
  NodeStats`, whose exported fields name their metric) and ``requests`` counters (which
  it keeps anyway), and here :class:`Histogram` bucket arrays (request and commit
  durations, batch sizes) and the cumulative bytes of the deltas it published.  Plain
  ``+=`` in one thread: no lock, no atomic, no call into ``prometheus_client`` per
  request (its ``Histogram.observe`` takes a lock per call).
* A scrape, in the HTTP thread, asks the loop for a *snapshot* (:meth:`NodeMetrics.
  request_snapshot`: a flag the loop tests once per cycle, then an ``Event`` it sets once
  it has copied everything into plain Python objects) and renders that.  So the loop pays
  for a snapshot only when someone scrapes (a few tens of microseconds per scrape), and
  the HTTP thread never reads the loop's live structures.  If the loop does not answer
  within :data:`SNAPSHOT_WAIT_S` (a long commit), the previous snapshot is served.

What each metric means and where it comes from: README.md, section "Metrics".
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from ..config import ClusterConfig
from ..errors import ConfigError
from ..limits import METRICS_MAX_CLIENTS
from ..protocol.http import Head
from ..protocol.messages import Tag
from ..protocol.node import NodeCore
from ..protocol.peers import Liveness
from ..protocol.stats import NodeStats, exported
from .fdbudget import Door, Rejection
from .httpdoor import HttpDoor

log = logging.getLogger("zcounter.node")

#: How long a scrape waits for the loop's snapshot before serving the previous one.
SNAPSHOT_WAIT_S = 1.0
#: Deltas whose cumulative size is remembered (per-peer lag in bytes, see
#: :meth:`NodeMetrics.delta_sent`); a peer further behind is reported at least this far.
DELTA_WINDOW = 65_536

REQUEST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
COMMIT_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                  0.05, 0.1, 0.25, 0.5, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
#: Collection delays: a round every gc_interval_s (0.5 s), so ~0.5-1.5 s when every peer
#: answers; up to 30 s shows a slow or briefly cut peer, above it +Inf (a stopped one).
COLLECTION_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5,
                      10.0, 15.0, 20.0, 30.0)


class Histogram:
    """Bucket counts kept by one thread (the loop): ``observe`` is a bisect and two
    additions.  :meth:`snapshot` gives Prometheus's cumulative form."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def snapshot(self) -> tuple[list[tuple[str, float]], float]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            out.append((_le(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out, self.total


def _le(bound: float) -> str:
    return repr(float(bound))


@dataclass
class Snapshot:
    """Everything a scrape renders, copied by the loop thread (plain objects only)."""

    node: int
    slot: str
    version: str
    requests: list[tuple[tuple[str, str], int]]
    stats: NodeStats
    #: "<door>_max_clients" and "<door>_rejected" of the doors libzmq accepts for.
    doors: dict[str, int]
    keys: int
    live_keys: int
    slots: int
    request_ids: int
    bootstrapping: bool
    commits: int
    histograms: dict[str, tuple[list[tuple[str, float]], float]]
    #: peer -> (up, silence_s, lag_deltas, lag_bytes, behind_deltas, repairs, keys_repaired,
    #: clock_skew_s)
    peers: dict[int, tuple[int, float, int, int, int, int, int, float]]
    resp: dict[str, Any] = field(default_factory=dict)
    #: Collection: age of the oldest dead key not collected (s), keys waiting, graves.
    collection_lag_s: float = 0.0
    collection_pending: int = 0
    graves: int = 0


class NodeMetrics:
    """The loop thread's figures and the snapshot hand-over to the HTTP thread."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.request_duration = Histogram(REQUEST_BUCKETS)
        self.commit_duration = Histogram(COMMIT_BUCKETS)
        self.batch_messages = Histogram(BATCH_BUCKETS)
        self.collection_delay = Histogram(COLLECTION_BUCKETS)
        self.commits = 0
        #: (client, tag) -> arrival time of a native client request not yet answered.
        self.started: dict[tuple[Hashable, Tag], float] = {}
        #: Cumulative bytes of the deltas published after each of the last
        #: DELTA_WINDOW deltas (``_delta_first`` .. ``_delta_last``), and before them.
        self._delta_cum: deque[int] = deque()
        self._delta_first = 1
        self._delta_last = 0
        self._delta_base = 0
        self._delta_bytes = 0
        #: Set by a scrape, cleared by the loop when it publishes.
        self.wanted = False
        self._ready = threading.Event()
        self._lock = threading.Lock()  # scrapes only: the loop never takes it
        self.snapshot: Snapshot | None = None

    # ------------------------------------------------------------------ loop thread

    def delta_sent(self, seq: int, size: int) -> None:
        """Our delta ``seq`` went out, ``size`` bytes (for per-peer lag in bytes)."""
        cum = self._delta_cum
        if seq != self._delta_last + 1:  # never, unless deltas are numbered anew
            cum.clear()
            self._delta_first, self._delta_base = seq, self._delta_bytes
        if len(cum) == DELTA_WINDOW:
            self._delta_base = cum.popleft()
            self._delta_first += 1
        self._delta_bytes += size
        cum.append(self._delta_bytes)
        self._delta_last = seq

    def _bytes_after(self, seq: int) -> int:
        """Bytes of our deltas after ``seq`` (those of the window, if it is older)."""
        cum = self._delta_cum
        if not cum or seq >= self._delta_last:
            return 0
        index = seq - self._delta_first
        return cum[-1] - (self._delta_base if index < 0 else cum[index])

    def publish(self, core: NodeCore, now: float, resp: Callable[[], dict[str, Any]] | None,
                doors: dict[str, int]) -> None:
        """Copy everything a scrape shows (loop thread, when :attr:`wanted`)."""
        self.wanted = False
        keys = core.keys
        timeout = core.settings.peer_timeout_s
        peers: dict[int, tuple[int, float, int, int, int, int, int, float]] = {}
        skews = core.clocks.skew_ms
        for node, peer in core.peers.items():
            hb = peer.heartbeat
            lag = core.seq
            if hb is not None:
                mine = hb.applied.get(core.node_id)
                if mine is not None and mine[0] == core.epoch:
                    lag = max(0, core.seq - mine[1])
            behind = 0
            if hb is not None:
                stream = peer.stream
                behind = hb.seq - stream.seq if stream.epoch == hb.epoch else hb.seq
            heard = peer.last_heard
            peers[node] = (
                int(peer.liveness(now, timeout) is Liveness.LIVE),
                now - (heard if heard is not None else core.started),
                lag, self._bytes_after(core.seq - lag), max(0, behind),
                peer.repairs, peer.keys_repaired, skews.get(node, 0) / 1000.0)
        self.snapshot = Snapshot(
            core.node_id, core.slot_name, self.version, list(core.requests.items()),
            core.stats.copy(), dict(doors),
            len(keys), keys.live, len(keys.slots), len(core.rids), core.bootstrapping,
            self.commits,
            {"request": self.request_duration.snapshot(),
             "commit": self.commit_duration.snapshot(),
             "batch": self.batch_messages.snapshot(),
             "collection": self.collection_delay.snapshot()},
            peers, resp() if resp is not None else {},
            core.collector.lag_s(core.wall_ms), core.collector.pending, len(core.graves))
        self._ready.set()

    # ------------------------------------------------------------------ HTTP thread

    def request_snapshot(self) -> Snapshot | None:
        """Ask the loop for a fresh snapshot; the previous one if it is slow to come."""
        with self._lock:
            self._ready.clear()
            self.wanted = True
            self._ready.wait(SNAPSHOT_WAIT_S)
            return self.snapshot


class _Collector(Collector):
    """Renders a :class:`Snapshot` as metric families (runs in the HTTP thread)."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics
        #: The metrics door, for its own connection figures (None: not served).
        self.door: HttpDoor | None = None

    def collect(self) -> Iterator[Metric]:
        snap = self.metrics.request_snapshot()
        if snap is None:
            return
        yield from _families(snap)
        yield from _doors(snap, self.door.stats() if self.door is not None else None)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


#: Buckets of each histogram in a snapshot: (its key in ``Snapshot.histograms``, name,
#: help).
_HISTOGRAMS = (
    ("request", "zcounter_request_duration_seconds",
     "Client requests: from the poll cycle that read them to their reply's send (so the "
     "commit included); RESP commands too."),
    ("commit", "zcounter_commit_duration_seconds",
     "One group commit to the log, the flush (fdatasync) included."),
    ("batch", "zcounter_batch_messages",
     "Messages read in one poll cycle (one batch: one commit, one delta)."),
    ("collection", "zcounter_collection_delay_seconds",
     "Per collected key: from its deadline (expired) or from when it was found dead "
     "(reset) to its collection here."))

_Family = type[CounterMetricFamily] | type[GaugeMetricFamily]
_C, _G = CounterMetricFamily, GaugeMetricFamily

#: The node's own figures: (kind, name, help, value).
_NODE: tuple[tuple[_Family, str, str, Callable[[Snapshot], float]], ...] = (
    (_C, "zcounter_commits", "Group commits completed.", lambda s: s.commits),
    (_G, "zcounter_keys", "Keys with a state here, reset ones included.", lambda s: s.keys),
    (_G, "zcounter_live_keys", "Keys with an update no reset covers (what KEYS lists and "
     "DBSIZE counts).", lambda s: s.live_keys),
    (_G, "zcounter_slots", "Slots (node incarnations) known to this node.",
     lambda s: s.slots),
    (_G, "zcounter_request_ids", "Request ids remembered for exactly-once.",
     lambda s: s.request_ids),
    (_G, "zcounter_bootstrapping", "1 while a fresh node waits for its first repair.",
     lambda s: int(s.bootstrapping)),
    (_G, "zcounter_collection_lag_seconds", "How long the oldest dead key not collected "
     "yet has been dead: since its deadline (expired) or since it was found dead "
     "(reset); 0 if none.", lambda s: s.collection_lag_s),
    (_G, "zcounter_collection_pending_keys", "Dead keys waiting for every peer's "
     "confirmation (at most one round's 4,000).", lambda s: s.collection_pending),
    (_G, "zcounter_graves", "Collected keys whose dead state is kept for gc_grace_s.",
     lambda s: s.graves))

#: One family per field of a ``Snapshot.peers`` tuple, in the tuple's order, labelled by
#: peer: (kind, name, help).
_PEERS: tuple[tuple[_Family, str, str], ...] = (
    (_G, "zcounter_peer_up", "1 if the peer was heard within peer_timeout_s."),
    (_G, "zcounter_peer_last_heard_seconds", "Seconds since the peer was last heard (since "
     "this node started, if never)."),
    (_G, "zcounter_peer_lag_deltas", "This node's deltas the peer has not reported applying "
     "(its last heartbeat)."),
    (_G, "zcounter_peer_lag_bytes", "Bytes of those deltas."),
    (_G, "zcounter_peer_behind_deltas", "The peer's deltas this node does not hold (a repair "
     "closes the gap)."),
    (_C, "zcounter_repairs", "Repairs completed from the peer."),
    (_C, "zcounter_repair_keys", "Keys that grew here in repairs from the peer."),
    (_G, "zcounter_peer_clock_skew_seconds", "The peer's wall clock minus this node's at "
     "its last heartbeat (0 until known)."))

#: The RESP door's figures (``RespDoor.snapshot``): (kind, name, help, its key).
_RESP: tuple[tuple[_Family, str, str, str], ...] = (
    (_G, "zcounter_resp_clients", "RESP (Redis-protocol) connections open.", "clients"),
    (_G, "zcounter_resp_blocked_clients", "RESP connections waiting in WAIT.", "blocked"),
    (_C, "zcounter_resp_connections", "RESP connections accepted.", "received"),
    (_C, "zcounter_resp_rejected_connections", "RESP connections refused (max clients).",
     "rejected"),
    (_C, "zcounter_resp_protocol_errors", "RESP connections closed for a protocol error.",
     "protocol_errors"))
#: Its counts by label: (name, help, label, its key).
_RESP_BY: tuple[tuple[str, str, str, str], ...] = (
    ("zcounter_resp_commands", "RESP commands by name.", "command", "commands"),
    ("zcounter_resp_disconnects", "RESP connections closed, by reason.", "reason",
     "disconnects"))


def _families(s: Snapshot) -> Iterator[Metric]:
    info = GaugeMetricFamily("zcounter_node_info", "This node: its id, slot and version "
                             "(value 1).", labels=["node", "slot", "version"])
    info.add_metric([str(s.node), s.slot, s.version], 1)
    yield info
    requests = CounterMetricFamily(
        "zcounter_requests", "Client requests answered, by operation and outcome (ok, "
        "duplicate, or the error code).", labels=["op", "outcome"])
    for (op, outcome), count in sorted(s.requests):
        requests.add_metric([op, outcome], count)
    yield requests
    for key, name, doc in _HISTOGRAMS:
        buckets, total = s.histograms[key]
        yield HistogramMetricFamily(name, doc, buckets=buckets, sum_value=total)
    for kind, name, doc, value in _NODE:
        yield kind(name, doc, value=value(s))
    for key, name, doc in exported():
        yield _counter(name, doc, getattr(s.stats, key))
    peers = [kind(name, doc, labels=["peer"]) for kind, name, doc in _PEERS]
    for peer, figures in sorted(s.peers.items()):
        for family, figure in zip(peers, figures, strict=True):
            family.add_metric([str(peer)], figure)
    yield from peers
    r = s.resp
    if r:
        for kind, name, doc, key in _RESP:
            yield kind(name, doc, value=r[key])
        for name, doc, label, key in _RESP_BY:
            family = CounterMetricFamily(name, doc, labels=[label])
            for value_label, count in sorted(r[key].items()):
                family.add_metric([value_label], count)
            yield family


def _doors(s: Snapshot, metrics_door: dict[str, Any] | None) -> Iterator[Metric]:
    """Connections refused or cut short, and the caps, of the doors with TCP
    connections of their own (RESP and this one)."""
    rejected = CounterMetricFamily(
        "zcounter_rejected_connections", "Connections a door refused or closed before "
        "serving them, by door and reason (max_clients, accept_failed, head_timeout, "
        "head_too_large, bad_request, write_timeout).", labels=["door", "reason"])
    cap = GaugeMetricFamily("zcounter_door_max_clients", "Connections a door holds at "
                            "most: min(its setting, its share of the open files limit).",
                            labels=["door"])
    for door, stats in ((Door.RESP, s.resp or None), (Door.METRICS, metrics_door)):
        if stats is None:
            continue
        for reason, count in sorted(stats.get("rejections", {}).items()):
            rejected.add_metric([door.value, reason], count)
        if "max_clients" in stats:
            cap.add_metric([door.value], stats["max_clients"])
    for door in (Door.NATIVE, Door.PUB):
        if f"{door.value}_max_clients" in s.doors:
            rejected.add_metric([door.value, Rejection.MAX_CLIENTS.value],
                                s.doors.get(f"{door.value}_rejected", 0))
            cap.add_metric([door.value], s.doors[f"{door.value}_max_clients"])
    yield rejected
    yield cap
    if metrics_door is not None:
        yield _gauge("zcounter_metrics_clients", "Open connections to /metrics (this "
                     "scrape's included).", metrics_door["clients"])


class MetricsServer:
    """``/metrics`` of one node: its own ``prometheus_client`` registry (the figures
    above plus the process collector: CPU seconds, memory, open files) rendered by
    ``prometheus_client``'s encoders, served by a bounded :class:`HttpDoor`."""

    def __init__(self, address: str, metrics: NodeMetrics,
                 max_clients: int = METRICS_MAX_CLIENTS) -> None:
        host, _, port = address.rpartition(":")
        registry = CollectorRegistry(auto_describe=False)
        collector = _Collector(metrics)
        registry.register(collector)
        ProcessCollector(registry=registry)

        def render(head: Head) -> tuple[str, bytes]:
            # The content negotiation prometheus_client's own server does (OpenMetrics
            # for a Prometheus that asks for it, else the text format).
            encoder, content_type = choose_encoder(head.header("accept"))
            return content_type, encoder(registry)
        self._door = HttpDoor(host.strip("[]"), int(port), render, max_clients)
        collector.door = self._door
        self.port = self._door.port

    def close(self) -> None:
        self._door.close()


def start_metrics(config: ClusterConfig, node_id: int, metrics: NodeMetrics,
                  max_clients: int | None = None) -> MetricsServer | None:
    address = config.node(node_id).metrics
    if address is None:
        return None
    try:
        return MetricsServer(address, metrics, config.settings.metrics_max_clients
                             if max_clients is None else max_clients)
    except OSError as exc:
        raise ConfigError(f"{config.source}: nodes.{node_id}.metrics: cannot listen on "
                          f"{address} ({exc.strerror})") from None


__all__ = ["Histogram", "MetricsServer", "NodeMetrics", "Snapshot", "start_metrics"]
