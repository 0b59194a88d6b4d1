"""Prometheus metrics of real node processes: the exposition parsed with
``prometheus_client``'s own parser, and a real Prometheus server (Debian ``prometheus``)
scraping a three-node cluster, asked through its HTTP API."""

from __future__ import annotations

import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from harness import LocalCluster, running_cluster, wait_for
from prometheus_client.parser import text_string_to_metric_families

from zcounter.procs import free_port, stop_processes

pytestmark = pytest.mark.integration

DEADLINE_S = 60.0


@pytest.fixture(scope="module")
def mc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with running_cluster(tmp_path_factory.mktemp("metrics") / "cluster", resp=True,
                         metrics=True) as c:
        yield c


def scrape(c: LocalCluster, node: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Sample name -> labels -> value, parsed by prometheus_client."""
    with urllib.request.urlopen(c.metrics_url(node), timeout=10) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def one(samples: dict[str, dict[Any, float]], name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


def test_every_listed_metric_is_exposed_with_prometheus_names(mc: LocalCluster) -> None:
    with mc.client(1, timeout=5) as c:
        c.increment(key="m:a", request_id="m-1")
        c.increment(key="m:a", request_id="m-1")  # a duplicate: counted once
    with mc.raw(1) as raw:
        assert raw.call(b"not json")["ok"] is False  # a bad request
    resp = redis.Redis(host="127.0.0.1", port=mc.resp_port(1), protocol=2)
    try:
        assert resp.incr("m:b") == 1

        def ready() -> dict[str, dict[Any, float]] | None:
            s = scrape(mc, 1)
            ok = (one(s, "zcounter_peer_up", peer="2") == 1
                  and one(s, "zcounter_peer_up", peer="3") == 1
                  and one(s, "zcounter_resp_clients") == 1)
            return s if ok else None
        s = wait_for(ready, DEADLINE_S, interval=0.2, what="peers up and one RESP client")
    finally:
        resp.close()
    assert one(s, "zcounter_requests_total", op="increment", outcome="ok") == 2
    assert one(s, "zcounter_requests_total", op="increment", outcome="duplicate") == 1
    assert one(s, "zcounter_duplicate_requests_total") == 1
    assert one(s, "zcounter_bad_requests_total") == 1
    assert one(s, "zcounter_dropped_peer_messages_total") == 0
    assert one(s, "zcounter_increments_total") == 2
    for histogram in ("zcounter_request_duration_seconds", "zcounter_commit_duration_seconds",
                      "zcounter_batch_messages"):
        assert one(s, histogram + "_count") > 0 and one(s, histogram + "_sum") > 0
        assert one(s, histogram + "_bucket", le="+Inf") == one(s, histogram + "_count")
    assert one(s, "zcounter_keys") == 2 and one(s, "zcounter_live_keys") == 2
    assert one(s, "zcounter_slots") >= 1 and one(s, "zcounter_request_ids") == 1
    assert one(s, "zcounter_commits_total") > 0
    assert one(s, "zcounter_bootstrap_repairs_total") >= 0 and one(s, "zcounter_bootstrapping") == 0
    for peer in ("2", "3"):
        assert 0 <= one(s, "zcounter_peer_last_heard_seconds", peer=peer) < 5
        assert one(s, "zcounter_peer_lag_deltas", peer=peer) >= 0
        assert one(s, "zcounter_peer_lag_bytes", peer=peer) >= 0
        assert one(s, "zcounter_peer_behind_deltas", peer=peer) >= 0
        assert one(s, "zcounter_repairs_total", peer=peer) >= 0
        assert one(s, "zcounter_repair_keys_total", peer=peer) >= 0
    assert one(s, "zcounter_repairs_started_total") >= 0
    assert one(s, "zcounter_resp_commands_total", command="incrby") == 1  # redis-py: INCRBY k 1
    assert one(s, "zcounter_node_info", node="1", slot=mc.status(1)["slot"],
               version=__import__("zcounter").__version__) == 1
    assert one(s, "process_cpu_seconds_total") > 0  # prometheus_client's process collector
    for name in s:
        assert name.startswith(("zcounter_", "process_")), name


def test_replication_lag_is_seen_while_a_peer_is_paused(mc: LocalCluster) -> None:
    mc.pause(3)
    try:
        with mc.client(1, timeout=5) as c:
            for i in range(5):
                c.increment(key=f"lag:{i}")

        def lagging() -> bool:
            s = scrape(mc, 1)
            return (one(s, "zcounter_peer_up", peer="3") == 0
                    and one(s, "zcounter_peer_lag_deltas", peer="3") >= 1
                    and one(s, "zcounter_peer_lag_bytes", peer="3") > 0)
        wait_for(lagging, DEADLINE_S, interval=0.2, what="node 3 to show as down and behind")
    finally:
        mc.resume(3)

    def caught_up() -> bool:
        s = scrape(mc, 1)
        return (one(s, "zcounter_peer_up", peer="3") == 1
                and one(s, "zcounter_peer_lag_deltas", peer="3") == 0)
    wait_for(caught_up, DEADLINE_S, interval=0.2, what="node 3 to catch up")


@pytest.mark.tool("prometheus")
def test_a_real_prometheus_scrapes_every_node(mc: LocalCluster, tmp_path: Path) -> None:
    port = free_port()
    targets = ", ".join(f'"{mc.config.node(n).metrics}"' for n in mc.ids)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n"
        "scrape_configs:\n  - job_name: zcounter\n"
        f"    static_configs:\n      - targets: [{targets}]\n")
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=log,
        start_new_session=True)
    try:
        def query(expr: str) -> list[dict[str, Any]]:
            url = (f"http://127.0.0.1:{port}/api/v1/query?"
                   + urllib.parse.urlencode({"query": expr}))
            try:
                with urllib.request.urlopen(url, timeout=5) as reply:
                    body = orjson.loads(reply.read())
            except OSError:
                assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
                return []
            assert body["status"] == "success"
            result: list[dict[str, Any]] = body["data"]["result"]
            return result

        def all_up() -> list[dict[str, Any]] | None:
            up = query('up{job="zcounter"}')
            return up if len(up) == 3 and all(r["value"][1] == "1" for r in up) else None
        up = wait_for(all_up, DEADLINE_S, interval=0.25, what="Prometheus to find 3 nodes up")
        assert {r["metric"]["instance"] for r in up} == {
            mc.config.node(n).metrics for n in mc.ids}
        info = wait_for(lambda: (r if len(r := query("zcounter_node_info")) == 3 else None),
                        DEADLINE_S, interval=0.25, what="zcounter_node_info of 3 nodes")
        assert sorted(r["metric"]["node"] for r in info) == ["1", "2", "3"]
        peers = query("zcounter_peer_up")
        assert len({(r["metric"]["instance"], r["metric"]["peer"]) for r in peers}) == 6
        assert all(r["value"][1] == "1" for r in peers)
    finally:
        stop_processes([proc])
        log.close()


def test_scraping_under_load_does_not_stall_requests(mc: LocalCluster) -> None:
    """A guard, not the measurement (that is ``bin/bench --scrape-cost``, WRITEUP.md):
    scraping every 100 ms while a pipelined load runs answers every request and every
    scrape."""
    stop = threading.Event()
    scrapes: list[float] = []

    def scraper() -> None:
        while not stop.wait(0.1):
            started = time.perf_counter()
            scrape(mc, 2)
            scrapes.append(time.perf_counter() - started)
    thread = threading.Thread(target=scraper, daemon=True)
    thread.start()
    try:
        with mc.raw(2) as raw:
            replies = raw.pipeline(({"op": "increment", "key": f"load:{i % 10}"}
                                    for i in range(3000)), window=64, timeout=DEADLINE_S)
    finally:
        stop.set()
        thread.join(10)
    assert all(r["ok"] for r in replies)
    assert len(scrapes) >= 1 and max(scrapes) < 5.0
