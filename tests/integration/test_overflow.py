"""Counts are signed 64-bit: a step that would take a key's live total of increments or
of decrements (what no reset covered) past 2**63-1 is refused with ``overflow`` and
changes nothing, on real nodes; a reset frees the room; a peer's state is never dropped
for its sums, and a count past the bound reads as the bound (zcounter/model/pncounter.py,
"Bounds").

Reaching 2**63 by steps of at most 2**32 would take 2**31 requests, so the keys are
brought near the limit the way a node learns any state it did not write: a peer's
``merge`` (from a DEALER speaking for another node of the cluster), sent to every node,
of a slot of an earlier incarnation of node 3.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import redis
from harness import LocalCluster, running_cluster, wait_for

from zcounter import RequestRefused
from zcounter.model.pncounter import MAX_TOTAL

pytestmark = pytest.mark.integration

SLOT = "3.00000000feed"


def near_the_limit(cluster: LocalCluster, states: dict[str, list[int]]) -> None:
    for node in cluster.ids:
        body = {"op": "merge", "id": 1, "n": 1 if node != 1 else 2,
                "s": {k: {SLOT: rec} for k, rec in states.items()}}
        with cluster.raw(node) as raw:
            reply = raw.call(orjson.dumps(body))
        assert reply["t"] == "st" and set(reply["s"]) == set(states), reply


def refused(call, *args, **kw) -> RequestRefused:  # type: ignore[no-untyped-def]
    with pytest.raises(RequestRefused) as info:
        call(*args, **kw)
    assert info.value.code == "overflow", info.value
    return info.value


def test_overflow_is_refused_in_both_directions_and_changes_nothing(cluster: LocalCluster):
    near_the_limit(cluster, {"up": [MAX_TOTAL - 3], "down": [0, MAX_TOTAL - 3],
                             "top": [MAX_TOTAL]})
    cluster.wait_keys_converged({"up": MAX_TOTAL - 3, "down": -(MAX_TOTAL - 3),
                                 "top": MAX_TOTAL})
    with cluster.client(1) as c:
        assert c.increment(key="up") == MAX_TOTAL - 2
        assert c.increment(2, key="up") == MAX_TOTAL  # exactly the limit is fine
        error = refused(c.increment, key="up")
        assert "2**63-1" in str(error)
        refused(c.increment, 2**32, key="up")
        assert c.get_count("up") == MAX_TOTAL
        assert c.decrement(key="down") == -(MAX_TOTAL - 2)
        assert c.decrement(2, key="down") == -MAX_TOTAL
        refused(c.decrement, key="down")
        assert c.get_count("down") == -MAX_TOTAL
        # The other direction is still open: the bound is on each total, not the count.
        assert c.decrement(key="up") == MAX_TOTAL - 1
        assert c.increment(key="down") == -(MAX_TOTAL - 1)
        # A reset frees the room (0.2 kept the increments ever counted at the limit:
        # a key that once reached it refused increments forever, issue 19).
        assert c.reset("up") == 0
        assert c.increment(key="up") == 1
        assert c.decrement(5, key="up") == -4
    # Refused at every node, with a one-line error from the CLI (exit 1).
    for node in cluster.ids:
        cli = cluster.cli("--node", str(node), "increment", "--key", "top")
        assert cli.returncode == 1 and cli.stdout == "", cli
        assert cli.stderr.count("\n") == 1 and "2**63-1" in cli.stderr
        cli = cluster.cli("--node", str(node), "decrement", "--key", "down", "--by", "2")
        assert cli.returncode == 1 and cli.stderr.count("\n") == 1, cli
    # A refused write with a request id is not remembered: the same id is refused again.
    with cluster.client(2) as c:
        refused(c.increment, key="top", request_id="over-1")
        refused(c.increment, key="top", request_id="over-1", wait="majority")
    expected = {"up": -4, "down": -(MAX_TOTAL - 1), "top": MAX_TOTAL}
    assert cluster.wait_keys_converged(expected) == expected
    for node in cluster.ids:
        assert cluster.stat(node, "duplicates") == 0


def forge(rc: LocalCluster, node: int, states: dict[str, dict[str, list[int]]]) -> None:
    """A merge from a DEALER on 127.0.0.1 - a node's host, so a peer in ``none`` mode."""
    with rc.raw(node) as raw:
        assert raw.request({"op": "merge", "id": 1, "n": 3, "s": states})["t"] == "st"


def test_a_forged_merge_at_the_limit_no_longer_breaks_a_key(tmp_path: Path):
    """Issue 19: in ``none`` mode any local process is a peer, and one forged ``merge``
    of 2**63-1 made the key answer ``overflow`` on every node forever, ``DEL`` included.
    Now one ``DEL`` at the Redis door makes the key count again everywhere; and the same
    merge into a key holding 10 (a sum past 2**63-1, which 0.2 dropped) is taken too,
    reading as the bound on every node until a ``DEL``."""
    with running_cluster(tmp_path / "cluster", resp=True) as rc:
        forge(rc, 2, {"k": {SLOT: [MAX_TOTAL]}})
        r = redis.Redis(host="127.0.0.1", port=rc.resp_port(3), protocol=2, socket_timeout=5)
        with r:
            wait_for(lambda: r.get("k") == str(MAX_TOTAL).encode(), 10.0,
                     what="the forged state to reach node 3")
            with pytest.raises(redis.ResponseError, match="overflow"):
                r.incr("k")
            assert r.delete("k") == 1
            assert r.incrby("k", 5) == 5  # 0.2: "increment or decrement would overflow"
            assert rc.wait_keys_converged({"k": 5}) == {"k": 5}
            for node in rc.ids:
                with rc.client(node) as c:
                    assert c.increment(key="k", wait="all") == 5 + node
            assert rc.wait_keys_converged({"k": 8}) == {"k": 8}

            with rc.client(1) as c:
                c.increment(10, key="j", wait="all")
            forge(rc, 2, {"j": {SLOT: [MAX_TOTAL]}})
            # The states hold the exact sum, 2**63+9; every node reads the bound.
            wait_for(lambda: all(rc.count(n, key="j") == MAX_TOTAL for n in rc.ids), 10.0,
                     what="j to read 2**63-1 everywhere")
            with pytest.raises(redis.ResponseError, match="overflow"):
                r.incr("j")
            assert r.delete("j") == 1 and r.incrby("j", 2) == 2
        assert rc.wait_keys_converged({"k": 8, "j": 2}) == {"k": 8, "j": 2}
        for node in rc.ids:
            assert rc.stat(node, "dropped_peer_messages") == 0
