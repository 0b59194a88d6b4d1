"""Metrics (zcounter.runtime.metrics) without a server: histograms, per-peer lag in bytes,
the snapshot hand-over between the loop and a scrape, and the exposition as
prometheus_client renders and parses it."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).parent.parent / "protocol"))
from corelink import Link

from zcounter.protocol.messages import Add
from zcounter.runtime.metrics import DELTA_WINDOW, Histogram, NodeMetrics, _Collector


def test_histogram_buckets_are_cumulative_with_le_bounds() -> None:
    h = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 2.0):
        h.observe(value)
    buckets, total = h.snapshot()
    assert buckets == [("0.1", 2), ("1.0", 3), ("+Inf", 4)]  # le: 0.1 falls in "0.1"
    assert total == 2.65


def test_lag_in_bytes_counts_the_deltas_a_peer_has_not_applied() -> None:
    m = NodeMetrics("t")
    for seq in range(1, 11):
        m.delta_sent(seq, 100 + seq)
    assert m._bytes_after(10) == 0
    assert m._bytes_after(8) == 109 + 110
    assert m._bytes_after(0) == sum(100 + s for s in range(1, 11))
    for seq in range(11, DELTA_WINDOW + 20):  # the window slides
        m.delta_sent(seq, 1)
    assert m._bytes_after(DELTA_WINDOW + 18) == 1
    assert m._bytes_after(0) == DELTA_WINDOW  # at least the window's


def test_a_scrape_gets_a_fresh_snapshot_from_the_loop_thread() -> None:
    link = Link.of(3)
    link.run(0.5)
    link.request(1, Add(1, "k", 5))
    link.flush()
    m = NodeMetrics("9.9")
    m.request_duration.observe(0.002)
    core = link.cores[1]
    stop = threading.Event()

    def loop() -> None:  # the node's loop: publish when a scrape asks
        while not stop.is_set():
            if m.wanted:
                m.publish(core, link.now, None, {})
            time.sleep(0.001)
    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(m))
        text = generate_latest(registry).decode()
    finally:
        stop.set()
        thread.join(5)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("zcounter_requests_total", (("op", "increment"), ("outcome", "ok")))] == 1
    assert samples[("zcounter_peer_up", (("peer", "2"),))] == 1
    assert samples[("zcounter_keys", ())] == 1
    assert samples[("zcounter_request_duration_seconds_count", ())] == 1
    assert samples[("zcounter_node_info", (("node", "1"), ("slot", core.slot_name),
                                           ("version", "9.9")))] == 1
    assert "# TYPE zcounter_increments_total counter" in text


def test_a_scrape_is_served_from_the_last_snapshot_when_the_loop_is_busy() -> None:
    link = Link.of(1)
    m = NodeMetrics("t")
    m.publish(link.cores[1], 0.0, None, {})
    started = time.monotonic()
    snap = m.request_snapshot()  # nobody publishes: waits SNAPSHOT_WAIT_S, then the last
    assert snap is not None and snap.node == 1
    assert time.monotonic() - started < 5


#: Every counter the node's statistics export, in exposition order (pinned: a metric
#: renamed or dropped is a breaking change for dashboards; see CHANGELOG).
EXPORTED_COUNTERS = [
    "zcounter_increments", "zcounter_decrements", "zcounter_resets",
    "zcounter_duplicate_requests", "zcounter_bad_requests", "zcounter_dropped_peer_messages",
    "zcounter_repairs_started", "zcounter_repairs_aborted", "zcounter_repair_keys_given_back",
    "zcounter_bootstrap_repairs", "zcounter_deltas_sent", "zcounter_heartbeats_sent",
    "zcounter_peer_sent_messages", "zcounter_peer_sent_bytes", "zcounter_peer_received_bytes",
    "zcounter_send_queue_full", "zcounter_replies_undeliverable",
    "zcounter_forbidden_requests", "zcounter_own_slot_ahead", "zcounter_held_refused",
    "zcounter_oversized_messages", "zcounter_connections_cut", "zcounter_send_failed",
    "zcounter_expired_keys", "zcounter_collected_keys", "zcounter_stale_states_dropped",
    "zcounter_clock_skew_warnings"]


def test_every_exported_statistic_renders_under_its_metric_name() -> None:
    """The statistics type names its metrics (no renaming table in metrics.py): each
    exported field renders as its counter with its own value, and the set is pinned."""
    from dataclasses import fields

    from zcounter.protocol.stats import exported
    from zcounter.runtime.metrics import _families

    link = Link.of(3)
    core = link.cores[1]
    for i, f in enumerate(fields(core.stats)):
        setattr(core.stats, f.name, 100 + i)
    m = NodeMetrics("t")
    m.publish(core, 0.0, None, {})
    assert m.snapshot is not None
    rendered = {f.name: f.samples[0].value for f in _families(m.snapshot)
                if f.type == "counter" and f.samples and not f.samples[0].labels}
    assert [name for _, name, _ in exported()] == EXPORTED_COUNTERS
    for key, name, _ in exported():
        assert rendered[name] == getattr(core.stats, key), name
    core.stats.increments += 1  # the snapshot is a copy: the loop goes on counting
    assert m.snapshot.stats.increments == 100
