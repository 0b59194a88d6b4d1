"""``bin/bench --ratelimit``'s pure parts: the schedule, the live-key count, the
summaries and the targets (issue 21).  No cluster is started."""

from __future__ import annotations

import math
from array import array
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from zcounter.bench import main
from zcounter.bench.ratelimit import (
    Blocks,
    RateLimitOptions,
    baseline_index,
    bucket_quantile,
    delay_delta,
    parse_metrics,
    render_ratelimit,
    summarize_run,
    union_quantile,
)
from zcounter.bench.report import check_targets
from zcounter.bench.rlload import (
    Schedule,
    first_sends_from,
    histogram_summary,
    live_at,
)

SCHED = Schedule(keys_per_s=6, increments=5, nodes=3, seconds=4, ttl_ms=2000)


def test_the_schedule_sends_every_keys_first_increment_first_with_the_ttl() -> None:
    bodies = [orjson.loads(SCHED.body(j)) for j in range(SCHED.total)]
    assert SCHED.total == 4 * 6 * 5 and SCHED.keys == 24
    per_key: dict[str, list[dict[str, Any]]] = {}
    for b in bodies:
        per_key.setdefault(b["key"], []).append(b)
    assert len(per_key) == SCHED.keys
    for steps in per_key.values():
        assert len(steps) == 5
        assert steps[0]["ttl_ms"] == 2000
        assert all("ttl_ms" not in b for b in steps[1:])
    # Ids are the positions in the run, so a reply says which step it answers.
    assert [b["id"] for b in bodies] == list(range(SCHED.total))


def test_a_keys_increments_fall_within_its_second_and_go_to_one_node() -> None:
    for j in range(SCHED.total):
        s, n, _ = SCHED.step(j)
        assert s <= SCHED.due_s(j) < s + 1
        assert orjson.loads(SCHED.body(j))["key"] == f"rl:{n}:{s}"
        assert SCHED.node(n) == n % 3
    dues = [SCHED.due_s(j) for j in range(SCHED.total)]
    assert dues == sorted(dues)
    # Round-major: the second round starts after every key's first increment.
    assert [SCHED.step(j)[2] for j in range(30)] == [j // 6 for j in range(30)]
    assert len({SCHED.key_id(*SCHED.step(j)[:2]) for j in range(SCHED.total)}) == SCHED.keys


def test_live_keys_are_those_sent_less_than_a_ttl_ago() -> None:
    sends = [10.0, 10.5, 11.0, 12.0, 13.5]
    assert live_at(sends, 9.9, 2.0) == 0
    assert live_at(sends, 10.0, 2.0) == 1
    assert live_at(sends, 12.0, 2.0) == 3  # 10.0 expired at 12.0 exactly
    assert live_at(sends, 13.6, 2.0) == 2
    assert live_at(sends, 100.0, 2.0) == 0


def test_first_sends_drop_the_keys_never_sent_and_sort() -> None:
    blob = array("d", [3.0, 0.0, 1.0, 0.0, 2.0]).tobytes()
    assert first_sends_from(blob) == [1.0, 2.0, 3.0]


def test_histogram_summary() -> None:
    counts = [0] * 11
    counts[0] = 98
    counts[4] = 1
    counts[10] = 1
    out = histogram_summary(counts, 0.001)
    assert out["n"] == 100
    assert out["p50"] == pytest.approx(0.001)
    assert out["p99"] == pytest.approx(0.005)
    assert out["max"] == pytest.approx(0.011)
    assert math.isnan(histogram_summary([0, 0], 1.0)["p99"])


def test_parse_metrics_takes_the_unlabelled_figures() -> None:
    text = ("# HELP zcounter_keys Keys.\n# TYPE zcounter_keys gauge\nzcounter_keys 12.0\n"
            "# HELP zcounter_collected_keys Collected.\n"
            "# TYPE zcounter_collected_keys counter\nzcounter_collected_keys_total 7.0\n"
            "# HELP zcounter_collection_lag_seconds Lag.\n"
            "# TYPE zcounter_collection_lag_seconds gauge\n"
            "zcounter_collection_lag_seconds 1.5\n"
            "# HELP zcounter_peer_clock_skew_seconds Skew.\n"
            "# TYPE zcounter_peer_clock_skew_seconds gauge\n"
            'zcounter_peer_clock_skew_seconds{peer="2"} 0.1\n')
    assert parse_metrics(text) == {"keys": 12.0, "collected": 7.0, "lag_s": 1.5}


def _delay_text(counts: dict[str, int]) -> str:
    return ("# HELP zcounter_collection_delay_seconds Delay.\n"
            "# TYPE zcounter_collection_delay_seconds histogram\n"
            + "".join(f'zcounter_collection_delay_seconds_bucket{{le="{le}"}} {c}\n'
                      for le, c in counts.items())
            + f"zcounter_collection_delay_seconds_count {max(counts.values())}\n"
            "zcounter_collection_delay_seconds_sum 1.0\n")


def test_parse_metrics_takes_the_delay_histograms_buckets() -> None:
    out = parse_metrics(_delay_text({"0.5": 3, "1.0": 5, "+Inf": 6}))
    assert out == {"delay": {"0.5": 3.0, "1.0": 5.0, "+Inf": 6.0}}


def test_the_delay_quantile_is_the_bucket_bound_of_the_keys_since_the_baseline() -> None:
    before = {"0.5": 100.0, "1.0": 100.0, "5.0": 100.0, "+Inf": 100.0}
    after = {"0.5": 150.0, "1.0": 1090.0, "5.0": 1099.0, "+Inf": 1100.0}
    cum = delay_delta(before, after)
    assert cum == [(0.5, 50.0), (1.0, 990.0), (5.0, 999.0), (math.inf, 1000.0)]
    assert bucket_quantile(cum, 0.5) == 1.0
    assert bucket_quantile(cum, 0.99) == 1.0  # 990 of 1000 within 1 s
    assert bucket_quantile(cum, 0.999) == 5.0
    assert bucket_quantile(delay_delta(None, after), 0.5) == 1.0
    assert bucket_quantile([], 0.99) is None
    assert bucket_quantile([(1.0, 0.0), (math.inf, 0.0)], 0.99) is None


def test_gone_from_every_node_is_the_union_bound_of_the_nodes_delays() -> None:
    # Each node: 0.6 % of its keys later than 1 s.  One node alone: p99 <= 1 s; all
    # three: 1.8 % may be later than 1 s on some node, so the bound is the next bucket.
    node = [(1.0, 994.0), (2.0, 1000.0), (math.inf, 1000.0)]
    assert bucket_quantile(node, 0.99) == 1.0
    assert union_quantile([node, node, node], 0.99) == 2.0
    assert union_quantile([node], 0.99) == 1.0
    late = [(1.0, 0.0), (2.0, 0.0), (math.inf, 10.0)]
    assert union_quantile([node, late], 0.99) == math.inf
    assert union_quantile([node, []], 0.99) is None  # a node without its histogram


def _samples(held: list[int], lags: list[float], rss: list[int]) -> list[dict[str, Any]]:
    """One sample a second; every fifth is full (RSS and disk)."""
    out = []
    for t, (h, lag) in enumerate(zip(held, lags, strict=True)):
        node: dict[str, Any] = {"keys": h, "lag_s": lag, "collected": t * 10}
        full = t % 5 == 0 or t == len(held) - 1
        if full:
            node["rss_kib"] = rss[t]
            node["disk"] = 2 * rss[t]
        out.append({"t": float(t), "wall": 1000.0 + t, "full": full, "nodes": {"1": node}})
    return out


def test_summaries_compare_the_end_with_the_baseline_sample() -> None:
    n = 21
    rss = [1000] * 10 + [1100] * 11
    # 10 keys sent per second from wall 1000: 20 live at any time after 2 s (ttl 2 s).
    sends = [1000.0 + i / 10 for i in range(10 * n)]
    held = [30] * 15 + [70] + [30] * 5
    lags = [0.5] * 12 + [2.5] + [0.5] * 8
    samples = _samples(held, lags, rss)
    assert baseline_index(samples, 10.0) == 10
    out = summarize_run(samples, sends, 1000.0, 2.0, 10.0, keys_per_s=10)
    node = out["per_node"]["1"]
    assert node["rss_ratio"] == pytest.approx(1.0)  # 1100 at 10 s and at the end
    assert node["disk_ratio"] == pytest.approx(1.0)
    # Held/live is judged at every sample after the baseline (every scrape has keys).
    assert node["held_live_max"] == pytest.approx(70 / 20)
    assert node["held_live_samples"] == 11
    # Little's law: (30 * 10 + 70) / 11 held, 20 live, 10 keys a second.
    assert node["mean_dead_held_s"] == pytest.approx(((30 * 10 + 70) / 11 - 20) / 10)
    assert node["lag_max_s"] == 2.5
    assert node["gone_bound_s"] == pytest.approx(3.5)  # + the 1 s sampling interval
    assert out["baseline_t_s"] == 10.0
    # No histogram scraped: no delay figure, and nothing claimed for every node.
    assert node["delay_p99_s"] is None and out["gone_p99_all_s"] is None
    # After the load (here from 14.5 s) live keys fall away: those samples are not judged.
    assert summarize_run(samples, sends, 1000.0, 2.0, 10.0, 14.5)["per_node"]["1"][
        "held_live_max"] == pytest.approx(30 / 20)


def test_the_delays_are_those_collected_between_the_baseline_and_the_last_scrape() -> None:
    samples = _samples([30] * 21, [0.5] * 21, [1000] * 21)
    samples[10]["nodes"]["1"]["delay"] = {"1.0": 10.0, "5.0": 10.0, "+Inf": 10.0}
    samples[20]["nodes"]["1"]["delay"] = {"1.0": 10.0, "5.0": 20.0, "+Inf": 20.0}
    sends = [1000.0 + i / 10 for i in range(210)]
    out = summarize_run(samples, sends, 1000.0, 2.0, 10.0, keys_per_s=10)
    node = out["per_node"]["1"]
    assert node["delay_n"] == 10 and node["delay_p99_s"] == 5.0
    assert out["gone_p99_all_s"] == 5.0


def test_an_empty_run_summarizes_to_nothing() -> None:
    assert summarize_run([], [], 0.0, 2.0, 60.0) == {"per_node": {}}


def test_blocks_give_each_key_its_increments_in_a_row() -> None:
    b = Blocks(100, 5, 12)
    assert list(b.table[:12]) == [100] * 5 + [101] * 5 + [102] * 2
    assert b.mask + 1 == 16 and b[16] == 100


def _section(gone: float | None = 2.0, **per: Any) -> dict[str, Any]:
    node = {"rss_ratio": 1.1, "disk_ratio": 1.0, "held_live_max": 2.0, "gone_bound_s": 3.0,
            "rss_base_kib": 50_000, "rss_end_kib": 55_000, "disk_base": 10**6,
            "disk_end": 10**6, "lag_max_s": 2.0, "collected_end": 5, "expired_end": 5,
            **per}
    return {"options": RateLimitOptions(seconds=120).to_json(),
            "load": {"acked": 10, "scheduled": 10, "ops_per_s": 10.0, "errors": 0,
                     "count_mismatches": 0, "lateness_s": histogram_summary([1], 0.001),
                     "probes": {"keys_every": 600, "sent": 3, "answered": 3,
                                "violations": 0}},
            "summary": {"per_node": {"1": node, "2": dict(node)}, "baseline_t_s": 60.0,
                        "gone_p99_all_s": gone},
            "throughput": {"ratio": 0.95, "ratios": [0.9, 0.95, 1.0],
                           "plain_ops_per_s": 100.0, "ttl_ops_per_s": 95.0}}


def test_the_issue_21_targets_are_checked_only_when_the_section_ran() -> None:
    assert not [t for t in check_targets({"version": "x"}) if t["issue"] == 21]
    checks = [t for t in check_targets({"ratelimit": _section()}) if t["issue"] == 21]
    assert len(checks) == 6 and all(c["met"] for c in checks), checks
    missed = {c["target"]: c for c in check_targets({"ratelimit": _section(
        rss_ratio=1.3, gone=None)}) if c["issue"] == 21}
    assert [c["met"] for c in missed.values()].count(False) == 1
    assert [c["met"] for c in missed.values()].count(None) == 1  # no histogram: n/a
    late = [c for c in check_targets({"ratelimit": _section(gone=7.5)})
            if c["issue"] == 21 and not c["met"]]
    assert len(late) == 1 and "7.5" in late[0]["detail"], late


def test_render_prints_every_node_and_the_paired_ratio() -> None:
    text = render_ratelimit(_section())
    assert "0.95x" in text and "\n   1 " in text.replace("  1  ", "\n   1 ")
    assert "every node, 50 ms after" in text


def test_the_cli_offers_the_section() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert "--ratelimit" in result.output and "--minutes" in result.output
