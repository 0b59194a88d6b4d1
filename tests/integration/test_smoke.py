"""The quickest end-to-end check: every node takes updates; every node converges."""

import pytest

pytestmark = pytest.mark.integration


def test_increments_at_every_node_converge(cluster):
    for node in cluster.ids:
        with cluster.client(node) as c:
            c.increment()
            c.increment(by=2)
    assert cluster.wait_converged(9) == 9


def test_keys_decrements_and_a_reset_at_every_node_converge(cluster):
    for node in cluster.ids:
        with cluster.client(node) as c:
            c.increment(by=10 * node, key="up")
            c.decrement(by=node, key="down")
    cluster.wait_keys_converged({"up": 60, "down": -6})
    with cluster.client(2) as c:
        assert c.reset("up") == 0
        assert c.increment(key="up") == 1
    assert cluster.wait_keys_converged({"up": 1, "down": -6, "default": 0}) == {
        "up": 1, "down": -6, "default": 0}
