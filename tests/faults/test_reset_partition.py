"""An observed reset during a real partition (network namespaces, needs root).

Partition 1 | 2,3; both sides update key K; node 1 resets K, observing only its own side;
both sides update K again; heal.  Every node must end with exactly the updates node 1's
reset had not observed: the other side's, from before and after the reset, and its own
side's from after it - nothing lost, nothing resurrected.  A second key is reset on both
sides at once (the resets merge into the union of what they observed), and a third,
updated before the partition on all nodes, shows that a reset also covers other nodes'
slots it had observed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .netns import NetCluster, unavailable_reason

pytestmark = pytest.mark.netns

K, BOTH, SEEN = "k", "both", "seen-before"


@pytest.fixture(scope="module")
def netns_usable() -> None:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)


def test_reset_during_a_partition_keeps_exactly_the_unobserved_updates(
        tmp_path: Path, netns_usable: None) -> None:
    with NetCluster(tmp_path / "cluster") as c:
        c.start_all()
        keys = [K, BOTH, SEEN]
        # Before the partition: updates every node holds.
        c.write(2, SEEN, 1_000_000)
        c.write(1, K, 5_000_000)
        c.write(3, BOTH, 70_000_000)
        c.wait_converged(keys, timeout=10.0)

        c.partition([1], [2, 3])
        # Node 1's side.
        c.write(1, K, 1)
        c.write(1, K, 2)
        c.write(1, SEEN, 3)
        c.write(1, BOTH, 40)
        # The other side.
        c.write(2, K, 10)
        c.write(3, K, -100)
        c.write(2, BOTH, 400)
        c.write(3, SEEN, -30)
        # Each side agrees within itself; node 1 sees none of the other side.
        counts, _ = c.wait_converged(keys, timeout=10.0, nodes=[2, 3])
        assert counts == {K: 5_000_000 - 90, BOTH: 70_000_400, SEEN: 999_970}
        assert c.counts(keys)[1] == {K: 5_000_003, BOTH: 70_000_040, SEEN: 1_000_003}

        # Node 1 resets K and BOTH, node 2 resets BOTH: each observes its side only.
        assert c.write(1, K, reset=True) == 0
        assert c.write(1, BOTH, reset=True) == 0
        assert c.write(2, BOTH, reset=True) == 0
        assert c.write(1, SEEN, reset=True) == 0
        # More updates on both sides after the resets.
        c.write(1, K, 20_000)
        c.write(2, K, 300_000)
        c.write(3, K, -4_000_000)
        c.write(1, BOTH, 5)
        c.write(3, BOTH, 6)
        c.write(3, SEEN, 7)
        counts = c.counts(keys)
        assert counts[1] == {K: 20_000, BOTH: 5, SEEN: 0}
        assert counts[2] is not None and counts[2][BOTH] in (0, 6)  # node 3's +6 in flight

        c.heal()
        counts, _ = c.wait_converged(keys, timeout=30.0)
        # K: node 1's reset covered the 5,000,000 from before the cut and its own +1 +2;
        # the other side's +10 -100 (unobserved) and everything after the reset count.
        # BOTH: each side's reset covered its own side; only the updates after count.
        # SEEN: node 1 had observed node 2's 1,000,000 and its own +3; node 3's -30
        # (unobserved) and +7 (after) count.
        expected = {K: 10 - 100 + 20_000 + 300_000 - 4_000_000, BOTH: 5 + 6, SEEN: -30 + 7}
        assert counts == expected
        final = c.counts(keys, timeout=1.0)
        assert final == {1: expected, 2: expected, 3: expected}
