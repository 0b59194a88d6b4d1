"""Collection with three real node processes: dead keys leave every node's memory and
data directory within seconds, and wait for a stopped node, naming it in status, until
it comes back.

Dead keys here are reset ones (nothing since the reset); expired ones take the same path
(tests/protocol/test_collect.py drives both through the core).
"""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import pytest
from harness import FAST_SETTINGS, LocalCluster, wait_for

pytestmark = pytest.mark.integration

KEYS = [f"gc:{i}" for i in range(60)]


def dead_keys(cluster: LocalCluster, keys: list[str]) -> None:
    """Each key incremented on one node and reset, both acknowledged by all three."""
    for i, key in enumerate(keys):
        with cluster.client(1 + i % 3, timeout=5) as c:
            c.increment(key=key, wait="all")
            c.reset(key, wait="all")


def held_keys(cluster: LocalCluster, node: int) -> int:
    return int(cluster.status(node, timeout=5)["keys"])


def checkpoint_rows(data_dir: Path, keys: list[str]) -> list[str]:
    with sqlite3.connect(data_dir / "zcounter.sqlite3") as conn:
        marks = ",".join("?" * len(keys))
        return [row[0] for row in conn.execute(
            f"SELECT key FROM counters WHERE key IN ({marks})", keys)]


def collected_everywhere(cluster: LocalCluster) -> float:
    """A live key and KEYS dead; returns how long until every node had collected them."""
    cluster.start_all()
    with cluster.client(1, timeout=5) as c:
        c.increment(key="alive", wait="all")
    dead_keys(cluster, KEYS)
    started = time.monotonic()
    wait_for(lambda: all(held_keys(cluster, n) == 1 for n in cluster.ids), 10.0,
             interval=0.05, what="every node to collect the dead keys")
    return time.monotonic() - started


def test_dead_keys_are_collected_on_every_node(tmp_path: Path) -> None:
    with LocalCluster(tmp_path / "c", settings=FAST_SETTINGS) as cluster:
        took = collected_everywhere(cluster)
        for n in cluster.ids:
            status = cluster.status(n)
            assert status["stats"]["collected_keys"] >= len(KEYS)
            assert status["collection"]["pending"] == 0
            assert status["collection"]["waiting_for"] == {}
        assert took < 5.0, took
        assert cluster.count(2, "alive") == 1


def test_collected_keys_leave_the_data_directory(tmp_path: Path) -> None:
    with LocalCluster(tmp_path / "c", settings=FAST_SETTINGS) as cluster:
        collected_everywhere(cluster)
        cluster.stop_all()  # a graceful stop checkpoints
        for n in cluster.ids:
            assert checkpoint_rows(cluster.data_dir(n), KEYS) == [], n
            assert checkpoint_rows(cluster.data_dir(n), ["alive"]) == ["alive"], n


def test_a_stopped_node_holds_collection_back_until_it_returns(tmp_path: Path) -> None:
    with LocalCluster(tmp_path / "c", settings=FAST_SETTINGS) as cluster:
        cluster.start_all()
        cluster.kill(3, signal.SIGTERM)
        stopped_at = time.time()
        for i, key in enumerate(KEYS[:10]):
            with cluster.client(1 + i % 2, timeout=5) as c:
                c.increment(key=key, wait="majority")
                c.reset(key, wait="majority")

        def waiting() -> dict[str, float] | None:
            collection = cluster.status(1)["collection"]
            return collection["waiting_for"] if collection["pending"] == 10 else None
        waits = wait_for(waiting, 10.0, interval=0.1, what="node 1 to wait for node 3")
        assert list(waits) == ["3"] and stopped_at - 1 <= waits["3"] <= time.time()
        assert held_keys(cluster, 1) == 10 and held_keys(cluster, 2) == 10
        shown = cluster.cli("--node", "1", "status", timeout=30)
        assert "waiting for node 3 for" in shown.stdout, (shown.stdout, shown.stderr)
        cluster.start(3)
        wait_for(lambda: all(held_keys(cluster, n) == 0 for n in cluster.ids), 15.0,
                 interval=0.1, what="collection to resume once node 3 is back")
        assert cluster.status(1)["collection"]["waiting_for"] == {}
