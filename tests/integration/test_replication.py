"""Real node processes on loopback: replication and durability through crashes (kill -9),
wiped data directories and stopped processes (SIGSTOP), with one key and with thousands.

The many-key tests write a few thousand keys (increments, decrements and resets) through
a pipelined raw DEALER, so the faults hit a keyspace whose repair takes many pages, and
end with every node holding the same state of every key, equal to the model.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import pytest
from harness import FAST_SETTINGS, LocalCluster, wait_for

pytestmark = pytest.mark.integration

#: Keys written by the many-key tests (each test writes this many, in two waves).
MANY = 3000


def test_increments_at_random_nodes_converge_on_all_nodes(cluster: LocalCluster):
    rng = random.Random(7)
    clients = {n: cluster.client(n) for n in cluster.ids}
    total = 0
    try:
        for _ in range(200):
            by = rng.randint(1, 5)
            clients[rng.choice(cluster.ids)].increment(by=by)
            total += by
    finally:
        for c in clients.values():
            c.close()
    assert cluster.wait_converged(total) == total


def test_sigkill_and_restart_keeps_the_count(cluster: LocalCluster):
    with cluster.client(2) as c:
        for _ in range(50):
            c.increment()
    cluster.kill(2)
    cluster.start(2)
    assert cluster.count(2) >= 50
    cluster.wait_converged(50)


def test_restart_with_wiped_data_loses_nothing_and_never_reuses_its_slot(cluster: LocalCluster):
    with cluster.client(1) as c:
        for _ in range(30):
            c.increment()
    cluster.wait_converged(30)
    old_slot = cluster.status(1)["slot"]
    cluster.kill(1)
    shutil.rmtree(cluster.data_dir(1))
    cluster.start(1)
    # Peers still hold the old slot; the wiped node pulls it back by repair.
    cluster.wait_converged(30)
    with cluster.client(1) as c:
        assert c.status(1)["slot"] != old_slot
        for _ in range(5):
            c.increment()
    cluster.wait_converged(35)


def liveness(cluster: LocalCluster, observer: int, node: int) -> str:
    return str(cluster.status(observer)["peers"][str(node)]["liveness"])


def pause_until_silent(cluster: LocalCluster, node: int) -> None:
    """SIGSTOP ``node`` once every other node hears it, and return when every other node
    has found it silent (past the peer timeout)."""
    others = [n for n in cluster.ids if n != node]
    wait_for(lambda: all(liveness(cluster, o, node) == "live" for o in others), 10.0,
             what=f"every node to hear node {node}")
    cluster.pause(node)
    wait_for(lambda: all(liveness(cluster, o, node) == "silent" for o in others), 10.0,
             what=f"every node to find node {node} silent")


def test_paused_node_catches_up_after_sigcont(cluster: LocalCluster):
    wait_for(lambda: all(liveness(cluster, n, 3) == "live" for n in (1, 2)), 10.0,
             what="nodes 1 and 2 to hear node 3")
    cluster.pause(3)
    try:
        with cluster.client(1) as c:
            for _ in range(40):
                c.increment()
        # Past the peer timeout: the others see node 3 as silent.
        wait_for(lambda: all(liveness(cluster, n, 3) == "silent" for n in (1, 2)), 10.0,
                 what="nodes 1 and 2 to find node 3 silent")
    finally:
        cluster.resume(3)
    cluster.wait_converged(40, nodes=cluster.ids)


def test_every_node_restarted_resumes_everything(cluster: LocalCluster):
    with cluster.client(3) as c:
        for _ in range(10):
            c.increment(by=3)
    cluster.wait_converged(30)
    for n in cluster.ids:
        cluster.kill(n)
    for n in cluster.ids:
        cluster.start(n, wait=False)
    for n in cluster.ids:
        cluster.wait_ready(n)
    assert cluster.counts() == {1: 30, 2: 30, 3: 30}


# --------------------------------------------------------------------------- many keys


class Model:
    """What a many-key workload must end with: key -> count, given that every reset is
    issued only where the resetting node has seen every update of that key."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.counts: dict[str, int] = {}

    def updates(self, keys: list[str]) -> list[dict[str, Any]]:
        """One increment or decrement (by 1..1000) of each key, in random order."""
        out = []
        for key in self.rng.sample(keys, len(keys)):
            by = self.rng.randint(1, 1000)
            op = self.rng.choice(("increment", "decrement"))
            self.counts[key] = self.counts.get(key, 0) + (by if op == "increment" else -by)
            out.append({"op": op, "key": key, "by": by})
        return out

    def resets(self, keys: list[str]) -> list[dict[str, Any]]:
        for key in keys:
            self.counts[key] = 0
        return [{"op": "reset", "key": key} for key in keys]


def pipelined(cluster: LocalCluster, node: int, requests: list[dict[str, Any]]) -> None:
    """Write through a raw DEALER, many requests in flight; every one must succeed."""
    with cluster.raw(node) as raw:
        replies = raw.pipeline(requests, window=256, timeout=60.0)
    failed = [r for r in replies if not r.get("ok")]
    assert not failed, f"{len(failed)} pipelined requests failed, e.g. {failed[:3]}"


def spread(cluster: LocalCluster, nodes: list[int], requests: list[dict[str, Any]]) -> None:
    """Send ``requests`` round-robin to ``nodes`` (pipelined per node)."""
    for i, node in enumerate(nodes):
        pipelined(cluster, node, requests[i::len(nodes)])


def assert_identical(cluster: LocalCluster, model: Model) -> None:
    """Every node holds the same state of every key, with the model's counts, lists the
    same live keys, and reports the same hash-tree root."""
    cluster.wait_keys_converged(model.counts, timeout=60.0)
    cluster.wait_identical(timeout=30.0)
    listings = {n: cluster.listing(n) for n in cluster.live()}
    first = listings[cluster.live()[0]]
    assert all(listing == first for listing in listings.values())
    assert set(first) <= set(model.counts)
    assert all(first[k] == model.counts[k] for k in first)


def test_many_keys_survive_kill_9_and_a_restart_that_must_repair_them(cluster: LocalCluster):
    model = Model(seed=11)
    keys = [f"kill/{i:05d}" for i in range(MANY)]
    spread(cluster, [1, 2, 3], model.updates(keys))
    assert_identical(cluster, model)
    # SIGKILL right after a wave acknowledged at node 2 (wait=local: on its disk only;
    # its deltas may die with it): restarted, it must still hold and spread every one.
    pipelined(cluster, 2, model.updates(keys[:1000]))
    cluster.kill(2)
    # While node 2 is down, the others change thousands of keys, and reset some that
    # node 2's last wave did not touch, once both of them have seen every update of them.
    spread(cluster, [1, 3], model.updates(keys))
    rest = keys[1000:]
    cluster.wait_keys_converged({k: model.counts[k] for k in rest}, nodes=[1, 3])
    spread(cluster, [1, 3], model.resets(rest[::7]))
    cluster.start(2)
    assert_identical(cluster, model)
    # The restarted node takes writes of its own again.
    pipelined(cluster, 2, model.updates(keys[:500]))
    assert_identical(cluster, model)


def test_many_keys_come_back_to_a_node_restarted_with_a_wiped_directory(
        cluster: LocalCluster):
    model = Model(seed=12)
    keys = [f"wipe/{i:05d}" for i in range(MANY)]
    spread(cluster, [1, 2, 3], model.updates(keys))
    assert_identical(cluster, model)  # resets below observe every update so far
    spread(cluster, [2, 3], model.resets(keys[::11]))
    spread(cluster, [1, 2, 3], model.updates(keys[::3]))
    assert_identical(cluster, model)
    old_slot = cluster.status(1)["slot"]
    cluster.kill(1)
    shutil.rmtree(cluster.data_dir(1))
    cluster.start(1)
    # A wiped node answers a request only after a peer sent it the keys involved: its
    # very first read of every key already shows what the cluster holds.
    first = cluster.get_counts(1, keys)
    assert first == {k: model.counts[k] for k in keys}
    assert cluster.status(1)["slot"] != old_slot
    assert_identical(cluster, model)
    pipelined(cluster, 1, model.updates(keys[::2]) + model.resets(keys[1::10]))
    assert_identical(cluster, model)


def test_many_keys_reach_a_node_resumed_after_sigstop(cluster: LocalCluster):
    model = Model(seed=13)
    keys = [f"stop/{i:05d}" for i in range(MANY)]
    spread(cluster, [1, 2, 3], model.updates(keys[:1000]))
    assert_identical(cluster, model)
    pause_until_silent(cluster, 3)
    try:
        spread(cluster, [1, 2], model.updates(keys))
        cluster.wait_keys_converged(model.counts, nodes=[1, 2])
        spread(cluster, [1, 2], model.resets(keys[::13]))
        spread(cluster, [2, 1], model.updates(keys[::5]))
        cluster.wait_keys_converged(model.counts, nodes=[1, 2], timeout=60.0)
    finally:
        cluster.resume(3)
    assert_identical(cluster, model)


def test_a_node_started_empty_completes_its_bootstrap_and_then_serves_alone(tmp_path: Path):
    """A node whose data directory was just created holds each request until a peer has
    sent it the keys involved, until its first repair completes.  That repair must come
    even when nothing else asks for one: here node 2 starts after node 1's first
    heartbeat, so the first thing it hears of node 1 is its delta number 1, and from
    then on it holds every delta node 1 sent (heartbeats are slow, node 3 never runs).
    Once repaired, node 2 serves alone what it holds."""
    settings = {**FAST_SETTINGS, "heartbeat_interval_s": 3.0, "peer_timeout_s": 10.0}
    with LocalCluster(tmp_path / "c", settings=settings) as cluster:
        cluster.start(1)
        cluster.start(2)
        with cluster.client(1) as c:
            for _ in range(20):
                c.increment()
        wait_for(lambda: not cluster.status(2)["bootstrapping"], 5.0,
                 what="node 2 to complete its bootstrap")
        cluster.kill(1)
        assert cluster.count(2) == 20
        with cluster.client(2, timeout=1.0) as c:
            assert c.increment(key="alone") == 1
