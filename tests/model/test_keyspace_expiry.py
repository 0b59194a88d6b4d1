"""The packed keyspace with expiry (issue 21) against the reference model
(zcounter.model.pncounter): the same steps at the same wall times give the same states
and reads; deltas (what a flush reports as local) carry everything; the hash tree and the
live count stay right; dead keys are found and collected; a node that collected a key
steps fresh above its high-water."""

from __future__ import annotations

from histories import LAWS, slot_of
from hypothesis import given, note
from hypothesis import strategies as st

from zcounter.model import pncounter
from zcounter.model.expiry import META, ExpireMode
from zcounter.model.keyspace import Keyspace
from zcounter.model.pncounter import Record

NODES = 3
KEYS = ("a", "b")

ops = st.one_of(
    st.tuples(st.just("add"), st.integers(0, NODES - 1), st.sampled_from(KEYS),
              st.integers(-3, 3).filter(bool), st.sampled_from([0, 0, 5, 20])),
    st.tuples(st.just("reset"), st.integers(0, NODES - 1), st.sampled_from(KEYS)),
    st.tuples(st.just("expire"), st.integers(0, NODES - 1), st.sampled_from(KEYS),
              st.one_of(st.none(), st.integers(0, 80)),
              st.sampled_from([None, *ExpireMode])),
    st.tuples(st.just("merge"), st.integers(0, NODES - 1), st.integers(0, NODES - 1)),
    st.tuples(st.just("flush"), st.integers(0, NODES - 1)),
    st.tuples(st.just("tick"), st.integers(1, 10)),
)


def export(ks: Keyspace) -> dict[str, dict[str, Record]]:
    return {k: ks.state(k) for k in KEYS if ks.state(k)}


class Run:
    def __init__(self) -> None:
        self.spaces = [Keyspace() for _ in range(NODES)]
        self.slots = [ks.slots.intern(slot_of(i)) for i, ks in enumerate(self.spaces)]
        self.refs: list[dict[str, dict[str, Record]]] = [{} for _ in range(NODES)]
        self.deltas: list[dict[str, dict[str, Record]]] = []
        self.now = 1

    def step(self, op: tuple) -> None:
        kind, now = op[0], self.now
        if kind == "tick":
            self.now += op[1]
        elif kind == "add":
            _, i, key, amount, ttl = op
            rec = self.spaces[i].add(key, self.slots[i], amount, now, ttl)
            ref = pncounter.add(self.refs[i].get(key, {}), slot_of(i), amount, now, ttl)
            self.refs[i][key] = ref
            assert pncounter.normal(*rec) == ref[slot_of(i)]
        elif kind == "reset":
            _, i, key = op
            written = self.spaces[i].reset(key, now)
            before = self.refs[i].get(key, {})
            self.refs[i][key] = ref = pncounter.reset(before, now)
            assert written == ({} if ref == before else {
                s: r for s, r in ref.items() if s != META or r != before.get(META)})
        elif kind == "expire":
            _, i, key, at, mode = op
            at_ms = None if at is None else now + at - 10
            done = self.spaces[i].expire(key, at_ms, mode, now)
            ref, ref_done = pncounter.expire(self.refs[i].get(key, {}), at_ms, mode, now)
            self.refs[i][key] = ref
            assert done == ref_done
        elif kind == "merge":
            _, src, dst = op
            self.spaces[dst].merge_many(export(self.spaces[src]))
            for key, state in self.refs[src].items():
                self.refs[dst][key] = pncounter.merge(self.refs[dst].get(key, {}), state)
        else:
            self.deltas.append(self.spaces[op[1]].flush().local)

    def check(self) -> None:
        now = self.now
        for i, ks in enumerate(self.spaces):
            for key in KEYS:
                ref = self.refs[i].get(key, {})
                assert ks.state(key) == ref, (i, key)
                assert ks.value(key, now) == pncounter.value(ref, now)
                assert ks.exists(key, now) == pncounter.exists(ref, now)
                assert ks.deadline(key, now) == pncounter.deadline(ref, now)


@LAWS
@given(st.lists(ops, max_size=40))
def test_the_keyspace_is_the_reference_model_with_expiry(history):
    run = Run()
    for op in history:
        note(repr(op))
        run.step(op)
        run.check()
    fresh = [Keyspace() for _ in range(NODES)]
    for i, ks in enumerate(run.spaces):
        out = ks.flush()
        run.deltas.append(out.local)
        # the tree and the live count: as if every key were merged into a fresh keyspace
        fresh[i].merge_many(export(ks))
        fresh[i].flush()
        assert fresh[i].tree == ks.tree and fresh[i].live == ks.live
        assert all(fresh[i].key_hash(k) == ks.key_hash(k) for k in KEYS)
        check_live_at(ks, run.now)
    # the deltas, merged, are the merge of every replica's full state
    union: dict[str, dict[str, Record]] = {}
    for delta in run.deltas:
        for key, state in delta.items():
            union[key] = pncounter.merge(union.get(key, {}), state)
    full: dict[str, dict[str, Record]] = {}
    for ref in run.refs:
        for key, state in ref.items():
            full[key] = pncounter.merge(full.get(key, {}), state)
    assert {k: s for k, s in union.items() if s} == {k: s for k, s in full.items() if s}


def check_live_at(ks: Keyspace, now: int) -> None:
    """DBSIZE's count is the keys that exist, whatever the deadlines passed and whether
    :meth:`Keyspace.dead` popped them yet or the key was collected since."""
    for t in (now, now + 30, now + 100):
        assert ks.live_at(t) == sum(ks.exists(k, t) for k in KEYS), t
        dead = ks.dead(t, 1)  # pops part of the heap: the rest stays in it
        assert ks.live_at(t) == sum(ks.exists(k, t) for k in KEYS), t
        ks.collect(dead)
        ks.flush()
        assert ks.live_at(t) == sum(ks.exists(k, t) for k in KEYS), t


def test_live_at_leaves_out_expired_keys_until_and_after_collection():
    ks = Keyspace()
    slot = ks.slots.intern(slot_of(0))
    for i in range(5):
        ks.add(f"k{i}", slot, 1, 1000, 100 * (i + 1))  # k0 expires at 1100 ... k4 at 1500
    ks.add("kept", slot, 1, 1000)
    ks.flush()
    assert ks.live == 6 and ks.live_at(1000) == 6
    assert ks.live_at(1100) == 5 and ks.live_at(1350) == 3 and ks.live_at(2000) == 1
    assert ks.live == 6  # the flag's count: a passed deadline does not lower it
    dead = ks.dead(2000, 2)
    assert ks.live_at(2000) == 1  # popped dead, not yet collected
    ks.collect(dead)
    ks.flush()
    assert ks.live == 4 and ks.live_at(2000) == 1
    ks.add("k4", slot, 1, 2000)  # a new life of an expired key: it exists again
    ks.flush()
    assert ks.live_at(2000) == 2


def test_dead_finds_expired_and_reset_keys_and_collect_removes_them():
    ks = Keyspace()
    mine = ks.own_slot = ks.slots.intern(slot_of(0))
    ks.add("rl:1", mine, 5, 1000, ttl_ms=2000)
    ks.add("rl:2", mine, 1, 1000, ttl_ms=500)
    ks.add("gone", mine, 3, 1000)
    ks.add("kept", mine, 1, 1000)
    ks.flush()
    ks.reset("gone", 1100)
    ks.flush()
    assert ks.dead(1200, 10) == ["gone"]
    assert ks.dead(1600, 10) == ["gone", "rl:2"]  # in the order they were found dead
    assert ks.expired_total == 1 and ks.dead_since("rl:2") == 1500
    assert ks.expiry_stats(1600) == (1, 1400)
    assert ks.dead(1600, 1) == ["gone"]  # bounded
    removed = ks.collect(["rl:2", "gone"])
    assert [k for k, _ in removed] == ["rl:2", "gone"] and "gone" not in ks
    out = ks.flush()
    assert out.removed == ["rl:2", "gone"] and out.high_water == (3, 0)
    assert ks.dead(1600, 10) == [] and len(ks) == 2
    reference = Keyspace()
    reference.merge_many({k: ks.state(k) for k in ("rl:1", "kept")})
    reference.flush()
    assert reference.tree == ks.tree and reference.live == ks.live == 2
    assert ks.list_keys("", None, 10, 3000) == ([("kept", 1)], False)  # rl:1 expired


def test_a_collected_key_stepped_again_beats_the_dead_state_held_elsewhere():
    here, there = Keyspace(), Keyspace()
    mine = here.own_slot = here.slots.intern(slot_of(0))
    here.add("k", mine, 5, 1000, ttl_ms=100)
    here.flush()
    there.merge_many({"k": here.state("k")})  # the other node holds the dead state
    assert here.dead(2000, 10) == ["k"]
    here.collect(["k"])
    assert here.flush().high_water == (5, 0)
    here.add("k", mine, 1, 2000)  # a new life, from nothing held
    here.flush()
    there.merge_many({"k": here.state("k")})
    here.merge_many({"k": there.state("k")})
    for ks in (here, there):
        assert ks.value("k", 2000) == 1 and ks.deadline("k", 2000) == -1


def test_a_high_water_loads_and_a_0_2_blob_is_upgraded():
    from zcounter.model.records import OLD_HEAD, OLD_REC, upgrade

    ks = Keyspace()
    ks.add("k", ks.slots.intern(slot_of(0)), 4, 0)
    ks.flush()
    key_hash = ks.key_hash("k")
    old = OLD_HEAD.pack(key_hash, 1) + OLD_REC.pack(0, 4, 0, 0, 0)
    assert upgrade(old) == ks._packed["k"] and upgrade(upgrade(old)) == upgrade(old)
    loaded = Keyspace()
    loaded.load([slot_of(0)], [("k", old)], high_water=(7, 2))
    assert loaded.state("k") == ks.state("k") and loaded.tree == ks.tree
    assert loaded.high_water == (7, 2) and loaded.value("k", 5) == 4


def test_covers_a_dead_state_seen_when_nothing_or_a_dead_state_or_a_newer_life_is_held():
    a = slot_of(0)
    live = pncounter.add({}, a, 3, 1000, 1000)  # expires at 2000
    now = 2500
    assert not pncounter.exists(live, now)

    def node(*states: dict[str, Record]) -> Keyspace:
        ks = Keyspace()
        ks.slots.intern(a)
        for st_ in states:
            ks.merge_many({"k": st_})
        ks.flush()
        return ks

    assert node(live).covers("k", live, 1500)  # dominated: as always
    assert not node().covers("k", live, 1500)  # alive when seen, and news to this node
    assert node().covers("k", live, now)  # dead, and held nowhere (collected)
    assert node(live).covers("k", live, now)  # dead here too
    stale = {a: live[a]}  # the old life without its deadline: it still counts here
    assert not node(stale).covers("k", live, now)
    # A node that collected the key and stepped it again: a new life, born after the
    # end of the one seen, with no meta at all.
    fresh = Keyspace()
    fresh.add("k", fresh.slots.intern(slot_of(1)), 1, now)
    fresh.flush()
    assert fresh.covers("k", live, now)
    # A reset seen (no floor: the same life) is news to a node that still counts it.
    reset = pncounter.reset(pncounter.add({}, a, 3, 1000), 1200)
    assert not pncounter.exists(reset, now)
    assert not node(pncounter.add({}, a, 3, 1000)).covers("k", reset, now)
    assert node(reset).covers("k", reset, now)


def test_expiry_stats_are_exact_on_a_small_heap_and_estimated_within_bounded_work():
    from zcounter.model.lives import STATS_SAMPLE

    ks = Keyspace()
    slot = ks.slots.intern(slot_of(0))
    now = 1_000_000
    for i in range(100):
        ks.add(f"k{i}", slot, 1, now, ttl_ms=1000 + i)
    ks.flush()
    assert ks.expiry_stats(now) == (100, 1049)
    assert ks.expiry_stats(now + 1050)[0] == 49  # passed deadlines are not volatile
    many = 5 * STATS_SAMPLE
    for i in range(many):
        ks.add(f"m{i}", slot, 1, now, ttl_ms=10_000)
    ks.flush()
    count, avg = ks.expiry_stats(now)
    # One call looks at STATS_SAMPLE entries at most; the estimate is close.
    assert abs(count - (many + 100)) <= 0.02 * many
    assert 9_000 <= avg <= 10_000
