"""Tunable consistency (wait=/read= levels) against real node processes.

Faults are real: SIGKILL (a node is down; it restarts from its SQLite file) and SIGSTOP
(a node is cut off: its sockets stay open but nothing answers, like a partition or a
stalled machine).  Every reader below is a *fresh* client with an empty session, so what
is proven is quorum intersection in the nodes, not the session mechanism.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from harness import LocalCluster, running_cluster, wait_for

from zcounter.errors import Indeterminate, RequestRefused, SessionBehind

pytestmark = pytest.mark.integration


def read(cluster: LocalCluster, node: int, level: str, timeout: float = 2.0) -> int:
    with cluster.client(node, timeout=timeout) as c:
        return c.get_count(read=level)  # type: ignore[arg-type]


def write(cluster: LocalCluster, node: int, level: str, timeout: float = 2.0) -> int:
    with cluster.client(node, timeout=timeout) as c:
        return c.increment(wait=level)  # type: ignore[arg-type]


def fault(cluster: LocalCluster, node: int, how: str) -> None:
    if how == "kill":
        cluster.kill(node, signal.SIGKILL)
    else:
        cluster.pause(node)


def heal(cluster: LocalCluster, node: int, how: str) -> None:
    if how == "kill":
        cluster.start(node)
    else:
        cluster.resume(node)


@pytest.mark.parametrize(("down", "how"), [
    (None, None), (1, "kill"), (2, "stop"), (3, "kill"), (3, "stop")])
def test_majority_read_sees_every_acknowledged_majority_write(
        cluster: LocalCluster, down: int | None, how: str | None) -> None:
    if down is not None:
        assert how is not None
        fault(cluster, down, how)
    live = [n for n in cluster.ids if n != down]
    acked = 0
    for writer in live:
        for reader in live:
            write(cluster, writer, "majority")
            acked += 1
            # The read starts after the ack: it must include it, whichever node it asks.
            assert read(cluster, reader, "majority") >= acked, (writer, reader)
    if down is not None and how is not None:
        heal(cluster, down, how)
    assert cluster.wait_converged(acked) == acked


def test_majority_read_at_a_stale_node(cluster: LocalCluster) -> None:
    """Node 3 is genuinely behind: it was down while the writes were acknowledged, and it
    restarts while both holders are cut off.  A local read there is stale (that is what
    local means); a majority read is refused rather than stale, and succeeds with the
    right answer as soon as one holder is reachable again."""
    cluster.kill(3)
    for node in (1, 2):
        write(cluster, node, "majority")
    cluster.pause(1)
    cluster.pause(2)
    cluster.start(3)
    assert read(cluster, 3, "local") == 0  # the control: node 3 really is behind
    with pytest.raises(RequestRefused) as refused:
        read(cluster, 3, "majority", timeout=1.0)
    assert refused.value.code == "unavailable"
    assert not isinstance(refused.value, SessionBehind)
    cluster.resume(2)
    assert wait_for(lambda: read(cluster, 3, "majority") == 2, 10.0,
                    what="a majority read at node 3 once node 2 is back")
    cluster.resume(1)
    assert cluster.wait_converged(2) == 2


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_wait_all_with_a_node_down_is_indeterminate_then_spreads(
        cluster: LocalCluster, how: str) -> None:
    fault(cluster, 3, how)
    with cluster.client(1, timeout=1.0) as c, pytest.raises(Indeterminate):
        c.increment(wait="all")
    result = cluster.cli("--node", "2", "increment", "--wait", "all", timeout=1.0)
    assert result.returncode == 3, result.stderr
    assert "indeterminate" in result.stderr
    # Both increments were applied where they landed, and a majority still works.
    assert read(cluster, 1, "majority") == 2
    heal(cluster, 3, how)
    assert cluster.wait_converged(2) == 2


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_read_all_with_a_node_down_is_a_clear_error(cluster: LocalCluster, how: str) -> None:
    write(cluster, 1, "all")
    fault(cluster, 2, how)
    with pytest.raises(RequestRefused) as refused:
        read(cluster, 1, "all", timeout=1.0)
    assert refused.value.code == "unavailable"
    result = cluster.cli("--node", "3", "getCount", "--read", "all", timeout=1.0)
    assert (result.returncode, result.stdout) == (1, ""), result.stderr
    heal(cluster, 2, how)
    assert wait_for(lambda: read(cluster, 1, "all") == 1, 10.0, what="read=all after heal")


def test_local_write_on_an_isolated_node_is_invisible_until_heal(cluster: LocalCluster) -> None:
    """What wait=local promises, observably: the write is acknowledged by one node only.
    Here node 1 is alone (2 and 3 down), acknowledges a local write, refuses to confirm a
    majority one (Indeterminate, yet applied), and is then cut off while 2 and 3 come
    back: that majority answers majority reads *without* node 1's writes.  After the heal
    everything converges and nothing acknowledged is lost."""
    cluster.kill(2)
    cluster.kill(3)
    assert write(cluster, 1, "local") == 1
    with pytest.raises(Indeterminate):
        write(cluster, 1, "majority", timeout=0.5)
    with pytest.raises(RequestRefused):
        read(cluster, 1, "majority", timeout=0.5)
    cluster.pause(1)
    cluster.start(2)
    cluster.start(3)
    assert write(cluster, 2, "majority") == 1
    assert read(cluster, 3, "majority") == 1  # node 1's two increments are not visible
    cluster.resume(1)
    assert cluster.wait_converged(3) == 3


def test_cli_levels(cluster: LocalCluster) -> None:
    inc = cluster.cli("--node", "1", "increment", "--wait", "majority", "--by", "5")
    assert (inc.returncode, inc.stdout.strip()) == (0, "5"), inc.stderr
    got = cluster.cli("--node", "3", "getCount", "--read", "majority")
    assert (got.returncode, got.stdout.strip()) == (0, "5"), got.stderr
    every = cluster.cli("--node", "2", "increment", "--wait", "all", "--request-id", "c-1")
    assert (every.returncode, every.stdout.strip()) == (0, "6"), every.stderr
    got = cluster.cli("--node", "2", "getCount", "--read", "all")
    assert (got.returncode, got.stdout.strip()) == (0, "6"), got.stderr
    bad = cluster.cli("--node", "1", "increment", "--wait", "most")
    assert bad.returncode == 2


@pytest.mark.parametrize(("down", "how"), [(2, "kill"), (3, "stop")])
def test_majority_levels_hold_per_key_for_decrements_and_resets(
        cluster: LocalCluster, down: int, how: str) -> None:
    """The same quorum intersection, key by key, for every kind of write: a majority
    read of several keys, at any live node, sees every acknowledged majority write."""
    fault(cluster, down, how)
    live = [n for n in cluster.ids if n != down]
    with cluster.client(live[0], timeout=2.0) as a, cluster.client(live[1], timeout=2.0) as b:
        assert a.increment(7, key="x", wait="majority") == 7
        assert b.decrement(3, key="y", wait="majority") == -3
        for reader in live:
            assert read_keys(cluster, reader, ["x", "y", "z"]) == {"x": 7, "y": -3, "z": 0}
        # Both live nodes hold x's 7 (a majority of three, one down): the reset covers it.
        assert b.reset("x", wait="majority") == 0
        assert a.decrement(2, key="x", wait="majority") == -2
        for reader in live:
            assert read_keys(cluster, reader, ["y", "x"]) == {"y": -3, "x": -2}
        with pytest.raises(Indeterminate):
            a.increment(key="y", wait="all", request_id="y-all")
    heal(cluster, down, how)
    cluster.wait_keys_converged({"x": -2, "y": -2, "z": 0})
    # After the heal, the same request id with wait=all is confirmed, and counts once.
    with cluster.client(live[0], timeout=2.0) as a:
        assert wait_for(lambda: a.increment(key="y", wait="all", request_id="y-all") == -2,
                        10.0, what="wait=all to be confirmed after the heal")


def read_keys(cluster: LocalCluster, node: int, keys: list[str]) -> dict[str, int]:
    with cluster.client(node, timeout=2.0) as c:
        return c.get_counts(keys, read="majority")


def test_five_nodes_two_cut_off(tmp_path: Path) -> None:
    """With five nodes a majority (3) survives two nodes cut off; three cut off is a
    minority of two, where majority writes are indeterminate and majority reads refused."""
    with running_cluster(tmp_path / "five", n=5) as cluster:
        cluster.pause(4)
        cluster.pause(5)
        acked = 0
        for writer, reader in [(1, 2), (2, 3), (3, 1)]:
            write(cluster, writer, "majority")
            acked += 1
            assert read(cluster, reader, "majority") >= acked
        with pytest.raises(Indeterminate):
            write(cluster, 1, "all", timeout=0.5)
        acked += 1  # applied at node 1 though unconfirmed
        cluster.pause(3)
        with pytest.raises(Indeterminate):
            write(cluster, 1, "majority", timeout=0.5)
        acked += 1
        with pytest.raises(RequestRefused):
            read(cluster, 2, "majority", timeout=0.5)
        for node in (3, 4, 5):
            cluster.resume(node)
        assert cluster.wait_converged(acked) == acked
