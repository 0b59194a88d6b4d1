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


def stale_node_3(cluster: LocalCluster, key: str = "default", behind: int = 0) -> None:
    """Restart node 3 while 1 and 2 are cut off, so it cannot catch up."""
    cluster.pause(1)
    cluster.pause(2)
    cluster.start(3)
    with cluster.client(3) as fresh:
        assert fresh.get_count(key) == behind, "control: node 3 must be behind"


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


def test_a_session_carries_and_guards_only_the_keys_it_touched(cluster: LocalCluster) -> None:
    """Guarantees are per key: node 3, behind on the keys the session wrote, refuses
    those (reads, updates and a reset alike, applying nothing) and answers keys the
    session never touched.  The session carries states of its keys, not of the keyspace."""
    with cluster.client(1) as other:
        for i in range(50):
            other.increment(key=f"elsewhere-{i}")
    cluster.wait_keys_converged({f"elsewhere-{i}": 1 for i in range(50)})
    cluster.kill(3)
    with cluster.client(1, timeout=1.0) as session:
        session.increment(5, key="mine", wait="majority")
        session.decrement(2, key="also-mine", wait="majority")
        assert session.get_count("elsewhere-7") == 1
        assert set(session.seen) == {"mine", "also-mine", "elsewhere-7"}
        stale_node_3(cluster, key="mine", behind=0)
        session.use(3)
        for call in (lambda: session.get_count("mine"),
                     lambda: session.get_counts(["free", "also-mine"]),
                     lambda: session.increment(key="mine", request_id="gated-mine"),
                     lambda: session.decrement(key="also-mine"),
                     lambda: session.reset("mine")):
            with pytest.raises(SessionBehind):
                call()
        # Keys the session never touched are answered at once, even here.
        assert session.get_counts(["free", "elsewhere-8"]) == {"free": 0, "elsewhere-8": 1}
        assert session.increment(key="free") == 1
        cluster.resume(2)
        assert wait_for(lambda: session.get_count("mine") == 5, 10.0, what="catch-up")
        assert session.reset("mine") == 0
        assert session.increment(key="mine", request_id="gated-mine") == 1
    cluster.resume(1)
    # Exactly what was accepted: the refused calls applied nothing.
    cluster.wait_keys_converged({"mine": 1, "also-mine": -2, "free": 1})


def test_a_reset_is_never_undone_for_the_session_that_saw_it(cluster: LocalCluster) -> None:
    """Read-your-writes for a reset: after resetting a key at node 1, the session never
    reads the value from before the reset at node 3, which missed the reset."""
    with cluster.client(1) as writer:
        writer.increment(9, key="r")
    cluster.wait_keys_converged({"r": 9})
    cluster.kill(3)
    with cluster.client(1, timeout=1.0) as session:
        assert session.reset("r", wait="majority") == 0
        stale_node_3(cluster, key="r", behind=9)
        session.use(3)
        with pytest.raises(SessionBehind):
            session.get_count("r")
        cluster.resume(1)
        assert wait_for(lambda: session.get_count("r") == 0, 10.0, what="catch-up")
    cluster.resume(2)
    cluster.wait_keys_converged({"r": 0})
