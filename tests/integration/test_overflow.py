"""Counts are signed 64-bit: a step that would take a key's total of increments or of
decrements past 2**63-1 is refused with ``overflow`` and changes nothing, on real nodes.

Reaching 2**63 by steps of at most 2**32 would take 2**31 requests, so the keys are
brought near the limit the way a node learns any state it did not write: a peer's
``merge`` (from a DEALER speaking for another node of the cluster), sent to every node,
of a slot of an earlier incarnation of node 3.
"""

from __future__ import annotations

import orjson
import pytest
from harness import LocalCluster

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
    near_the_limit(cluster, {"up": [MAX_TOTAL - 3], "down": [0, MAX_TOTAL - 3]})
    cluster.wait_keys_converged({"up": MAX_TOTAL - 3, "down": -(MAX_TOTAL - 3)})
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
        # ... and a reset does not lower a total: the key reads 0, yet the increments it
        # has ever counted are still at the limit.
        assert c.reset("up") == 0
        refused(c.increment, key="up")
        assert c.decrement(5, key="up") == -5
    # Refused at every node, with a one-line error from the CLI (exit 1).
    for node in cluster.ids:
        cli = cluster.cli("--node", str(node), "increment", "--key", "up")
        assert cli.returncode == 1 and cli.stdout == "", cli
        assert cli.stderr.count("\n") == 1 and "2**63-1" in cli.stderr
        cli = cluster.cli("--node", str(node), "decrement", "--key", "down", "--by", "2")
        assert cli.returncode == 1 and cli.stderr.count("\n") == 1, cli
    # A refused write with a request id is not remembered: the same id is refused again.
    with cluster.client(2) as c:
        refused(c.increment, key="up", request_id="over-1")
        refused(c.increment, key="up", request_id="over-1", wait="majority")
    expected = {"up": -5, "down": -(MAX_TOTAL - 1)}
    assert cluster.wait_keys_converged(expected) == expected
    for node in cluster.ids:
        assert cluster.stat(node, "duplicates") == 0


def test_a_merge_past_the_limit_is_dropped(cluster: LocalCluster):
    """A peer state that would take a total past 2**63-1 when merged is dropped whole."""
    with cluster.client(1) as c:
        c.increment(10, key="k")
    cluster.wait_keys_converged({"k": 10})
    body = {"op": "merge", "id": 1, "n": 3,
            "s": {"k": {SLOT: [MAX_TOTAL - 5]}, "fine": {SLOT: [1]}}}
    with cluster.raw(2) as raw:
        before = cluster.stat(2, "dropped_peer_messages")
        raw.sock.send(orjson.dumps(body))
        assert not raw.sock.poll(500), "a dropped merge is not answered"
    assert cluster.stat(2, "dropped_peer_messages") == before + 1
    assert cluster.listing(2) == {"k": 10}
