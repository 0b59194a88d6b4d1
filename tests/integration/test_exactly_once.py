"""Exactly-once updates with request ids, against real node processes.

A lost *reply* is the fault that makes retries dangerous: the node applied and committed
the update, the client cannot know, and retries.  These tests lose replies on purpose
(``lossy_proxy``), repeat request ids through the CLI, across nodes, and across a crash,
and check that each distinct request id counts exactly once - increments, decrements and
resets, per key - and where that stops.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from harness import FAST_SETTINGS, LocalCluster, running_cluster, wait_for

from zcounter import Client
from zcounter.config import ClusterConfig, NodeAddress
from zcounter.errors import Indeterminate, Unavailable

from .lossy_proxy import LossyProxy

pytestmark = pytest.mark.integration

#: The application's own retries of one operation (each a full client call with its own
#: retries): bounded, so a node that never answers fails the test instead of hanging it.
APP_RETRIES = 100

T = TypeVar("T")


def until_answered(call: Callable[[], T]) -> T:
    """Repeat ``call`` while it ends Unavailable (a lost reply), at most APP_RETRIES times."""
    for _ in range(APP_RETRIES):
        try:
            return call()
        except Unavailable:
            continue
    raise AssertionError(f"no answer in {APP_RETRIES} attempts")


def via_proxy(config: ClusterConfig, node: int, endpoint: str) -> ClusterConfig:
    """The same cluster, except that clients reach ``node`` through ``endpoint``."""
    addr = config.node(node)
    nodes = {**config.nodes, node: NodeAddress(node, endpoint, addr.pub)}
    return dataclasses.replace(config, nodes=nodes)


def stat(cluster: LocalCluster, node: int, name: str) -> int:
    with cluster.client(node) as c:
        return int(c.status(node)["stats"][name])


@pytest.mark.parametrize("wait", ["local", "majority"])
def test_lost_replies_with_retries_count_each_request_id_once(
        cluster: LocalCluster, wait: str) -> None:
    distinct = 60
    with LossyProxy(cluster.config.node(1).router, drop_replies=0.3, seed=20240601) as proxy:
        config = via_proxy(cluster.config, 1, proxy.endpoint)
        # Short attempts so a lost reply costs ~0.1 s; the client retries with the same id.
        with Client(node=1, config=config, timeout=0.5, retries=4) as c:
            for i in range(distinct):
                rid = f"lossy-{wait}-{i}"
                # The application's own retry, still with the same id.
                until_answered(lambda rid=rid: c.increment(wait=wait, request_id=rid))
        assert proxy.stats.dropped_replies > 0, "the proxy must actually lose replies"
    # Every retry after a lost reply reached a node that had already applied it.
    assert stat(cluster, 1, "duplicates") >= 1
    assert stat(cluster, 1, "increments") == distinct
    assert cluster.wait_converged(distinct) == distinct


def test_without_request_id_reuse_a_lost_reply_counts_twice(cluster: LocalCluster) -> None:
    """Control: the same losses, but the application retries with a *fresh* id (what
    Riak/Cassandra/Akka counters do): the count drifts above the number of operations.
    This shows the test above would catch a node that ignored request ids."""
    with LossyProxy(cluster.config.node(1).router, drop_replies=0.5, seed=7) as proxy:
        config = via_proxy(cluster.config, 1, proxy.endpoint)
        with Client(node=1, config=config, timeout=0.2, retries=0) as c:
            for _ in range(12):
                until_answered(c.increment)  # a fresh random request id on every call
        lost = proxy.stats.dropped_replies
    assert lost > 0
    assert cluster.wait_converged(12 + lost) == 12 + lost


def test_lost_replies_to_decrements_and_resets_of_many_keys_count_once(
        cluster: LocalCluster) -> None:
    """Increments, decrements and resets of 10 keys through a proxy losing 30% of the
    replies, each retried with its own request id until answered: every key ends at what
    each operation applied once gives (a reset applied twice would wipe what came between
    its two applications; a decrement applied twice would show)."""
    rng = random.Random(5)
    keys = [f"eo-{i}" for i in range(10)]
    model = dict.fromkeys(keys, 0)
    with LossyProxy(cluster.config.node(2).router, drop_replies=0.3, seed=99) as proxy:
        config = via_proxy(cluster.config, 2, proxy.endpoint)
        with Client(node=2, config=config, timeout=0.5, retries=4) as c:
            for i in range(150):
                key, by, rid = rng.choice(keys), rng.randint(1, 9), f"eo-op-{i}"
                kind = rng.choices(["increment", "decrement", "reset"], [5, 4, 1])[0]
                if kind == "reset":
                    got = until_answered(lambda k=key, r=rid: c.reset(k, request_id=r))
                    model[key] = 0
                elif kind == "increment":
                    got = until_answered(lambda k=key, b=by, r=rid: c.increment(
                        b, key=k, request_id=r))
                    model[key] += by
                else:
                    got = until_answered(lambda k=key, b=by, r=rid: c.decrement(
                        b, key=k, request_id=r))
                    model[key] -= by
                # One client, one node: each answer is the key's count right after it.
                assert got == model[key], (i, kind, key)
        assert proxy.stats.dropped_replies > 0
    assert cluster.stat(2, "duplicates") >= 1
    assert cluster.wait_keys_converged(model) == model


def test_cli_same_request_id_counts_once_at_one_node(cluster: LocalCluster) -> None:
    first = cluster.cli("--node", "1", "increment", "--request-id", "cli-dup-1")
    second = cluster.cli("--node", "1", "increment", "--request-id", "cli-dup-1")
    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert first.stdout.strip() == second.stdout.strip() == "1"
    got = cluster.cli("--node", "1", "getCount")
    assert (got.returncode, got.stdout.strip()) == (0, "1")
    assert stat(cluster, 1, "duplicates") == 1


def test_cli_request_id_counts_once_across_nodes_after_replication(
        cluster: LocalCluster) -> None:
    assert cluster.cli("--node", "1", "increment", "--request-id", "cross-1").returncode == 0
    cluster.wait_converged(1)
    again = cluster.cli("--node", "2", "increment", "--request-id", "cross-1",
                "--wait", "majority")
    # The node's own reply already shows it was not applied a second time.
    assert (again.returncode, again.stdout.strip()) == (0, "1"), again.stderr
    assert stat(cluster, 2, "duplicates") == 1
    assert cluster.wait_converged(1) == 1


def test_request_id_window_survives_a_crash(cluster: LocalCluster) -> None:
    with cluster.client(1) as c:
        assert c.increment(request_id="crash-1", wait="majority") == 1
    cluster.kill(1)  # SIGKILL: no clean shutdown, only what was committed survives
    cluster.start(1)
    with cluster.client(1) as c:
        assert c.increment(request_id="crash-1", wait="majority") == 1
    assert stat(cluster, 1, "duplicates") == 1
    assert cluster.wait_converged(1) == 1


def test_indeterminate_then_retry_with_same_id_counts_once(cluster: LocalCluster) -> None:
    """wait=all with a node down: Indeterminate.  After the node returns, the same id
    retried with wait=all is acknowledged as a duplicate, and the count moves once."""
    cluster.kill(3)
    with cluster.client(1, timeout=1.0) as c:
        with pytest.raises(Indeterminate):
            c.increment(wait="all", request_id="indet-1")
        cluster.start(3)
        assert wait_for(lambda: c.increment(wait="all", request_id="indet-1") == 1, 10.0,
                        what="the retry to be confirmed by all nodes")
    assert cluster.wait_converged(1) == 1


def test_request_id_learned_by_a_restarted_node_counts_once(cluster: LocalCluster) -> None:
    """A node that was down when an id was applied elsewhere learns the count by a state
    pull on restart.  Resending that id to it must not count again."""
    cluster.kill(2)
    with cluster.client(1) as c:
        c.increment(request_id="missed-1", wait="majority")  # held by nodes 1 and 3
    cluster.start(2)
    cluster.wait_converged(1)

    def remembered() -> bool:
        with cluster.client(2) as c:
            return int(c.status(2)["request_ids_remembered"]) >= 1

    # Replication has carried the count; the id must follow within a repair round.
    wait_for(remembered, 3.0, what="node 2 to learn the request id")
    with cluster.client(2) as c:
        assert c.increment(request_id="missed-1") == 1
    assert cluster.wait_converged(1) == 1


def test_request_id_window_is_bounded(tmp_path: Path) -> None:
    """The documented limit: an id older than the window (here 3 ids) counts again."""
    settings = {**FAST_SETTINGS, "request_id_window": 3}
    with running_cluster(tmp_path / "c", n=1, settings=settings) as cluster, \
            cluster.client(1) as c:
        for i in range(4):
            c.increment(request_id=f"w-{i}")
        assert c.increment(request_id="w-3") == 4  # still in the window
        assert c.increment(request_id="w-0") == 5  # evicted: counts again
