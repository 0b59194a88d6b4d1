"""The sans-IO node core (zcounter.protocol.node), driven directly: requests and
batches at one core, then two or three cores connected by an in-memory link
(:mod:`corelink`), with messages lost, cut or reordered on purpose."""

from __future__ import annotations

import pytest
from corelink import Link, S, client_replies, core, incarnation, keyspace, published, slot
from hypothesis import given, settings
from hypothesis import strategies as st

from zcounter.config import Settings
from zcounter.model.page import StatePage
from zcounter.model.pncounter import MAX_TOTAL, make_slot
from zcounter.protocol import rids as rids_module
from zcounter.protocol.messages import (
    Add,
    Counted,
    Delta,
    ErrorCode,
    Fetch,
    Get,
    Heartbeat,
    KeysPage,
    Level,
    ListKeys,
    Merge,
    Ping,
    Pong,
    Refused,
    Reset,
    RidPage,
    RidPull,
    Status,
    StatusReply,
    SyncBuckets,
)
from zcounter.protocol.node import NodeCore
from zcounter.protocol.outputs import ToClient, ToPeer

# --------------------------------------------------------------------------- one core


def test_writes_are_persisted_in_the_same_batch_as_their_replies():
    c = core(1)
    c.handle_request("cli", Add(1, "a", 3), 0.0)
    c.handle_request("cli", Add(2, "b", -2), 0.0)
    c.handle_request("cli", Add(3, "a", -1), 0.0)
    c.handle_request("cli", Get(4, ("a", "b", "never")), 0.0)
    out = c.take_outputs()
    assert out.persist is not None and out.persist.sync
    assert set(out.persist.states) == {"a", "b"}
    assert out.persist.slots == [(0, slot(1))]
    assert [r.counts for r in client_replies(out)] == [(3,), (-2,), (2,), (2, -2, 0)]
    c.handle_request("cli", Reset(5, "a"), 0.0)
    out = c.take_outputs()
    assert client_replies(out) == [Counted(5, 1, (0,), {})]
    assert set(out.persist.states) == {"a"} and out.persist.sync
    (delta,) = published(out)
    assert delta.states == {"a": {slot(1): (3, 1, 3, 1)}}


def test_a_batch_makes_one_delta_and_one_persist():
    c = core(1)
    c.take_outputs()  # the first heartbeat
    for i in range(100):
        c.handle_request("cli", Add(i, f"k{i % 7}", 1 if i % 3 else -1, rid=f"r{i}"), 0.0)
    out = c.take_outputs()
    assert len(out.persist.rids) == 100 and len(out.persist.states) == 7
    (delta,) = published(out)
    assert isinstance(delta, Delta) and delta.seq == 1 and len(delta.rids) == 100
    assert set(delta.states) == {f"k{i}" for i in range(7)}
    assert len(client_replies(out)) == 100
    assert c.take_outputs().persist is None  # nothing more to write


def test_a_duplicate_request_id_counts_once():
    c = core(1)
    c.handle_request("cli", Add(1, "k", 5, rid="abc"), 0.0)
    c.handle_request("cli", Add(2, "k", 5, rid="abc"), 0.0)
    c.handle_request("cli", Add(3, "k", 1), 0.0)
    c.handle_request("cli", Add(4, "k", 5, rid="abc"), 0.0)
    replies = client_replies(c.take_outputs())
    assert [r.counts for r in replies] == [(5,), (5,), (6,), (6,)]
    assert [r.duplicate for r in replies] == [False, True, False, True]
    assert c.keys.value("k", 0) == 6 and c.stats.duplicates == 2


def test_a_duplicate_reset_does_not_reset_again():
    c = core(1)
    c.handle_request("cli", Add(1, "k", 5), 0.0)
    c.handle_request("cli", Reset(2, "k", rid="z"), 0.0)
    c.handle_request("cli", Add(3, "k", 2), 0.0)
    c.handle_request("cli", Reset(4, "k", rid="z"), 0.0)  # a retry of the same reset
    replies = client_replies(c.take_outputs())
    assert [r.counts for r in replies] == [(5,), (0,), (2,), (2,)]
    assert replies[3].duplicate and c.keys.value("k", 0) == 2


def test_a_request_id_reused_for_another_key_is_refused_and_changes_nothing():
    c = core(1)
    c.handle_request("cli", Add(1, "k", 5, rid="abc"), 0.0)
    c.take_outputs()
    c.handle_request("cli", Add(2, "other", 5, rid="abc"), 0.0)
    c.handle_request("cli", Reset(3, "other", rid="abc"), 0.0)
    out = c.take_outputs()
    for reply in client_replies(out):
        assert isinstance(reply, Refused) and reply.code is ErrorCode.BAD_REQUEST
        assert "'k'" in reply.message
    assert "other" not in c.keys and c.keys.value("k", 0) == 5
    assert not published(out) and out.persist is None


def test_request_ids_restored_from_storage_still_count_once():
    c = core(1, rids=[("abc", "k", {slot(1): (5, 0, 0, 0)})])
    c.handle_request("cli", Add(2, "k", 5, rid="abc"), 0.0)
    (reply,) = client_replies(c.take_outputs())
    # The target is a lower bound of a real state: merged, then answered as a duplicate.
    assert reply.duplicate and reply.counts == (5,) and c.keys.value("k", 0) == 5


def test_the_request_id_window_is_bounded_by_count_and_age():
    c = core(1, n=1, settings=Settings(request_id_window=3, request_id_max_age_s=10))
    for i in range(5):
        c.handle_request("cli", Add(i, "k", 1, rid=f"r{i}"), 0.0)
    c.tick(1.0)
    assert c.take_outputs().persist.forget == ["r0", "r1"]
    assert "r0" not in c.rids and "r2" in c.rids
    c.handle_request("cli", Add(9, "k", 1, rid="r9"), 5.0)
    c.tick(10.5)
    assert c.take_outputs().persist.forget == ["r2", "r3", "r4"]
    c.tick(15.5)
    assert c.take_outputs().persist.forget == ["r9"] and len(c.rids) == 0


@pytest.mark.parametrize("amount", [2, -2])
def test_overflow_is_refused_and_changes_nothing(amount):
    near = (MAX_TOTAL - 1, 0, 0, 0) if amount > 0 else (0, MAX_TOTAL - 1, 0, 0)
    c = core(1, keyspace=keyspace({"k": {slot(2): near}}))
    c.take_outputs()
    root = c.keys.tree.root
    c.handle_request("cli", Add(1, "k", amount, rid="o1"), 0.0)
    out = c.take_outputs()
    (reply,) = client_replies(out)
    assert isinstance(reply, Refused) and reply.code is ErrorCode.OVERFLOW
    assert c.keys.state("k") == {slot(2): near} and c.keys.tree.root == root
    assert not published(out) and out.persist is None and "o1" not in c.rids
    # One step less fits exactly.
    c.handle_request("cli", Add(2, "k", amount // 2), 0.0)
    assert client_replies(c.take_outputs())[0].counts == (amount // abs(amount) * MAX_TOTAL,)


def test_list_keys_status_and_ping():
    c = core(1)
    for i, key in enumerate(["b", "a", "c", "ab"]):
        c.handle_request("cli", Add(i, key, i + 1), 0.0)
    c.handle_request("cli", Reset(9, "c"), 0.0)
    c.take_outputs()
    c.handle_request("cli", ListKeys("l", "a", None, 1), 0.0)
    c.handle_request("cli", ListKeys("m", "", "a", 10), 0.0)
    c.handle_request("cli", Status("s"), 0.0)
    c.handle_request("cli", Ping("p"), 0.0)
    first, rest, status, pong = client_replies(c.take_outputs())
    assert first == KeysPage("l", 1, (("a", 2),), True)
    assert rest == KeysPage("m", 1, (("ab", 4), ("b", 1)), False)  # "c" was reset
    assert pong == Pong("p", 1)
    assert isinstance(status, StatusReply)
    st = status.status
    assert st["node"] == 1 and st["slot"] == slot(1) and st["epoch"] == "e1"
    assert st["keys"] == 4 and st["live_keys"] == 3 and st["slots"] == 1
    assert st["root"] == f"{c.keys.tree.root:016x}" and st["seq"] == 1
    assert st["bootstrapping"] is False and st["repair"] is None
    assert set(st["peers"]) == {"2", "3"}
    assert st["peers"]["2"]["liveness"] == "unheard"
    assert st["stats"]["increments"] == 4 and st["stats"]["resets"] == 1


@pytest.mark.parametrize(("n", "level", "needed"), [
    (1, Level.MAJORITY, 1), (3, Level.LOCAL, 1), (3, Level.MAJORITY, 2), (3, Level.ALL, 3),
    (5, Level.MAJORITY, 3), (4, Level.MAJORITY, 3)])
def test_levels(n, level, needed):
    assert core(1, n=n).needed(level) == needed


def test_peer_messages_from_unknown_nodes_or_with_bad_slots_are_dropped():
    b = core(2, keyspace=keyspace({"k": {slot(3): (10, 0, 0, 0)}}))
    b.take_outputs()
    b.handle_broadcast(Delta(9, "e9", 1, {"k": {make_slot(9, "a" * 12): (5, 0, 0, 0)}}), 0.0)
    b.handle_broadcast(Delta(1, "e1", 1, {"k": {make_slot(8, "a" * 12): (5, 0, 0, 0)}}), 0.0)
    b.handle_request(("peer", 8), Fetch(1, 8, ("k",)), 0.0)
    b.handle_request(("peer", 1), Merge(2, 1, {"k": {make_slot(7, "a" * 12): (1, 0, 0, 0)}}),
                     0.0)
    assert b.keys.value("k", 0) == 10 and b.stats.dropped_peer_messages == 4
    out = b.take_outputs()
    assert not [m for m in out.messages if isinstance(m, ToClient)]
    assert not out.persist or not out.persist.states


def test_a_page_is_dropped_only_for_a_used_slot_of_an_unknown_node():
    """A repair page carries the answering node's whole slot table: a slot it holds of
    a node we do not know drops the page only if one of the page's records uses it."""
    b = core(2)
    b.take_outputs()
    stranger = make_slot(9, "a" * 12)
    # Each key's list: its meta (none: zeros), then (slot, p, n, bp, bn, b) per record.
    assert b.accept_page(StatePage((slot(1), stranger), {"k": [0, 0, 0, 0, 4, 0, 0, 0, 0]}),
                         1) == 1
    used = StatePage((slot(1), stranger), {"j": [0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 5, 0, 0, 0, 0]})
    assert b.accept_page(used, 1) is None
    assert b.keys.value("k", 0) == 4 and "j" not in b.keys
    assert b.stats.dropped_peer_messages == 1


def test_a_page_holding_more_of_our_own_slot_is_merged_with_a_warning():
    b = core(2, keyspace=keyspace({"k": {slot(2): (3, 0, 0, 0)}}))
    b.take_outputs()
    page = StatePage.of({"k": {slot(2): (5, 0, 0, 0), slot(1): (1, 0, 0, 0)},
                         "j": {slot(2): (1, 0, 0, 0)}})
    assert b.accept_page(page, 1) == 2 and b.keys.value("k", 0) == 6
    warnings = [log.text for log in b.take_outputs().logs if "lost data" in log.text]
    # One line per interval however many keys (a forged page names up to 200,000).
    assert len(warnings) == 1 and "'k' and 1 more keys" in warnings[0]
    assert b.stats.own_slot_ahead == 2
    b.accept_page(StatePage.of({"k": {slot(2): (9, 0, 0, 0)}}), 1)
    assert not [log for log in b.take_outputs().logs if "lost data" in log.text]
    assert b.stats.own_slot_ahead == 3


def test_a_peer_state_past_the_old_bound_is_merged_and_reads_saturate():
    """0.2 dropped a state whose sums passed 2**63-1; legal concurrent steps make such
    states (the model's "Bounds"), so they are merged, and reads saturate."""
    b = core(2, keyspace=keyspace({"k": {slot(3): (10, 0, 0, 0)}}))
    b.take_outputs()
    b.handle_broadcast(Delta(1, "e1", 1, {"k": {slot(1): (MAX_TOTAL, 0, 0, 0)}}), 0.0)
    assert b.keys.value("k", 0) == MAX_TOTAL and b.stats.dropped_peer_messages == 0


def test_a_batch_that_moved_many_states_asks_to_end():
    """The runtime ends a batch (takes its outputs) once it merged, answered or compared
    BATCH_KEYS keys, so the requests a repair page produced leave at once."""
    from zcounter.protocol.node import BATCH_KEYS

    c = core(1)
    c.take_outputs()
    half = {f"k{i}": {slot(2): (1, 0, 0, 0)} for i in range(BATCH_KEYS // 2)}
    c.handle_broadcast(Delta(2, "e2", 1, half), 0.0)
    assert not c.batch_full  # a delta of a busy batch elsewhere: keep reading
    c.handle_request(("peer", 2), Fetch(1, 2, tuple(half)), 0.0)
    assert c.batch_full  # merged half, answered the other half
    c.take_outputs()
    assert not c.batch_full


# --------------------------------------------------------------------------- replication


def warm(link: Link, until: float = 0.6) -> None:
    """Let the cores hear each other and finish their first repairs."""
    link.run(until)
    for c in link.cores.values():
        assert c.repairing is None and not any(p.wants_repair() for p in c.peers.values())


def test_deltas_replicate_and_duplicates_or_reordering_are_harmless():
    a, b = core(1), core(2)
    a.handle_request("cli", Add(1, "k", 2), 0.0)
    first = published(a.take_outputs())[0]
    a.handle_request("cli", Add(2, "k", -5), 0.0)
    a.handle_request("cli", Add(3, "j", 1), 0.0)
    (second,) = published(a.take_outputs())
    a.handle_request("cli", Reset(4, "j"), 0.0)
    (third,) = published(a.take_outputs())
    for message in (third, second, first, second, third, first):
        b.handle_broadcast(message, 0.0)
    assert b.keys.value("k", 0) == -3 and b.keys.value("j", 0) == 0
    assert b.keys.state("k") == a.keys.state("k") and b.keys.state("j") == a.keys.state("j")
    b.take_outputs()
    assert b.keys.tree == a.keys.tree
    assert b.peers[1].stream.seq == 3 and not b.peers[1].stream.ahead


def test_a_lost_delta_is_repaired_through_a_sync():
    """Node 2 misses node 1's first delta (and the heartbeats that would tell): the
    second delta's number shows the gap, and a sync brings the lost update."""
    link = Link.of(2)
    warm(link)
    link.lose = lambda d: isinstance(d.message, Heartbeat) or (
        isinstance(d.message, Delta) and d.message.seq == 1)
    link.request(1, Add(1, "lost", 4))
    link.flush()
    b = link.cores[2]
    syncs = b.stats.repairs_completed
    assert b.keys.value("lost", 0) == 0 and not b.peers[1].wants_repair()
    link.request(1, Add(2, "later", 1))
    link.step(1)
    assert b.keys.value("later", 0) == 1 and b.peers[1].wants_repair()  # the gap
    link.flush()
    assert b.keys.value("lost", 0) == 4 and b.stats.repairs_completed == syncs + 1
    assert b.peers[1].stream.seq == 2 and not b.peers[1].wants_repair()
    assert [m.seq for m in link.of_kind(Delta, dst=2)] == [2]


def test_a_node_learns_what_a_peer_heard_from_a_node_it_cannot_hear():
    """Third-party watch: node 3 never hears node 1; node 2's heartbeat says it holds
    more of node 1's deltas; after the settling delay node 3 repairs from node 2."""
    link = Link.of(3)
    warm(link)
    link.cut |= {(1, 3), (3, 1)}
    link.request(1, Add(1, "w", 7))
    link.flush()
    c3 = link.cores[3]
    syncs_with_1, syncs_with_2 = c3.peers[1].repairs, c3.peers[2].repairs
    link.run(link.now + 0.15)
    assert c3.keys.value("w", 0) == 0 and 1 in c3.peers[2].watch  # settling: in flight?
    link.run(link.now + 0.6)
    assert c3.keys.value("w", 0) == 7
    assert c3.peers[2].repairs > syncs_with_2 and c3.peers[1].repairs == syncs_with_1
    assert c3.peers[1].stream.covers("e1", 1) and not c3.peers[2].watch


def test_silent_divergence_triggers_a_repair():
    """Equal delta positions, different roots: something no delta carried (here a
    record slipped into node 1's keyspace behind the protocol's back)."""
    link = Link.of(3)
    warm(link)
    ghost = make_slot(3, "f" * 12)
    link.cores[1].keys.merge("ghost", {ghost: (5, 0, 0, 0)})
    link.flush()  # persisted at node 1, published nowhere: not its own record
    assert link.cores[1].seq == 0
    link.run(link.now + 1.0)
    for c in link.cores.values():
        assert c.keys.value("ghost", 0) == 5
    assert len({c.keys.tree.root for c in link.cores.values()}) == 1
    assert link.count(Delta) == 0


def test_a_completed_repair_holds_every_delta_the_responder_claimed():
    """Node 3 merges node 1's delta and, in the same batch (before its tree is
    updated), answers node 2's SyncBuckets.  The positions it reports must not claim that
    delta, or node 2 would count it as held without ever receiving it."""
    link = Link.of(3)
    warm(link)
    link.lose = lambda d: d.dst == 2 and (isinstance(d.message, Delta) or (
        isinstance(d.message, Heartbeat) and d.src == 1))
    link.request(1, Add(1, "x", 5))
    link.step(1)  # the delta reaches node 3, which has not ended its batch
    c2 = link.cores[2]
    c2.peers[3].flag = True  # node 2 repairs from node 3 now
    link.step(2)
    assert c2.repairing is not None and c2.repairing.peer == 3
    link.flush()
    assert c2.repairing is None
    assert not c2.peers[1].stream.covers("e1", 1) or c2.keys.value("x", 0) == 5


def test_a_repair_after_one_of_many_keys_changed_moves_only_that_key():
    link = Link.of(3)
    for i in range(300):
        link.request(1, Add(i, f"key-{i}", i + 1))
    warm(link)
    assert all(c.keys.value("key-299", 0) == 300 for c in link.cores.values())
    link.lose = lambda d: isinstance(d.message, Delta) and d.dst == 2
    link.request(1, Add("x", "key-17", 1))
    link.flush()
    link.lose = lambda d: False
    before = len(link.delivered)
    link.run(link.now + 1.0)
    assert link.cores[2].keys.value("key-17", 0) == 19
    sent = [d.message for d in link.delivered[before:] if d.dst == 2
            and type(d.message).__name__ == "SyncStates"]
    assert sent and [k for m in sent for k in m.states] == ["key-17"]
    merges = [d.message for d in link.delivered[before:] if isinstance(d.message, Merge)]
    assert all(not m.states for m in merges)  # nothing to give back


def test_heartbeats_carry_the_root_and_positions_and_status_reports_silent_peers():
    link = Link.of(3)
    for i in range(50):
        link.request(1, Add(i, f"k{i}", 1))
    warm(link)
    c1 = link.cores[1]
    link.run(link.now + S.heartbeat_interval_s)
    hb = [m for m in link.of_kind(Heartbeat, dst=2) if m.origin == 1][-1]
    assert hb.origin == 1 and hb.root == c1.keys.tree.root and hb.keys == 50
    assert hb.applied == c1.vector() and set(hb.applied) == {1, 2, 3}
    assert hb.rid_epoch == "e1" and hb.seq == c1.seq == 1
    link.isolate(3)
    link.run(link.now + 1.0)
    status = c1.status(link.now)
    assert status["peers"]["3"]["liveness"] == "silent"
    assert status["peers"]["3"]["last_heard_s_ago"] > S.peer_timeout_s
    assert status["peers"]["2"]["liveness"] == "live"
    assert status["peers"]["2"]["last_heard_s_ago"] <= S.heartbeat_interval_s
    assert status["peers"]["2"]["same_root"] is True and status["keys"] == 50


# --------------------------------------------------------------------------- levels


def test_wait_majority_is_acknowledged_after_one_peers_merge_answer():
    link = Link.of(3)
    warm(link)
    link.cut |= {(1, 3), (3, 1)}
    link.request(1, Add("w", "k", 3, rid="m1", wait=Level.MAJORITY, timeout_ms=1000))
    out = link.step(1)
    assert not client_replies(out)  # not before a peer holds it ...
    merges = {m.peer: m.request for m in out.messages if isinstance(m, ToPeer)}
    assert set(merges) == {2, 3}  # pushed to both at once; node 3 is cut off
    assert merges[2].rids == (("m1", "k", {slot(1): (3, 0, 0, 0)}),)
    link.flush()  # ... and at once after node 2's answer
    assert link.reply("w") == Counted("w", 1, (3,), {})
    assert link.cores[2].keys.value("k", 0) == 3 and "m1" in link.cores[2].rids
    assert link.count(Merge, dst=2) == 1 and link.count(Merge, dst=3) == 0


def test_wait_with_peers_cut_off_is_indeterminate_and_still_spreads():
    link = Link.of(3)
    warm(link)
    link.isolate(1)
    start = link.now
    link.request(1, Add("w", "k", 1, wait=Level.MAJORITY, timeout_ms=500))
    link.request(1, Reset("r", "j", wait=Level.ALL, timeout_ms=500))
    link.run(start + 0.39)
    assert not link.replies
    link.run(start + 0.45)
    for tag in ("w", "r"):
        reply = link.reply(tag)
        assert isinstance(reply, Refused) and reply.code is ErrorCode.INDETERMINATE
    assert link.cores[1].keys.value("k", 0) == 1  # applied; it may still spread
    link.heal()
    link.run(link.now + 1.0)
    assert all(c.keys.value("k", 0) == 1 for c in link.cores.values())


def test_read_majority_sees_a_majority_acknowledged_write():
    link = Link.of(3)
    warm(link)
    link.cut |= {(1, 3), (3, 1)}
    link.request(1, Add("w", "k", 5, wait=Level.MAJORITY))
    link.flush()
    assert link.reply("w").counts == (5,)
    link.lose = lambda d: isinstance(d.message, Delta)  # node 3 hears no deltas
    link.request(3, Get("local", ("k",)))
    link.request(3, Get("maj", ("k",), read=Level.MAJORITY))
    link.flush()
    assert link.reply("local").counts == (0,)  # reads are local unless asked
    assert link.reply("maj").counts == (5,)
    link.isolate(3)
    link.request(3, Get("alone", ("k",), read=Level.MAJORITY, timeout_ms=300))
    link.run(link.now + 0.3)
    assert link.reply("alone").code is ErrorCode.UNAVAILABLE


def test_read_majority_of_more_keys_than_one_fetch_carries():
    link = Link.of(3)
    keys = tuple(f"k{i}" for i in range(6000))
    link.request(1, Get("big", keys, read=Level.MAJORITY, timeout_ms=2000))
    link.run(1.5)
    reply = link.reply("big")
    assert isinstance(reply, Counted) and reply.counts == (0,) * 6000


def test_a_session_ahead_of_a_node_is_refused_never_answered_older():
    link = Link.of(3)
    warm(link)
    link.isolate(3)
    link.request(1, Add("a", "k", 5, session=True))
    link.flush()
    seen = link.reply("a").states
    assert seen == {"k": {slot(1): (5, 0, 0, 0)}}
    start = link.now
    link.request(3, Get("g", ("k",), seen=seen, timeout_ms=300))
    link.request(3, Add("i", "k", 1, seen=seen, timeout_ms=300))
    link.request(3, Get("other", ("j",), seen={}, timeout_ms=300))
    link.flush()
    assert link.reply("other").counts == (0,)  # a key the session never saw
    link.run(start + 0.3)
    assert link.reply("g").code is ErrorCode.BEHIND
    assert link.reply("i").code is ErrorCode.BEHIND
    assert link.cores[3].keys.value("k", 0) == 0  # the refused increment was not applied
    link.heal()
    link.request(3, Get("g2", ("k",), seen=seen, timeout_ms=300))
    link.flush()
    assert link.reply("g2").counts == (5,)


# --------------------------------------------------------------------------- bootstrap


def test_a_fresh_node_answers_only_after_a_peers_state_arrived():
    link = Link.of(3)
    link.request(1, Add(1, "k", 9))
    warm(link)
    fresh = link.cores[2] = core(2, now=link.now, fresh=True, epoch="e2-wiped")
    assert fresh.bootstrapping and fresh.slot_name == slot(2)
    fresh.handle_request("cli", Get("g", ("k",)), link.now)
    fresh.handle_request("cli", Add("i", "k", 1), link.now)
    out = fresh.take_outputs()
    assert not client_replies(out)  # held ...
    fetches = [m for m in out.messages if isinstance(m, ToPeer)
               and isinstance(m.request, Fetch)]
    assert {m.peer for m in fetches} == {1, 3}
    for m in out.messages:  # ... until the fetches are answered
        link._deliver(2, m)
    link.flush()
    assert link.reply("g").counts == (9,) and link.reply("i").counts == (10,)
    link.run(link.now + 1.0)
    assert not fresh.bootstrapping


def test_a_fresh_node_alone_answers_after_one_peer_timeout():
    c = core(1, fresh=True)
    c.handle_request("cli", Get("g", ("k",), timeout_ms=5000), 0.0)
    c.tick(0.1)
    assert not client_replies(c.take_outputs())
    assert c.next_deadline() <= S.peer_timeout_s
    c.tick(S.peer_timeout_s - 0.01)
    assert not client_replies(c.take_outputs())
    c.tick(S.peer_timeout_s)
    (reply,) = client_replies(c.take_outputs())
    assert reply.counts == (0,)
    c.handle_request("cli", Add("i", "k", 1), S.peer_timeout_s)
    c.tick(S.peer_timeout_s)  # the runtime ticks after every batch of inputs
    assert client_replies(c.take_outputs())[0].counts == (1,)  # no longer held


def test_a_single_node_cluster_never_bootstraps():
    c = core(1, n=1, fresh=True)
    assert not c.bootstrapping
    c.handle_request("cli", Get("g", ("k",)), 0.0)
    assert client_replies(c.take_outputs()) == [Counted("g", 1, (0,), {})]


# --------------------------------------------------------------------------- request-id log


def test_rid_pull_pages_the_log_after_the_cursor(monkeypatch):
    monkeypatch.setattr(rids_module, "RIDS_PER_PAGE", 3)
    c = core(1, n=2, settings=Settings(request_id_window=5))
    for i in range(7):
        c.handle_request("cli", Add(i, "k", 1, rid=f"r{i}"), 0.0)
    c.tick(0.0)  # prunes to the newest 5
    c.take_outputs()

    def pull(req_id: int, epoch: str, after: int) -> RidPage:
        c.handle_request(("peer", 2), RidPull(req_id, 2, epoch, after), 0.0)
        (m,) = [m for m in c.take_outputs().messages if isinstance(m, ToClient)]
        return m.reply

    first = pull(1, "", 0)  # another epoch: from the start of what is kept
    assert [e[0] for e in first.entries] == ["r2", "r3", "r4"] and first.more
    assert first.epoch == "e1" and first.entries[0][1:] == ("k", {slot(1): (3, 0, 0, 0)})
    second = pull(2, first.epoch, first.cursor)
    assert [e[0] for e in second.entries] == ["r5", "r6"] and not second.more
    c.handle_request("cli", Add("x", "j", 1, rid="late"), 0.0)
    c.take_outputs()
    c.tick(0.0)
    third = pull(3, second.epoch, second.cursor)
    assert [e[0] for e in third.entries] == ["late"] and not third.more
    assert pull(4, "old-epoch", third.cursor).entries[0][0] == "r3"  # pruned: r2 gone


def test_a_repair_pulls_every_page_of_the_request_id_log(monkeypatch):
    monkeypatch.setattr(rids_module, "RIDS_PER_PAGE", 4)
    link = Link.of(2)
    warm(link)
    link.lose = lambda d: isinstance(d.message, Delta)
    for i in range(10):
        link.request(1, Add(i, "k", 1, rid=f"r{i}"))
    link.flush()
    link.lose = lambda d: False
    link.run(link.now + 1.0)
    b = link.cores[2]
    assert all(f"r{i}" in b.rids for i in range(10)) and b.keys.value("k", 0) == 10
    # A retry at node 2 of an id applied at node 1 counts once.
    link.request(2, Add("retry", "k", 1, rid="r3"))
    link.flush()
    assert link.reply("retry").duplicate and b.keys.value("k", 0) == 10


# --------------------------------------------------------------------------- time


def test_next_deadline_is_never_later_than_the_next_heartbeat():
    c = core(1)
    c.tick(0.0)
    assert any(isinstance(m, Heartbeat) for m in published(c.take_outputs()))
    assert 0.0 < c.next_deadline() <= S.heartbeat_interval_s + 1e-9


def test_a_silent_peer_that_wants_a_repair_does_not_make_the_deadline_spin():
    c = core(1)
    c.handle_broadcast(Heartbeat(2, "e2", 5, 123, 1, {2: ("e2", 5)}, "e2", 1), 0.1)
    c.tick(0.2)
    c.take_outputs()
    assert c.repairing is not None  # a repair from node 2 started ...
    c.tick(3.0)  # ... node 2 went silent, the repair was abandoned
    c.take_outputs()
    assert c.repairing is None and c.peers[2].wants_repair()
    assert c.next_deadline() > 3.0


nodes = st.integers(1, 3)
actions = st.one_of(
    st.tuples(st.just("add"), nodes, st.sampled_from("abc"), st.integers(-5, 5).filter(bool),
              st.sampled_from(Level)),
    st.tuples(st.just("reset"), nodes, st.sampled_from("abc"), st.sampled_from(Level)),
    st.tuples(st.just("get"), nodes, st.sampled_from("abc"), st.sampled_from(Level)),
    st.tuples(st.just("cut"), nodes, nodes),
    st.tuples(st.just("isolate"), nodes),
    st.tuples(st.just("heal")),
    st.tuples(st.just("lose_deltas"), st.booleans()),
)


@settings(max_examples=12, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 0.7), actions), max_size=10))
def test_woken_only_at_its_deadlines_a_cluster_keeps_time_and_converges(script):
    """The cores are woken exactly as the runtime wakes them - at the earliest
    ``next_deadline()``, at most a second apart - while a script writes, reads, cuts
    and heals.  After every wake-up each core's deadline is strictly in the future and
    no later than its next heartbeat; after healing, every core holds the same state."""
    link = Link.of(3)
    at, script = 0.0, list(script)
    timeline = []
    for delay, action in script:
        at += delay
        timeline.append((at, action))
    end = at + 3.0
    n = 0

    def wake(until: float) -> None:
        nonlocal n
        while link.now < until:
            wakeup = min(c.next_deadline() for c in link.cores.values())
            upcoming = [t for t, _ in timeline if t > link.now]
            link.now = min(wakeup, link.now + 1.0, *(upcoming or [until]))
            for t, action in [x for x in timeline if x[0] <= link.now]:
                timeline.remove((t, action))
                perform(action)
            link.flush()
            for nid, c in link.cores.items():
                deadline = c.next_deadline()
                assert deadline > link.now, (nid, link.now, deadline)
                assert deadline <= link.heartbeats[nid] + S.heartbeat_interval_s + 1e-9

    def perform(action: tuple) -> None:
        nonlocal n
        n += 1
        kind = action[0]
        if kind == "add":
            link.request(action[1], Add(n, action[2], action[3], rid=f"r{n}", wait=action[4],
                                        timeout_ms=400))
        elif kind == "reset":
            link.request(action[1], Reset(n, action[2], wait=action[3], timeout_ms=400))
        elif kind == "get":
            link.request(action[1], Get(n, (action[2],), read=action[3], timeout_ms=400))
        elif kind == "cut" and action[1] != action[2]:
            link.cut.add((action[1], action[2]))
        elif kind == "isolate":
            link.isolate(action[1])
        elif kind == "heal":
            link.heal()
        elif kind == "lose_deltas":
            lose = action[1]
            link.lose = lambda d: lose and isinstance(d.message, Delta)

    wake(at)
    link.heal()
    link.lose = lambda d: False
    wake(end)
    tags = {r.id for _, r in link.replies}
    requests = sum(1 for _, a in script if a[0] in ("add", "reset", "get"))
    assert len(tags) == len(link.replies) == requests  # every request answered once
    first = link.cores[1]
    for c in link.cores.values():
        assert c.keys.tree == first.keys.tree
        for key in "abc":
            assert c.keys.state(key) == first.keys.state(key)


def test_a_restarted_node_repairs_itself_and_its_peers_do_not_repair_from_it():
    """Node 3 is down while 40 keys change at nodes 1 and 2, then restarts (same data,
    new epoch).  It repairs itself; nodes 1 and 2 see a new epoch and start no repair
    against it (both doing so made node 3 receive 18.6x the changed keys' bytes at a
    million keys: bin/bench --scale)."""
    link = Link.of(3)
    warm(link)
    old = link.cores[3]
    link.isolate(3)
    for i in range(40):
        link.request(1 + i % 2, Add(i, f"k{i}", 1 + i))
    link.run(link.now + 0.3)
    link.heal()
    link.cores[3] = core(3, keyspace=old.keys, epoch="e3-again", now=link.now)
    since = len(link.delivered)
    link.run(link.now + 1.5)
    toward_3 = [d for d in link.delivered[since:]
                if isinstance(d.message, SyncBuckets) and d.dst == 3]
    assert toward_3 == []
    assert link.cores[3].stats.repairs_completed >= 1
    for i in range(40):
        assert {c.keys.value(f"k{i}", 0) for c in link.cores.values()} == {1 + i}


def test_keys_replayed_at_start_are_published_again():
    """Node 1 committed an increment whose delta never left (it crashed after the
    commit); restarted with that key to republish, it sends it at once, no repair."""
    link = Link.of(2)
    warm(link)
    link.lose = lambda d: isinstance(d.message, Delta)
    link.request(1, Add(1, "unsent", 7))
    link.flush()
    assert link.cores[2].keys.value("unsent", 0) == 0
    link.lose = lambda d: False
    old = link.cores[1]
    link.cores[1] = NodeCore(1, [1, 2], incarnation(1), "e1-again", S, link.now, old.keys,
                             None, False, republish=["unsent"])
    link.flush()
    assert link.cores[2].keys.value("unsent", 0) == 7
    assert link.cores[2].stats.repairs_completed == 0 or link.cores[2].repairing is None


def test_republishing_waits_while_the_node_runs_its_own_repair():
    """The repair a restarted node runs gives back what it holds more of; republishing
    5,000 keys a batch meanwhile slowed the peer that answers it."""
    from zcounter.protocol.repair_session import RepairSession

    c = NodeCore(1, [1, 2], incarnation(1), "e1", S, 0.0,
                 keyspace({"k": {slot(1): (3, 0, 0, 0)}}), None, False,
                 republish=["k"])
    c.repair.session = RepairSession(2, 0.0, 0.0)
    assert not [d for d in published(c.take_outputs()) if isinstance(d, Delta)]
    c.repair.session = None
    assert [d.states for d in published(c.take_outputs()) if isinstance(d, Delta)] == [
        {"k": {slot(1): (3, 0, 0, 0)}}]


# --------------------------------------------------------------------------- anti-entropy


def _repairs_started(link: Link, src: int) -> int:
    return sum(1 for d in link.delivered
               if d.src == src and type(d.message).__name__ == "SyncBuckets")


def test_the_periodic_check_leaves_a_peer_that_is_behind_to_repair_itself():
    """A peer whose heartbeat shows no more of any origin's deltas than we hold, and less
    of ours, repairs itself from us; repairing from it as well sent it hash lists while
    it caught up (19x the changed keys' bytes at a million keys, bin/bench --scale)."""
    link = Link.of(2, settings=Settings(heartbeat_interval_s=0.1, peer_timeout_s=0.5,
                                        repair_interval_s=0.25, retry_interval_s=0.05,
                                        repair_check_interval_s=1.0))
    link.run(0.5)
    # Node 1's deltas never reach node 2, nor do node 2's repair requests reach node 1:
    # node 2 stays behind and the roots differ through several periodic checks.
    link.lose = lambda d: ((d.src == 1 and type(d.message).__name__ == "Delta")
                           or (d.src == 2 and type(d.message).__name__ == "SyncBuckets"))
    link.request(1, Add(1, "a", 5))
    before = _repairs_started(link, 1)
    link.run(4.0)
    assert link.cores[1].keys.tree.root != link.cores[2].keys.tree.root
    assert _repairs_started(link, 1) == before
    # Once its requests get through, node 2 repairs itself.
    link.lose = lambda d: False
    link.run(6.0)
    assert link.cores[2].keys.value("a", 0) == 5
    assert link.cores[1].keys.tree.root == link.cores[2].keys.tree.root


def test_a_peer_state_that_would_give_a_key_too_many_slots_is_dropped():
    """Forged slots of made-up incarnations grew one key without end (each step to it
    unpacks every record): past MAX_SLOTS_PER_KEY the message is dropped and counted."""
    from zcounter.limits import MAX_SLOTS_PER_KEY

    def fake(i: int) -> str:
        return make_slot(1, f"{i:012x}")
    b = core(2, keyspace=keyspace({"k": {fake(i): (1, 0, 0, 0)
                                         for i in range(MAX_SLOTS_PER_KEY - 1)}}))
    b.take_outputs()
    two_more = {fake(MAX_SLOTS_PER_KEY): (1, 0, 0, 0), fake(MAX_SLOTS_PER_KEY + 1): (1, 0, 0, 0)}
    b.handle_broadcast(Delta(1, "e1", 1, {"k": two_more}), 0.0)
    assert b.stats.dropped_peer_messages == 1
    assert b.accept_page(StatePage.of({"k": two_more}), 1) is None
    assert b.stats.dropped_peer_messages == 2
    assert b.keys.record_count("k") == MAX_SLOTS_PER_KEY - 1
    # Records of slots it holds already, and one more up to the bound, are merged.
    held = {fake(0): (5, 0, 0, 0), fake(MAX_SLOTS_PER_KEY): (1, 0, 0, 0)}
    assert b.accept_page(StatePage.of({"k": held}), 1) == 1
    assert b.keys.record_count("k") == MAX_SLOTS_PER_KEY
