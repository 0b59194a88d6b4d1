"""Collection (zcounter.protocol.collect) and its intake rules, with node cores wired in
memory: a dead key leaves every node only once every node confirmed holding it dead, a
cut peer holds collection back until it heals, and nothing stale brings a collected key
back - within the grace (graves), after it (message age) or after a restart (start time).

Dead keys here are reset ones (with nothing since): what every version of the model
calls dead.  Wall time is the link's time plus a per-node offset (a skewed clock).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from corelink import Link, S, core, keyspace, slot

from zcounter.config import Settings
from zcounter.errors import ConfigError, ProtocolError
from zcounter.protocol import codec
from zcounter.protocol.messages import (
    MAX_HOLD_KEYS,
    Add,
    Delta,
    Get,
    Heartbeat,
    Hold,
    Holding,
    Level,
    Merge,
    Reset,
    StatesReply,
    SyncStates,
)
from zcounter.protocol.outputs import LogLevel, Outputs, ToClient

#: Unix ms of the link's time 0 (any date: only differences matter).
EPOCH_MS = 1_700_000_000_000


@dataclass
class WallLink(Link):
    """A :class:`Link` whose runtime gives each core a wall clock before its batch."""

    #: node -> its clock's offset from true time, ms.
    skew_ms: dict[int, int] = field(default_factory=dict)

    @classmethod
    def of(cls, n: int = 3, **kw: Any) -> WallLink:
        return cls({i: core(i, n, **kw) for i in range(1, n + 1)})

    def wall(self, nid: int) -> int:
        return EPOCH_MS + round(self.now * 1000) + self.skew_ms.get(nid, 0)

    def step(self, nid: int) -> Outputs:
        self.cores[nid].set_wall(self.wall(nid))
        return super().step(nid)

    def removed(self, nid: int) -> list[str]:
        return [k for p in self.persisted.get(nid, []) for k in p.removed]


def dead_key_everywhere(link: WallLink, key: str = "k") -> Delta:
    """Increment ``key`` at node 1, reset it there, replicate both; returns the delta of
    the increment (a live state of the key's old life, to replay later)."""
    link.request(1, Add("a", key, 5))
    link.run(link.now + 0.05)
    (old,) = [d for d in link.of_kind(Delta, dst=2) if key in d.states]
    link.request(1, Reset("r", key))
    link.run(link.now + 0.05)
    for c in link.cores.values():
        assert key in c.keys and not c.keys.exists(key, link.wall(c.node_id))
    return old


def held(link: WallLink, key: str = "k") -> list[int]:
    return [nid for nid, c in link.cores.items() if key in c.keys]


def test_a_dead_key_is_collected_on_every_node_once_all_confirm():
    link = WallLink.of(3)
    link.run(0.2)
    dead_key_everywhere(link)
    link.run(link.now + 1.0)  # two rounds: Hold out, Holding back, collect
    assert held(link) == []
    for nid, c in link.cores.items():
        assert link.removed(nid) == ["k"], nid  # its removal persisted, once
        assert c.stats.collected_keys == 1 and len(c.graves) == 1
        assert c.status(link.now)["collection"] == {
            "pending": 0, "waiting_for": {}, "graves": 1, "collected": 1, "lag_s": 0.0}
    assert link.count(Hold) >= 6 and link.count(Holding) >= 6


def test_no_node_collects_before_every_peer_confirmed():
    """Node 3's answers are lost: nodes 1 and 2 keep the key and name node 3 in their
    status, whatever node 3 itself does; once its answers pass, both collect."""
    link = WallLink.of(3)
    link.run(0.2)
    dead_key_everywhere(link)
    link.lose = lambda d: isinstance(d.message, Holding) and d.src == 3
    link.run(link.now + 2.0)
    assert 1 in held(link) and 2 in held(link)
    for nid in (1, 2):
        collection = link.cores[nid].status(link.now)["collection"]
        assert collection["pending"] == 1 and list(collection["waiting_for"]) == ["3"]
        assert collection["lag_s"] >= 1.5
    # Node 3 heard everyone's answers: it may collect; its Hold answers still say yes
    # (a grave), so nothing is lost when they pass.
    link.lose = lambda d: False
    link.run(link.now + 1.0)
    assert held(link) == []


def test_a_cut_peer_holds_collection_back_and_it_resumes_after_the_heal():
    link = WallLink.of(3)
    link.run(0.2)
    dead_key_everywhere(link)
    link.isolate(3)
    cut_at = link.wall(1)
    link.run(link.now + 3.0)
    assert held(link) == [1, 2, 3]
    waiting = link.cores[1].status(link.now)["collection"]["waiting_for"]
    assert list(waiting) == ["3"] and waiting["3"] <= cut_at / 1000 + 1.0
    # A silent peer is asked every peer_timeout_s, not every gc_interval_s.
    holds_to_3 = [d for d in link.delivered if isinstance(d.message, Hold) and d.dst == 3]
    assert holds_to_3 == []  # cut: none delivered
    link.heal()
    link.run(link.now + 2.0)
    assert held(link) == []
    assert link.cores[1].status(link.now)["collection"]["waiting_for"] == {}


def test_a_new_state_after_collection_is_a_new_life_everywhere():
    link = WallLink.of(3)
    link.run(0.2)
    dead_key_everywhere(link)
    link.run(link.now + 1.0)
    assert held(link) == []
    link.request(2, Add("b", "k", 3))
    link.run(link.now + 0.1)
    for nid in link.cores:
        link.request(nid, Get(f"g{nid}", ("k",)))
    link.flush()
    assert [link.reply(f"g{nid}").counts for nid in link.cores] == [(3,)] * 3


def counts_after_a_new_life(grace: bool) -> list[tuple[int, ...]]:
    """Nodes 1 and 2 collect; node 3 never hears their confirmations, so it still holds
    the dead state (node 1's record at p=5, reset).  Then (within the grace, or after
    it) node 1 counts 2 on the key; the counts each node reads."""
    link = WallLink.of(3)
    link.run(0.2)
    dead_key_everywhere(link)
    link.lose = lambda d: isinstance(d.message, Holding) and d.dst == 3
    link.run(link.now + 1.0)
    assert held(link) == [3]
    if not grace:
        # Past the grace, and node 3 cut meanwhile so no repair gives the dead state back.
        link.isolate(3)
        link.run(link.now + S.gc_grace_s + 0.5)
        assert held(link) == [3] and not link.cores[1].graves
        link.heal()
    link.request(1, Add("b", "k", 2))
    link.run(link.now + 0.2)
    for nid in link.cores:
        link.request(nid, Get(f"g{nid}", ("k",)))
    link.flush()
    return [link.reply(f"g{nid}").counts for nid in link.cores]


def test_a_write_within_the_grace_revives_the_dead_state_first():
    """Node 1 holds the grave: the new life starts from the dead state, so it counts 2
    everywhere (node 2 adopts it from its grave, node 3 merges into the key it holds)."""
    assert counts_after_a_new_life(grace=True) == [(2,)] * 3


def test_a_forgetful_nodes_fresh_increment_beats_the_dead_state_held_elsewhere():
    """Past the grace node 1 has forgotten the key: its fresh record starts at its
    high-water, so it beats its old record that node 3 still holds."""
    assert counts_after_a_new_life(grace=False) == [(2,)] * 3


def test_a_retried_request_id_of_a_collected_key_does_not_count_in_its_new_life():
    """Node 1 applied rid r1 (+5) to k; k died and was collected everywhere and, past
    the grace, node 2 started a new life (+3).  A retry of r1 - at node 1, which applied
    it, and at node 3, which learned it - is a duplicate (with wait=all, answered once
    every peer answered: every node holds the nothing left to hold) and does not merge
    the old +5 back."""
    link = WallLink.of(3)
    link.run(S.max_clock_skew_s + 0.1)  # past the start-time rule
    link.request(1, Add("a", "k", 5, rid="r1"))
    link.run(link.now + 0.05)
    assert link.cores[3].rids.get("r1") == ("k", {slot(1): (5, 0, 0, 0)})
    link.request(1, Reset("r", "k"))
    link.run(link.now + 1.0)
    assert held(link) == []
    for c in link.cores.values():
        assert c.rids.get("r1") == ("k", {}), c.node_id  # neutralised at collection
    assert [e for p in link.persisted[1] for e in p.rids if e[0] == "r1"][-1] == ("r1", "k", {})
    link.run(link.now + S.gc_grace_s + 0.5)
    link.request(2, Add("b", "k", 3))
    link.run(link.now + 0.1)
    for nid in (1, 3):
        link.request(nid, Add(f"retry{nid}", "k", 5, rid="r1", wait=Level.ALL))
        link.flush()
        assert link.reply(f"retry{nid}").duplicate
    link.run(link.now + 0.1)
    for nid in link.cores:
        link.request(nid, Get(f"g{nid}", ("k",)))
    link.flush()
    assert [link.reply(f"g{nid}").counts for nid in link.cores] == [(3,)] * 3


def test_request_ids_learned_with_a_stale_state_are_neutralised():
    """A replayed old delta within the grace: its state stays in the grave, and the
    request ids it carries are learned without their targets."""
    link = WallLink.of(3)
    link.run(0.2)
    old = dead_key_everywhere(link)
    link.run(link.now + 1.0)
    node = link.cores[2]
    node.set_wall(link.wall(2))
    node.handle_broadcast(replace(old, rids=(("r9", "k", {slot(1): (5, 0, 0, 0)}),)),
                          link.now)
    node.take_outputs()
    assert "k" in node.graves and node.rids.get("r9") == ("k", {})


def test_an_expired_key_is_collected_and_its_lag_counts_from_its_deadline():
    """A key with a deadline (set through the keyspace: the wire's expiry requests are
    another branch's) is collected on every node after it; the delay is observed from
    the deadline."""
    link = WallLink.of(3)
    delays: dict[int, list[float]] = {nid: [] for nid in link.cores}
    for nid, c in link.cores.items():
        c.collector.observe_delay = delays[nid].append
    link.run(0.2)
    link.request(1, Add("a", "k", 5))
    node = link.cores[1]
    deadline = link.wall(1) + 400  # 0.6 s: the next rounds are at 1.0 s
    assert node.keys.expire("k", deadline, None, link.wall(1))
    link.run(link.now + 0.1)
    assert held(link) == [1, 2, 3]
    link.run(link.now + 1.2)
    assert held(link) == []
    for nid, c in link.cores.items():
        assert c.stats.expired_keys == 1 and c.stats.collected_keys == 1
        assert len(delays[nid]) == 1 and 0 < delays[nid][0] <= 1.2, (nid, delays)
    assert max(d for ds in delays.values() for d in ds) > 0.3  # not from when found dead


def test_a_replayed_old_delta_within_the_grace_stays_in_the_grave():
    link = WallLink.of(3)
    link.run(0.2)
    old = dead_key_everywhere(link)
    link.run(link.now + 1.0)
    node = link.cores[2]
    # Repairs between nodes that collected and nodes that had not yet may already have
    # brought the dead state to a grave: those count too.
    before = node.stats.stale_states_dropped
    node.set_wall(link.wall(2))
    node.handle_broadcast(old, link.now)  # a duplicated, delayed delta of the old life
    merge = Merge(999, 1, old.states, at_ms=old.at_ms)
    node.handle_request(("peer", 1), merge, link.now)  # and a replayed merge
    node.take_outputs()
    assert "k" not in node.keys and "k" in node.graves
    assert node.stats.stale_states_dropped == before + 2


def test_an_old_delta_after_the_grace_is_dropped_by_its_age():
    link = WallLink.of(3)
    link.run(0.2)
    old = dead_key_everywhere(link)
    link.run(link.now + 1.0)
    link.run(link.now + S.gc_grace_s + 0.5)  # the graves expire
    node = link.cores[2]
    assert "k" not in node.graves
    before = node.stats.stale_states_dropped
    node.set_wall(link.wall(2))
    node.handle_broadcast(old, link.now)
    node.take_outputs()
    assert "k" not in node.keys and node.stats.stale_states_dropped == before + 1
    # The same delta as if sent now is adopted: a key never seen is a key.
    node.handle_broadcast(replace(old, at_ms=link.wall(1)), link.now)
    node.take_outputs()
    assert "k" in node.keys


def test_after_a_restart_states_sent_before_it_are_dropped():
    """A restart loses the graves: a message sent before the new process started (here
    1 s before, within max_message_age_s) is dropped; one sent after it is adopted, and
    an answer to the new process's own request is adopted even if stamped by a clock
    slightly behind."""
    link = WallLink.of(3)
    link.run(0.2)
    old = dead_key_everywhere(link)
    link.run(link.now + 1.0)
    assert held(link) == []
    restarted = core(2, 3, link.now, keyspace=keyspace({}), epoch="e2b")
    restarted.set_wall(link.wall(2))
    stamped = replace(old, at_ms=link.wall(1) - 500)
    restarted.handle_broadcast(stamped, link.now)
    restarted.handle_request(("peer", 1), Merge(7, 1, old.states, at_ms=stamped.at_ms),
                             link.now)
    restarted.take_outputs()
    assert "k" not in restarted.keys and restarted.stats.stale_states_dropped == 2
    fresh = replace(old, at_ms=link.wall(1) + S.max_clock_skew_s * 1000 + 1)
    restarted.handle_broadcast(fresh, link.now)
    restarted.take_outputs()
    assert "k" in restarted.keys


def test_answers_to_our_own_requests_skip_the_start_rule_but_not_the_age_rule():
    node = core(1, 3)
    node.set_wall(EPOCH_MS)
    state = {"k": {slot(2): (4, 0, 0, 0)}}
    assert node.intake.accept(state, 2, EPOCH_MS - 100, solicited=True) == 1
    assert node.intake.accept({"j": state["k"]}, 2, EPOCH_MS - 100) == 0  # unsolicited
    too_old = EPOCH_MS - int(S.max_message_age_s * 1000) - 1
    assert node.intake.accept({"i": state["k"]}, 2, too_old, solicited=True) is None
    # The age rule drops whole messages: also a key held (it may be a new life that
    # knows nothing of the old one's death).
    assert node.intake.accept(state, 2, too_old, solicited=True) is None
    assert node.intake.accept({"h": state["k"]}, 2, 0) == 1  # a 0.2 peer: fresh
    assert sorted(node.keys.iter_keys()) == ["h", "k"]
    assert node.stats.stale_states_dropped == 3


def test_a_holding_that_does_not_match_its_hold_is_dropped():
    link = WallLink.of(3)
    link.run(0.2)
    dead_key_everywhere(link)
    link.lose = lambda d: isinstance(d.message, Holding)
    link.run(link.now + 0.6)
    (hold,) = [h for h in link.of_kind(Hold, dst=2)][:1]
    node = link.cores[1]
    node.handle_peer_reply(Holding(hold.id, 2, (True, True)), link.now)  # wrong length
    assert node.stats.dropped_peer_messages == 1
    node.handle_peer_reply(Holding(hold.id, 3, (True,)), link.now)  # not its peer
    assert node.stats.dropped_peer_messages == 2


def test_hold_answers():
    """ok for a key held dead with that hash, or a grave; no for a live key, a wrong
    hash, a key never seen."""
    node = core(1, 3, keyspace=keyspace({
        "dead": {slot(2): (3, 0, 3, 0)}, "live": {slot(2): (3, 0, 0, 0)}}))
    node.set_wall(EPOCH_MS)
    node.graves.add("gone", {slot(2): (1, 0, 1, 0)}, EPOCH_MS)
    h = node.keys.key_hash
    node.handle_request(("peer", 2), Hold(5, 2, (
        ("dead", h("dead")), ("dead", h("dead") ^ 1), ("live", h("live")), ("gone", 0),
        ("never", 0))), 0.0)
    out = node.take_outputs()
    (answer,) = [m.reply for m in out.messages
                 if isinstance(m, ToClient) and isinstance(m.reply, Holding)]
    assert answer.ok == (True, False, False, True, False)
    assert out.persist is not None and out.persist.sync  # a yes is durable first


def test_a_single_node_collects_alone():
    link = WallLink.of(1)
    link.request(1, Add("a", "k", 2))
    link.request(1, Reset("r", "k"))
    link.run(0.6)
    assert held(link) == [] and link.removed(1) == ["k"]


def test_clock_skew_is_measured_and_warned_about_once_each_way():
    link = WallLink.of(3)
    link.skew_ms = {2: 2500}
    link.run(1.0)
    node = link.cores[1]
    assert node.clocks.skew_ms[2] == pytest.approx(2500, abs=20)
    assert abs(node.clocks.skew_ms[3]) <= 20
    assert node.stats.clock_skew_warnings == 1
    assert node.status(link.now)["peers"]["2"]["clock_skew_s"] == pytest.approx(2.5, abs=0.02)
    link.skew_ms = {}
    logs: list[str] = []
    for _ in range(50):
        link.now = round(link.now + 0.01, 6)
        for nid in link.cores:
            out = link.step(nid)
            if nid == 1:
                logs += [log.text for log in out.logs if "clock" in log.text]
    assert node.stats.clock_skew_warnings == 1 and 2 not in node.clocks.warned
    assert len(logs) == 1 and "back within" in logs[0]


def test_skew_warning_is_a_warning_line():
    link = WallLink.of(2)
    link.skew_ms = {1: -1500}
    warnings: list[str] = []
    for _ in range(40):
        link.now = round(link.now + 0.01, 6)
        for nid in link.cores:
            warnings += [log.text for log in link.step(nid).logs
                         if log.level is LogLevel.WARNING and "clock" in log.text]
    # Each node warns once about the other: node 2 sees node 1 behind, node 1 sees 2 ahead.
    assert sorted(w[:20] for w in warnings) == ["node 1's clock is -1", "node 2's clock is +1"]


# --------------------------------------------------------------------------- wire, config


def test_the_new_fields_and_messages_cross_the_codec():
    hold = Hold(3, 2, (("a", 0), ("b", 2**64 - 1)))
    assert codec.decode_request(codec.encode_peer_request(hold)) == hold
    holding = Holding(3, 1, (True, False))
    assert codec.decode_peer_reply(codec.encode_peer_reply(holding)) == holding
    merge = Merge(1, 2, {"k": {slot(2): (1, 0, 0, 0)}}, at_ms=EPOCH_MS)
    assert codec.decode_request(codec.encode_peer_request(merge)) == merge
    reply = StatesReply(1, 2, {}, EPOCH_MS)
    assert codec.decode_peer_reply(codec.encode_peer_reply(reply)) == reply
    hb = Heartbeat(2, "e", 0, 0, 0, {}, "e", 1, EPOCH_MS)
    assert codec.decode_broadcast(codec.encode_broadcast(hb)) == hb
    delta = Delta(2, "e", 1, {}, (), EPOCH_MS)
    assert codec.decode_broadcast(codec.encode_broadcast(delta)) == delta
    assert SyncStates.__dataclass_fields__["at_ms"].default == 0


@pytest.mark.parametrize("frame", [
    {"op": "hold", "id": 1, "n": 2, "k": [["a", 0]] * (MAX_HOLD_KEYS + 1)},
    {"op": "hold", "id": 1, "n": 2, "k": [["a", -1]]},
    {"op": "hold", "id": 1, "n": 2, "k": [["", 0]]},
    {"op": "hold", "id": 1, "n": 2, "k": "a"},
    {"op": "merge", "id": 1, "n": 2, "s": {}, "at": -1},
    {"op": "merge", "id": 1, "n": 2, "s": {}, "at": "1"},
])
def test_bad_peer_requests_are_refused(frame: dict[str, Any]):
    import orjson
    with pytest.raises(ProtocolError):
        codec.decode_request(orjson.dumps(frame))


@pytest.mark.parametrize("frame", [
    {"t": "hd", "id": 1, "n": 2, "ok": [1]},
    {"t": "hd", "id": 1, "n": 2, "ok": [True] * (MAX_HOLD_KEYS + 1)},
    {"t": "st", "id": 1, "n": 2, "s": {}, "at": 2**63},
    {"t": "h", "n": 2, "e": "e", "q": 0, "h": 0, "k": 0, "a": {}, "re": "", "rn": 0, "w": True},
])
def test_bad_peer_replies_and_broadcasts_are_refused(frame: dict[str, Any]):
    import orjson
    decode = codec.decode_broadcast if frame["t"] == "h" else codec.decode_peer_reply
    with pytest.raises(ProtocolError):
        decode(orjson.dumps(frame))


def test_grace_must_cover_message_age_and_twice_the_skew():
    Settings(gc_grace_s=7.0, max_message_age_s=5.0, max_clock_skew_s=1.0)
    with pytest.raises(ConfigError, match="gc_grace_s"):
        Settings(gc_grace_s=6.9, max_message_age_s=5.0, max_clock_skew_s=1.0)
