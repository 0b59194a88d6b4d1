"""Session guarantees (read-your-writes, monotonic reads) across nodes, real processes.

A :class:`~zcounter.Client` is a session: it carries the slots it has observed.  The
scenarios below make node 3 *genuinely* behind what the session saw - it was down
(SIGKILL) while the session wrote or read elsewhere, and restarts while the nodes that
hold the missing state are cut off (SIGSTOP) - then move the session to node 3.  Allowed
outcomes: a value >= what the session saw (node 3 caught up by pulling) or SessionBehind.
Never an older value.  A fresh client at node 3 (no session) is the control that shows
node 3 really answers stale.
"""

from __future__ import annotations

import pytest
from harness import LocalCluster, wait_for

from zcounter import Client
from zcounter.errors import ConfigError, SessionBehind

pytestmark = pytest.mark.integration


def stale_node_3(cluster: LocalCluster) -> None:
    """Restart node 3 while 1 and 2 are cut off, so it cannot catch up."""
    cluster.pause(1)
    cluster.pause(2)
    cluster.start(3)
    with cluster.client(3) as fresh:
        assert fresh.get_count() == 0, "control: node 3 must be behind"


def test_read_your_writes_when_moved_to_a_node_that_missed_them(cluster: LocalCluster) -> None:
    cluster.kill(3)
    with cluster.client(1, timeout=1.0) as session:
        for _ in range(3):
            session.increment(wait="majority")  # held by nodes 1 and 2
        stale_node_3(cluster)
        session.use(3)
        with pytest.raises(SessionBehind):
            session.get_count()
        # An increment gated on the session is refused, and therefore not applied.
        with pytest.raises(SessionBehind):
            session.increment(request_id="gated-1")
        # Node 2 holds the writes (majority ack): once reachable, node 3 catches up.
        cluster.resume(2)
        assert wait_for(lambda: session.get_count() >= 3, 10.0, what="node 3 to catch up")
        assert session.increment(request_id="gated-1") == 4
    cluster.resume(1)
    # Exactly the three writes and the one accepted retry: the refusal applied nothing.
    assert cluster.wait_converged(4) == 4


def test_monotonic_reads_when_moved_to_a_node_behind(cluster: LocalCluster) -> None:
    """The session only *read* (another client wrote, with wait=local): what it saw must
    not be taken back by a later read elsewhere."""
    cluster.kill(3)
    with cluster.client(1) as writer:
        for _ in range(5):
            writer.increment()
    with cluster.client(1, timeout=1.0) as session:
        seen = session.get_count()
        assert seen == 5
        stale_node_3(cluster)
        session.use(3)
        for level in ("local", "majority"):
            with pytest.raises(SessionBehind):
                session.get_count(read=level)
        # The session moves to a new Client object, keeping its guarantees.
        with Client(node=3, config=cluster.config, timeout=1.0, seen=session.seen) as moved:
            with pytest.raises(SessionBehind):
                moved.get_count()
            cluster.resume(1)  # node 1 holds the writes: node 3 can pull them now
            assert wait_for(lambda: moved.get_count() >= seen, 10.0, what="catch-up")
            assert moved.get_count(read="majority") >= seen
    cluster.resume(2)
    assert cluster.wait_converged(5) == 5


def test_failover_keeps_the_session(cluster: LocalCluster) -> None:
    """A failover client whose node stops answering moves on, never answering older."""
    with cluster.client(3, timeout=1.5, retries=0, failover=True) as session:
        session.increment(by=2, wait="majority")
        cluster.pause(3)
        with cluster.client(1) as other:
            other.increment(by=3)
        # Node 3 is cut off: the read falls over to node 1, which is at least as new.
        assert session.get_count() >= 2
        assert session.node == 3  # failover is per call; the session stays bound to 3
    cluster.resume(3)
    assert cluster.wait_converged(5) == 5


def test_use_rejects_unknown_nodes(cluster: LocalCluster) -> None:
    with cluster.client(1) as session:
        with pytest.raises(ConfigError):
            session.use(99)
        session.use(None)  # back to "first node that answers"
        assert session.get_count() == 0
