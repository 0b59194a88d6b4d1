"""Unit tests of the sans-IO core: cores wired by an in-memory, hand-driven network."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from zcounter.config import Settings
from zcounter.crdt import MAX_COUNT, make_slot
from zcounter.node import NodeCore, Outputs, Publish, ToClient, ToPeer
from zcounter.wire import (
    GetCount,
    Heartbeat,
    Increment,
    PeerReply,
    Ping,
    Pull,
    Reply,
    Status,
    Update,
)

S = Settings(heartbeat_interval_s=0.1, peer_timeout_s=0.5, snapshot_interval_s=0.25,
             retry_interval_s=0.05)


def core(node: int, n: int = 3, now: float = 0.0, **kw) -> NodeCore:
    return NodeCore(node, list(range(1, n + 1)), f"{node:012x}", S, now, **kw)


@dataclass
class Net:
    """Delivers outputs between cores synchronously; `cut` blocks (src, dst) pairs."""

    nodes: dict[int, NodeCore]
    cut: set[tuple[int, int]] = field(default_factory=set)
    replies: list[Reply] = field(default_factory=list)
    persisted: dict[int, list] = field(default_factory=dict)

    def flush(self, now: float) -> None:
        for _ in range(20):
            moved = False
            for nid, node in self.nodes.items():
                out: Outputs = node.take_outputs()
                if out.persist:
                    self.persisted.setdefault(nid, []).append(out.persist)
                for m in out.messages:
                    moved = True
                    self.deliver(nid, m, now)
            if not moved:
                return

    def deliver(self, src: int, m, now: float) -> None:
        if isinstance(m, Publish):
            for dst, node in self.nodes.items():
                if dst != src and (src, dst) not in self.cut:
                    node.handle_broadcast(m.message, now)
        elif isinstance(m, ToPeer):
            if (src, m.peer) not in self.cut:
                self.nodes[m.peer].handle_request(("peer", src), m.request, now)
        elif isinstance(m.client, tuple) and m.client[0] == "peer":
            dst = m.client[1]
            if (src, dst) not in self.cut:
                self.nodes[dst].handle_peer_reply(m.reply, now)
        else:
            self.replies.append(m.reply)

    def run(self, start: float, until: float, step: float = 0.01) -> float:
        t = start
        while t < until:
            for node in self.nodes.values():
                node.tick(t)
            self.flush(t)
            t += step
        return t

    def isolate(self, nid: int) -> None:
        for other in self.nodes:
            if other != nid:
                self.cut |= {(nid, other), (other, nid)}


def net(n: int = 3) -> Net:
    return Net({i: core(i, n) for i in range(1, n + 1)})


def test_increment_is_persisted_in_the_same_batch_as_its_reply():
    c = core(1)
    c.handle_request("cli", Increment(id=1, by=3), 0.0)
    out = c.take_outputs()
    assert out.persist is not None and out.persist.slots == {c.slot: 3}
    replies = [m.reply for m in out.messages if isinstance(m, ToClient)]
    assert replies == [Reply(id=1, node=1, ok=True, count=3, slots={c.slot: 3})]
    updates = [m.message for m in out.messages if isinstance(m, Publish)]
    assert updates == [Update(1, 1, {c.slot: 3}, ())]


def test_a_batch_of_increments_makes_one_update_and_one_persist():
    c = core(1)
    for i in range(100):
        c.handle_request("cli", Increment(id=i, rid=f"r{i}"), 0.0)
    out = c.take_outputs()
    assert out.persist is not None and len(out.persist.rids) == 100
    updates = [m for m in out.messages if isinstance(m, Publish)]
    assert len(updates) == 1 and len(updates[0].message.rids) == 100


def test_duplicate_request_id_counts_once():
    c = core(1)
    c.handle_request("cli", Increment(id=1, rid="abc", by=5), 0.0)
    c.handle_request("cli", Increment(id=2, rid="abc", by=5), 0.0)
    replies = [m.reply for m in c.take_outputs().messages if isinstance(m, ToClient)]
    assert [r.count for r in replies] == [5, 5]
    assert replies[1].duplicate
    assert c.value == 5


def test_request_ids_restored_from_storage_still_dedupe():
    slot = make_slot(1, "0" * 11 + "1")
    c = core(1, slots={slot: 5}, rids=[("abc", slot, 5)])
    c.handle_request("cli", Increment(id=2, rid="abc", by=5), 0.0)
    assert c.value == 5


def test_request_id_window_is_bounded_by_count_and_age():
    c = NodeCore(1, [1], "0" * 12, Settings(request_id_window=3, request_id_max_age_s=10), 0.0)
    for i in range(5):
        c.handle_request("cli", Increment(id=i, rid=f"r{i}"), 0.0)
    c.tick(1.0)
    forgot = c.take_outputs().persist.forget
    assert forgot == ["r0", "r1"]
    c.tick(20.0)
    assert c.take_outputs().persist.forget == ["r2", "r3", "r4"]


def test_overflow_is_refused_and_changes_nothing():
    c = core(1, slots={make_slot(2, "a" * 12): MAX_COUNT - 1})
    c.handle_request("cli", Increment(id=1, by=2), 0.0)
    (reply,) = [m.reply for m in c.take_outputs().messages if isinstance(m, ToClient)]
    assert not reply.ok and reply.error == "overflow"
    assert c.value == MAX_COUNT - 1


def test_updates_replicate_and_duplicates_or_reordering_are_harmless():
    a, b = core(1), core(2)
    a.handle_request("cli", Increment(id=1, by=2), 0.0)
    first = next(m.message for m in a.take_outputs().messages if isinstance(m, Publish))
    a.handle_request("cli", Increment(id=2, by=3), 0.0)
    second = next(m.message for m in a.take_outputs().messages if isinstance(m, Publish))
    for message in (second, first, second, first):
        b.handle_broadcast(message, 0.0)
    assert b.value == 5


def test_peer_messages_from_unknown_nodes_or_with_bad_slots_are_dropped():
    b = core(2, slots={make_slot(3, "a" * 12): 10})
    b.handle_broadcast(Update(9, 1, {make_slot(9, "a" * 12): 5}), 0.0)  # unknown sender
    b.handle_broadcast(Update(1, 1, {make_slot(3, "a" * 12): 50}), 0.0)  # not its own slot
    b.handle_request(("peer", 8), Pull(1, 8), 0.0)  # unknown puller
    b.handle_peer_reply(PeerReply(1, 1, {make_slot(8, "a" * 12): 5}), 0.0)  # unknown slot
    b.handle_peer_reply(PeerReply(1, 1, {make_slot(1, "a" * 12): MAX_COUNT}), 0.0)  # overflow
    assert b.value == 10
    assert b.stats["dropped_peer_messages"] == 5
    assert not [m for m in b.take_outputs().messages if isinstance(m, ToClient)]


def test_a_lost_update_is_repaired_by_heartbeat_then_digest_pull():
    n = net()
    n.isolate(1)
    n.nodes[1].handle_request("cli", Increment(id=1, by=4), 0.0)
    n.flush(0.0)
    assert n.nodes[2].value == 0
    n.cut.clear()
    n.run(0.01, 0.3)
    assert [c.value for c in n.nodes.values()] == [4, 4, 4]


def test_state_of_an_unreachable_node_spreads_through_snapshots():
    """Node 3 never hears node 1 directly; node 2's snapshot carries node 1's slot."""
    n = net()
    n.cut |= {(1, 3), (3, 1)}
    n.nodes[1].handle_request("cli", Increment(id=1, by=7), 0.0)
    n.run(0.0, 1.0)
    assert n.nodes[3].value == 7


def test_silent_peer_is_pulled_and_reported_in_status():
    n = net()
    n.run(0.0, 0.3)
    n.isolate(3)
    n.run(0.3, 1.2)
    status = n.nodes[1].status(1.2)
    assert status["peers"]["3"]["last_heard_s_ago"] > 0.5
    assert status["peers"]["2"]["last_heard_s_ago"] < 0.2


def test_wait_majority_acknowledges_after_one_peer_commits():
    n = net()
    n.cut |= {(1, 3), (3, 1)}
    n.nodes[1].handle_request("cli", Increment(id=1, wait="majority", timeout_ms=1000), 0.0)
    n.flush(0.0)
    assert [r.ok for r in n.replies] == [True]
    assert n.nodes[2].value == 1


def test_wait_all_with_a_node_cut_off_is_indeterminate_not_failed():
    n = net()
    n.isolate(3)
    n.nodes[1].handle_request("cli", Increment(id=1, wait="all", timeout_ms=500), 0.0)
    n.run(0.0, 0.5)
    (reply,) = n.replies
    assert not reply.ok and reply.error == "indeterminate"
    assert n.nodes[1].value == 1  # applied; it will still spread
    n.cut.clear()
    n.run(0.5, 1.5)
    assert n.nodes[3].value == 1


def test_read_majority_sees_a_majority_acknowledged_write_from_another_node():
    n = net()
    n.cut |= {(1, 3), (3, 1)}
    n.nodes[1].handle_request("cli", Increment(id=1, by=5, wait="majority"), 0.0)
    n.flush(0.0)
    n.cut = {(2, 3), (3, 2), (1, 3), (3, 1)}
    # Node 3 hears nobody: a majority read there cannot be answered.
    n.nodes[3].handle_request("cli", GetCount(id=2, read="majority", timeout_ms=300), 0.0)
    n.run(0.0, 0.3)
    assert n.replies[-1].error == "unavailable"
    n.cut = {(1, 3), (3, 1)}
    n.nodes[3].handle_request("cli", GetCount(id=3, read="majority", timeout_ms=300), 0.3)
    n.flush(0.3)
    assert n.replies[-1].ok and n.replies[-1].count == 5


def test_session_behind_is_refused_never_answered_older():
    n = net()
    n.isolate(3)
    n.nodes[1].handle_request("cli", Increment(id=1, by=5), 0.0)
    n.flush(0.0)
    seen = n.replies[-1].slots
    n.nodes[3].handle_request("cli", GetCount(id=2, seen=seen, timeout_ms=300), 0.0)
    n.nodes[3].handle_request("cli", Increment(id=3, seen=seen, timeout_ms=300), 0.0)
    n.run(0.0, 0.3)
    assert [r.error for r in n.replies[-2:]] == ["behind", "behind"]
    assert n.nodes[3].value == 0  # the refused increment was not applied
    n.cut.clear()
    n.nodes[3].handle_request("cli", GetCount(id=4, seen=seen, timeout_ms=300), 0.3)
    n.run(0.3, 0.4)
    assert n.replies[-1].ok and n.replies[-1].count >= 5


def test_status_and_ping():
    c = core(1)
    c.handle_request("cli", Status(id="s"), 0.0)
    c.handle_request("cli", Ping(id="p"), 0.0)
    status, ping = [m.reply for m in c.take_outputs().messages if isinstance(m, ToClient)]
    assert status.status["node"] == 1 and set(status.status["peers"]) == {"2", "3"}
    assert ping.ok and ping.id == "p"


def test_heartbeat_carries_own_slots_and_digest():
    c = core(1)
    c.tick(0.0)
    (hb,) = [m.message for m in c.take_outputs().messages if isinstance(m, Publish)]
    assert isinstance(hb, Heartbeat) and hb.digest == c.counter.digest()


def test_next_deadline_is_never_later_than_the_next_heartbeat():
    c = core(1)
    c.tick(0.0)
    assert c.next_deadline() <= 0.1 + 1e-9


@pytest.mark.parametrize("level,needed", [("local", 1), ("majority", 3), ("all", 5)])
def test_levels(level, needed):
    assert core(1, n=5).needed(level) == needed


def test_fresh_node_answers_only_after_a_peer_snapshot():
    """A wiped node must not show a count going backwards while its peers hold more."""
    n = net()
    n.nodes[1].handle_request("cli", Increment(id=1, by=9), 0.0)
    n.run(0.0, 0.3)
    n.nodes[2] = NodeCore(2, [1, 2, 3], "0" * 11 + "9", S, 0.3, fresh=True)
    n.nodes[2].handle_request("cli", GetCount(id=2), 0.3)
    n.flush(0.3)
    assert n.replies[-1].ok and n.replies[-1].count == 9


def test_fresh_node_alone_serves_after_one_peer_timeout():
    c = NodeCore(1, [1, 2, 3], "0" * 12, S, 0.0, fresh=True)
    c.handle_request("cli", GetCount(id=1, timeout_ms=5000), 0.0)
    c.tick(0.1)
    assert not [m for m in c.take_outputs().messages if isinstance(m, ToClient)]
    assert c.next_deadline() <= S.peer_timeout_s
    c.tick(S.peer_timeout_s)
    (reply,) = [m.reply for m in c.take_outputs().messages if isinstance(m, ToClient)]
    assert reply.ok and reply.count == 0


def test_pull_answers_page_the_request_id_log_after_the_cursor():
    c = NodeCore(1, [1, 2], "0" * 12, Settings(request_id_window=5000), 0.0)
    for i in range(7000):
        c.handle_request("cli", Increment(id=i, rid=f"r{i}"), 0.0)
    c.tick(0.0)  # prunes to the newest 5,000 and compacts the log
    c.take_outputs()
    c.handle_request(("peer", 2), Pull(1, 2), 0.0)
    (first,) = [m.reply for m in c.take_outputs().messages if isinstance(m, ToClient)]
    assert [r for r, _, _ in first.rids][:2] == ["r2000", "r2001"]
    assert len(first.rids) == 5000 and not first.rid_more
    c.handle_request("cli", Increment(id="x", rid="late"), 0.0)
    c.take_outputs()
    c.handle_request(("peer", 2), Pull(2, 2, first.rid_epoch, first.rid_cursor), 0.0)
    (second,) = [m.reply for m in c.take_outputs().messages if isinstance(m, ToClient)]
    assert [r for r, _, _ in second.rids] == ["late"]
