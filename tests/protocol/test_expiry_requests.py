"""Expiry on the client-request path (zcounter.protocol.requests), driven at NodeCores:
``Add.ttl_ms``, ``Expire`` (modes, PERSIST, request ids, wait levels, the 10-year bound)
and ``Ttl``, with the batch's wall clock set as the runtime sets it (``set_wall``)."""

from __future__ import annotations

import pytest
from corelink import Link, client_replies, core, published
from test_node import warm

from zcounter.model.expiry import META
from zcounter.protocol.messages import (
    MAX_TTL_MS,
    Add,
    Counted,
    ErrorCode,
    Expire,
    ExpireMode,
    Get,
    KeysPage,
    Level,
    ListKeys,
    Refused,
    Reset,
    Status,
    StatusReply,
    Ttl,
)
from zcounter.protocol.node import NodeCore

T = 1_700_000_000_000  # a wall clock, unix ms
NX, XX, GT, LT = ExpireMode.NX, ExpireMode.XX, ExpireMode.GT, ExpireMode.LT


def ask(c: NodeCore, *requests: object, wall: int = T) -> list[object]:
    """Feed ``requests`` in one batch at wall clock ``wall``; the replies."""
    c.set_wall(wall)
    for request in requests:
        c.handle_request("cli", request, 0.0)  # type: ignore[arg-type]
    return client_replies(c.take_outputs())


def counts(c: NodeCore, *requests: object, wall: int = T) -> list[tuple[int, ...]]:
    replies = ask(c, *requests, wall=wall)
    assert all(isinstance(r, Counted) for r in replies), replies
    return [r.counts for r in replies]  # type: ignore[attr-defined]


def test_an_increment_with_ttl_expires_and_the_next_one_starts_a_new_life():
    c = core(1, n=1)
    assert counts(c, Add(1, "k", 2, ttl_ms=1000), Ttl(2, "k")) == [(2,), (1000, T + 1000)]
    # INCR keeps the expiry, and --ttl sets one only when the key has none (EXPIRE NX).
    assert counts(c, Add(3, "k", 1, ttl_ms=5000), Ttl(4, "k"), wall=T + 400) == [
        (3,), (600, T + 1000)]
    # At the deadline the key reads as never written ...
    assert counts(c, Get(5, ("k",)), Ttl(6, "k"), wall=T + 1000) == [(0,), (-2, -2)]
    page = ask(c, ListKeys(7), wall=T + 1000)[0]
    assert isinstance(page, KeysPage) and page.entries == ()
    # ... and an increment starts from zero, without expiry (Redis).
    assert counts(c, Add(8, "k", 1), Ttl(9, "k"), wall=T + 1001) == [(1,), (-1, -1)]


def test_get_with_states_says_which_keys_exist():
    c = core(1, n=1)
    ask(c, Add(1, "a", 1), Add(2, "b", 1, ttl_ms=10), Add(3, "c", 1), Reset(4, "c"))
    (reply,) = ask(c, Get(5, ("a", "b", "c", "never"), session=True), wall=T + 10)
    assert isinstance(reply, Counted)
    assert reply.counts == (1, 0, 0, 0) and reply.exists == (True, False, False, False)
    (plain,) = ask(c, Get(6, ("a",)))
    assert isinstance(plain, Counted) and plain.exists == ()  # only when states are asked


@pytest.mark.parametrize(("mode", "has_deadline", "at_delta", "changed"), [
    (None, False, 5000, 1), (None, True, 5000, 1),
    (NX, False, 5000, 1), (NX, True, 5000, 0),
    (XX, False, 5000, 0), (XX, True, 5000, 1),
    (GT, False, 5000, 0), (GT, True, 500, 0), (GT, True, 5000, 1),
    (LT, False, 5000, 1), (LT, True, 5000, 0), (LT, True, 500, 1),
])
def test_expire_modes_answer_as_redis(mode, has_deadline, at_delta, changed):
    """Redis 7's EXPIRE options; a key without expiry counts as an infinite TTL."""
    c = core(1, n=1)
    ask(c, Add(1, "k", 1, ttl_ms=1000 if has_deadline else 0))
    assert counts(c, Expire(2, "k", T + at_delta, mode)) == [(changed,)]
    before = T + 1000 if has_deadline else -1
    assert counts(c, Ttl(3, "k"))[0][1] == (T + at_delta if changed else before)


def test_xx_with_lt_shortens_only_an_existing_expiry():
    c = core(1, n=1)
    ask(c, Add(1, "k", 1), Add(2, "j", 1, ttl_ms=5000))
    xx_lt = [Expire(3, "k", T + 100, LT, also_xx=True), Expire(4, "j", T + 9000, LT,
                                                               also_xx=True),
             Expire(5, "j", T + 100, LT, also_xx=True), Ttl(6, "k"), Ttl(7, "j")]
    assert counts(c, *xx_lt) == [(0,), (0,), (1,), (-1, -1), (100, T + 100)]


def test_expire_relative_persist_and_missing_keys():
    c = core(1, n=1)
    assert counts(c, Expire(1, "nope", ttl_ms=1000), Expire(2, "nope")) == [(0,), (0,)]
    ask(c, Add(3, "k", 4))
    assert counts(c, Expire(4, "k")) == [(0,)]  # PERSIST of a key without expiry
    assert counts(c, Expire(5, "k", ttl_ms=2500), Ttl(6, "k"), wall=T + 7) == [
        (1,), (2500, T + 2507)]
    assert counts(c, Expire(7, "k"), Ttl(8, "k"), Get(9, ("k",))) == [(1,), (-1, -1), (4,)]


@pytest.mark.parametrize("request_", [Expire(1, "k", ttl_ms=0), Expire(1, "k", at_ms=0),
                                      Expire(1, "k", at_ms=T - 1, mode=LT)])
def test_a_deadline_not_after_now_expires_the_key_at_once(request_):
    c = core(1, n=1)
    ask(c, Add(0, "k", 4))
    assert counts(c, request_, Get(2, ("k",)), Ttl(3, "k")) == [(1,), (0,), (-2, -2)]


def test_a_deadline_past_ten_years_is_refused_and_changes_nothing():
    c = core(1, n=1)
    ask(c, Add(0, "k", 1, ttl_ms=1000))
    replies = ask(c, Expire(1, "k", at_ms=T + MAX_TTL_MS + 1, rid="far"),
                  Expire(2, "k", at_ms=T + MAX_TTL_MS), Ttl(3, "k"))
    assert isinstance(replies[0], Refused) and replies[0].code is ErrorCode.BAD_REQUEST
    assert "invalid expire time" in replies[0].message
    assert [r.counts for r in replies[1:]] == [(1,), (MAX_TTL_MS, T + MAX_TTL_MS)]
    assert "far" not in c.rids  # refused: nothing to remember


def test_an_expire_with_a_request_id_applies_once_and_a_retry_answers_the_same():
    c = core(1, n=1)
    ask(c, Add(0, "k", 1))
    assert counts(c, Expire(1, "k", T + 5000, rid="e1"), Expire(2, "k", rid="p1")) == [
        (1,), (1,)]
    # Retries: the same answers, and neither is applied again (the key keeps no expiry).
    replies = ask(c, Expire(3, "k", T + 5000, rid="e1"), Expire(4, "k", rid="p1"),
                  Expire(5, "k", T + 9000, NX, rid="n1"), Expire(6, "k", T + 9000, XX,
                                                                  rid="x1"))
    assert [(r.counts, r.duplicate) for r in replies[:2]] == [((1,), True), ((1,), True)]
    assert [r.counts for r in replies[2:]] == [(1,), (1,)]
    again = ask(c, Expire(7, "k", T + 1, XX, rid="x0"), Expire(8, "k", T + 1, XX, rid="x0"))
    assert [(r.counts, r.duplicate) for r in again] == [((1,), False), ((1,), True)]
    none = ask(c, Expire(9, "k", T + 5, NX, rid="z"), Expire(10, "k", T + 5, NX, rid="z"))
    assert [(r.counts, r.duplicate) for r in none] == [((0,), False), ((0,), True)]


def test_an_expire_is_durable_before_its_answer():
    c = core(1, n=1)
    ask(c, Add(0, "k", 1))
    c.set_wall(T)
    c.handle_request("cli", Expire(1, "k", ttl_ms=1000), 0.0)
    out = c.take_outputs()
    assert out.persist is not None and out.persist.sync and "k" in out.persist.states
    c.handle_request("cli", Expire(2, "k", ttl_ms=1000, mode=NX), 0.0)
    assert c.take_outputs().persist is None  # changed nothing: nothing to write


def test_status_reports_the_keys_with_an_expiry_and_their_average_ttl():
    c = core(1, n=1)
    ask(c, Add(1, "a", 1, ttl_ms=1000), Add(2, "b", 1, ttl_ms=3000), Add(3, "c", 1))
    (reply,) = ask(c, Status(4))
    assert isinstance(reply, StatusReply)
    assert reply.status["expiry"] == {"volatile": 2, "avg_ttl_ms": 2000}
    (reply,) = ask(c, Status(5), wall=T + 1500)
    assert isinstance(reply, StatusReply)
    assert reply.status["expiry"] == {"volatile": 1, "avg_ttl_ms": 1500}


def test_requests_are_counted_by_operation():
    c = core(1, n=1)
    ask(c, Add(1, "k", 1), Expire(2, "k", ttl_ms=5), Expire(3, "k"), Ttl(4, "k"))
    assert {op for op, _ in c.requests} >= {"expire", "persist", "ttl"}


# --------------------------------------------------------------------------- a cluster


def at_wall(link: Link, wall: int) -> None:
    """Every core at wall time ``wall``, started a minute before it (the first wall time
    a core sees is its start: messages read before a start are stale, ttl-gc's rule)."""
    for c in link.cores.values():
        c.set_wall(wall - 60_000)
        c.set_wall(wall)


def test_a_ttl_read_at_majority_answers_after_a_peers_state():
    link = Link.of(3)
    at_wall(link, T)
    warm(link)
    link.request(1, Add("a", "k", 1, ttl_ms=4000))
    link.flush()
    link.request(1, Ttl("t", "k", read=Level.MAJORITY, timeout_ms=1000))
    assert not client_replies(link.step(1))  # it fetches first
    link.flush()
    assert link.reply("t").counts == (4000, T + 4000)


def test_an_expire_at_wait_majority_reaches_a_peer_and_every_node_converges():
    link = Link.of(3)
    at_wall(link, T)
    warm(link)
    link.request(1, Add("a", "k", 5))
    link.flush()
    link.request(1, Expire("e", "k", ttl_ms=4000, rid="e1", wait=Level.MAJORITY,
                           timeout_ms=1000))
    out = link.step(1)
    assert not client_replies(out)
    (delta,) = [m for m in published(out) if hasattr(m, "states")]
    assert META in delta.states["k"]  # the change of the meta is in the batch's delta
    link.flush()
    assert link.reply("e").counts == (1,)
    link.run(link.now + 1.0)
    for c in link.cores.values():
        assert c.keys.deadline("k", T) == T + 4000
        assert c.keys.value("k", T + 4000) == 0 and not c.keys.exists("k", T + 4000)
        assert "e1" in c.rids


def test_dbsize_leaves_out_a_key_whose_deadline_passed_before_its_collection():
    c = core(1, n=1)
    ask(c, Add(1, "a", 1, ttl_ms=1000), Add(2, "b", 1))
    for wall, live in ((T, 2), (T + 1000, 1)):
        (reply,) = ask(c, Status(3), wall=wall)
        assert isinstance(reply, StatusReply) and reply.status["live_keys"] == live
        assert reply.status["keys"] == 2  # "a" is held until it is collected


# --------------------------------------------------------------------------- sessions


def test_a_session_that_saw_a_key_expire_is_answered_once_the_key_is_collected():
    c = core(1, n=1)
    (added,) = ask(c, Add(1, "k", 3, ttl_ms=1000, session=True))
    assert isinstance(added, Counted)
    seen = added.states  # the live state, with its deadline
    later = T + 1000
    assert counts(c, Get(2, ("k",), seen=seen), wall=later) == [(0,)]  # held, dead
    assert c.keys.dead(later, 10) == ["k"]
    assert [k for k, _ in c.keys.collect(["k"])] == ["k"]
    c.take_outputs()  # the flush reports the removal
    assert "k" not in c.keys
    # The node holds nothing of "k" now: what the session saw is dead at its now, so
    # the node is not behind it - answered at once, not held nor refused "behind".
    assert counts(c, Get(3, ("k",), seen=seen), Ttl(4, "k", seen=seen),
                  Add(5, "k", 2, seen=seen), wall=later) == [(0,), (-2, -2), (2,)]


def test_a_session_that_saw_a_reset_still_waits_for_a_node_that_did_not():
    # The other side of the rule: a state dead by a reset this node has not seen (it
    # still counts the key) is news to it - the session must not read the old count.
    c = core(1, n=1)
    (added,) = ask(c, Add(1, "k", 3, session=True))
    assert isinstance(added, Counted)
    reset = {s: (r[0], r[1], r[0], r[1], *r[4:]) for s, r in added.states["k"].items()}
    assert ask(c, Get(2, ("k",), seen={"k": reset}, timeout_ms=50)) == []  # held
    c.tick(1.0)
    (refused,) = client_replies(c.take_outputs())
    assert isinstance(refused, Refused) and refused.code is ErrorCode.BEHIND
