"""A peer's delta stream and liveness (zcounter.protocol.peers)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from zcounter.protocol.messages import Heartbeat
from zcounter.protocol.peers import Liveness, Peer, Stream, vector


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12).flatmap(lambda n: st.permutations(
    list(range(1, n + 1)) + list(range(1, n + 1, 3)))))
def test_deltas_in_any_order_leave_the_stream_complete(order):
    """``applied`` reports a gap exactly when a delta arrives before one it follows; once
    all arrived, the stream holds all of them and remembers nothing ahead."""
    stream = Stream()
    for seq in order:
        expected = seq <= stream.seq + 1
        assert stream.applied("e", seq) == expected
    n = max(order)
    assert stream.seq == n and not stream.ahead and stream.covers("e", n)
    assert not stream.covers("e", n + 1) and not stream.covers("other", 1)


def test_a_new_epoch_starts_over_and_a_repair_raises_the_position():
    stream = Stream()
    assert stream.applied("e1", 1) and stream.applied("e1", 2)
    assert not stream.applied("e1", 5)  # 3 and 4 lost
    stream.raise_to("e1", 4)  # a repair brought everything up to 4: 5 is absorbed
    assert stream.seq == 5 and not stream.ahead
    stream.raise_to("e1", 3)  # never lowers
    assert stream.seq == 5
    assert stream.applied("e2", 1) and stream.epoch == "e2" and stream.seq == 1
    stream.raise_to("e3", 7)
    assert (stream.epoch, stream.seq) == ("e3", 7)


def test_liveness_and_when_a_repair_is_wanted():
    peer = Peer(2)
    assert peer.liveness(0.0, 1.0) is Liveness.UNHEARD and not peer.wants_repair()
    peer.last_heard = 1.0
    assert peer.liveness(2.0, 1.0) is Liveness.LIVE
    assert peer.liveness(2.01, 1.0) is Liveness.SILENT
    peer.heartbeat = Heartbeat(2, "e2", 3, 0, 0, {2: ("e2", 3)}, "e2", 1)
    assert peer.wants_repair()  # it sent deltas we do not hold
    for seq in (1, 2, 3):
        peer.stream.applied("e2", seq)
    assert not peer.wants_repair()
    peer.flag = True
    assert peer.wants_repair()
    assert vector(("e1", 9), 1, {2: peer, 3: Peer(3)}) == {1: ("e1", 9), 2: ("e2", 3)}
