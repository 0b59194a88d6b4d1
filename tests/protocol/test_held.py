"""Caps on held requests (issue 19), at the sans-IO core: a ``confirm``, a write waiting
for its ``wait`` level and a read waiting for its ``read`` level are held across batches
for their connection; past the per-connection or per-node cap the next one is refused at
once with ``busy``, before anything is applied, and counted."""

from __future__ import annotations

from corelink import client_replies, core

from zcounter.config import Settings
from zcounter.protocol.messages import Add, Confirm, ErrorCode, Get, Held, Level, Refused

CAPS = Settings(max_held_per_connection=3, max_held_per_node=5)


def held_core():  # type: ignore[no-untyped-def]
    c = core(1, settings=CAPS)
    c.handle_request("seed", Add(0, "k", 1), 0.0)
    c.take_outputs()
    return c


def test_confirms_past_the_per_connection_cap_are_refused_busy_and_counted():
    c = held_core()
    for i in range(5):
        c.handle_request("a", Confirm(i, "k", 3, 60_000), 0.0)
    replies = client_replies(c.take_outputs())
    assert [(r.id, r.code) for r in replies] == [(3, ErrorCode.BUSY), (4, ErrorCode.BUSY)]
    assert "max_held_per_connection = 3" in replies[0].message
    assert len(c.pending) == 3 and c.pending.per_client == {"a": 3}
    assert c.stats.held_refused == 2
    assert c.requests[("confirm", "busy")] == 2
    # Another connection still gets its own share, up to the node's cap.
    for i in range(3):
        c.handle_request("b", Confirm(10 + i, "k", 3, 60_000), 0.0)
    replies = client_replies(c.take_outputs())
    assert [(r.id, r.code) for r in replies] == [(12, ErrorCode.BUSY)]
    assert "max_held_per_node = 5" in replies[0].message


def test_a_write_past_the_cap_is_refused_before_it_is_applied():
    c = held_core()
    for i in range(3):
        c.handle_request("a", Add(i, "w", 1, wait=Level.ALL, timeout_ms=60_000), 0.0)
    c.handle_request("a", Add(9, "w", 1, rid="r9", wait=Level.ALL, timeout_ms=60_000), 0.0)
    c.handle_request("a", Get(10, ("w",), Level.ALL, 60_000), 0.0)
    out = client_replies(c.take_outputs())
    assert [(r.id, r.code) for r in out] == [(9, ErrorCode.BUSY), (10, ErrorCode.BUSY)]
    # The refused write was not applied, and its request id is not remembered: a retry
    # after the cap frees is a first attempt, not a duplicate.
    assert c.keys.value("w", 0) == 3
    assert "r9" not in c.rids
    # A local write and a local read are never held, so never refused.
    c.handle_request("a", Add(11, "w", 1), 0.0)
    c.handle_request("a", Get(12, ("w",)), 0.0)
    assert [r.counts for r in client_replies(c.take_outputs())] == [(4,), (4,)]


def test_answered_and_expired_requests_free_their_connections_share():
    c = held_core()
    for i in range(3):
        c.handle_request("a", Confirm(i, "k", 3, 1_000), 0.0)
    c.take_outputs()
    c.tick(2.0)  # every confirm expires: answered with the nodes reached, not an error
    replies = client_replies(c.take_outputs())
    assert sorted(r.id for r in replies) == [0, 1, 2]
    assert all(isinstance(r, Held) for r in replies)
    assert not c.pending.per_client and len(c.pending) == 0
    c.handle_request("a", Confirm(5, "k", 3, 1_000), 2.0)
    assert not any(isinstance(r, Refused) for r in client_replies(c.take_outputs()))
    assert c.pending.per_client == {"a": 1}
