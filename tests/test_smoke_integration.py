import pytest

pytestmark = pytest.mark.integration


def test_increments_at_every_node_converge(cluster):
    for node in cluster.ids:
        with cluster.client(node) as c:
            c.increment()
            c.increment(by=2)
    assert cluster.wait_converged(9) == 9
