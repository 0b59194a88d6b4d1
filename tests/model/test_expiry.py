"""Expiry, lives and births (issue 21), on the reference model (zcounter.model.pncounter
with zcounter.model.expiry): the join laws with births and meta, the life rules by
worked examples and by generated timelines (stale old-life records never count after
the deadline, whatever the merge order)."""

from __future__ import annotations

from histories import LAWS, metas, slot_of, timed_states, times
from hypothesis import given, note
from hypothesis import strategies as st

from zcounter.model.expiry import (
    DEFAULT_META,
    META,
    ExpireMode,
    effective_floor,
    join_meta,
    set_register,
)
from zcounter.model.pncounter import (
    ZERO,
    Record,
    State,
    add,
    birth,
    deadline,
    dominates,
    exists,
    expire,
    is_valid_record,
    join_record,
    merge,
    merge_all,
    reset,
    value,
)

A, B, C = slot_of(0), slot_of(1), slot_of(2)

# --------------------------------------------------------------------------- join laws


@LAWS
@given(timed_states(), timed_states())
def test_merge_is_commutative(a, b):
    assert merge(a, b) == merge(b, a)


@LAWS
@given(timed_states(), timed_states(), timed_states())
def test_merge_is_associative(a, b, c):
    assert merge(merge(a, b), c) == merge(a, merge(b, c))


@LAWS
@given(timed_states())
def test_merge_is_idempotent(a):
    assert merge(a, a) == a


@LAWS
@given(timed_states(), timed_states())
def test_merge_is_the_least_upper_bound(a, b):
    m = merge(a, b)
    assert dominates(m, a) and dominates(m, b)
    for slot, rec in m.items():
        if slot == META:
            assert rec == join_meta(a.get(META, (0, 0, 0)), b.get(META, (0, 0, 0)))
        else:
            assert rec == join_record(a.get(slot, ZERO), b.get(slot, ZERO))
            assert is_valid_record(rec) and (len(rec) == 4) == (birth(rec) == 0)


@LAWS
@given(metas, metas, metas)
def test_the_register_is_last_writer_wins(a, b, c):
    """(S, D) lexicographic with "no expiry" above any deadline; F the maximum."""
    j = join_meta(a, b)
    assert j == join_meta(b, a) and join_meta(j, c) == join_meta(a, join_meta(b, c))
    assert j[0] == max(a[0], b[0])
    def order(m):  # (0, 0) is the register never set: the bottom
        return (-1, 0) if m[1:] == (0, 0) else (m[1], m[2] or 2**63)
    assert order(j) == max(order(a), order(b))


def test_persist_beats_expire_at_the_same_instant():
    assert join_meta((0, 5, 20), (0, 5, 0)) == (0, 5, 0)
    assert join_meta((0, 5, 20), (0, 5, 30)) == (0, 5, 30)
    assert join_meta((0, 6, 20), (0, 5, 0)) == (0, 6, 20)


@LAWS
@given(timed_states(), times)
def test_reads_are_those_of_the_counting_records(state, now):
    floor = effective_floor(state.get(META, (0, 0, 0)), now)
    live = [r for s, r in state.items() if s != META and birth(r) >= floor]
    assert value(state, now) == sum(r[0] - r[2] - r[1] + r[3] for r in live)
    assert exists(state, now) == any(r[0] > r[2] or r[1] > r[3] for r in live)
    d = deadline(state, now)
    assert d == (-2 if not exists(state, now) else
                 state[META][2] if META in state and now < state[META][2] else -1)


# --------------------------------------------------------------------------- lives


def test_a_key_expires_and_starts_a_new_life_from_zero_without_expiry():
    s = add({}, A, 5, 1000, ttl_ms=2000)  # INCR + EXPIRE NX: (1000, 3000)
    assert s[META] == (0, 1000, 3000) and deadline(s, 1000) == 3000
    s = add(s, A, 1, 1500, ttl_ms=2000)  # the deadline stays: NX
    assert s[META] == (0, 1000, 3000) and value(s, 2999) == 6
    assert value(s, 3000) == 0 and not exists(s, 3000) and deadline(s, 3000) == -2
    s = add(s, A, 2, 3100)  # a new life: its record rebased, born at 3100
    assert s[A] == (8, 0, 6, 0, 3100) and value(s, 3100) == 2 and deadline(s, 3100) == -1
    s = add(s, A, 1, 3200, ttl_ms=500)  # a new expiry: the old deadline folds into F
    assert s[META] == (3000, 3200, 3700) and value(s, 3200) == 3


def test_two_nodes_starting_a_new_life_concurrently_both_count():
    old = merge(add({}, A, 5, 10, ttl_ms=40), add({}, B, 7, 20))
    assert value(old, 49) == 12 and value(old, 50) == 0
    a = add(old, A, 1, 55)  # each sees the key expired, neither has heard of the other
    b = add(old, B, 2, 61, ttl_ms=100)
    for m in (merge(a, b), merge(b, a), merge_all([b, old, a, old])):
        assert value(m, 70) == 3 and deadline(m, 70) == 161


def test_a_node_that_collected_a_key_steps_fresh_above_its_high_water():
    dead = add({}, A, 5, 10, ttl_ms=40)  # still held, dead, by the other nodes
    swallowed = add({}, A, 1, 70)  # A collected the key: holds nothing; no high-water
    # The max swallows the +1 and the new birth revives the dead life's 5: resurrection.
    assert value(merge(dead, swallowed), 70) == 5
    fresh = add({}, A, 1, 70, high_water=(5, 0))
    assert fresh[A] == (6, 0, 5, 0, 70)
    for m in (merge(dead, fresh), merge(fresh, dead)):
        assert value(m, 70) == 1 and exists(m, 70)


def test_an_observed_reset_drops_the_expiry_and_is_a_no_op_on_a_dead_key():
    s = add({}, A, 5, 10, ttl_ms=40)
    r = reset(s, 20)
    assert r[A] == (5, 0, 5, 0, 10) and r[META] == (0, 20, 0) and not exists(r, 20)
    assert reset(r, 30) == r
    assert reset(s, 60) == s  # expired: nothing to observe
    again = add(r, A, 1, 30)
    assert value(again, 1000) == 1 and deadline(again, 1000) == -1


def test_expire_modes_and_persist():
    s = add({}, A, 1, 10)
    assert expire(s, 100, ExpireMode.XX, 10) == (s, False)
    s, done = expire(s, 100, ExpireMode.NX, 10)
    assert done and s[META] == (0, 10, 100)
    assert not expire(s, 90, ExpireMode.GT, 20)[1] and expire(s, 110, ExpireMode.GT, 20)[1]
    assert not expire(s, 110, ExpireMode.LT, 20)[1] and expire(s, 90, ExpireMode.LT, 20)[1]
    p, done = expire(s, None, None, 20)
    assert done and p[META] == (0, 20, 0) and deadline(p, 200) == -1
    assert expire(p, None, None, 30) == (p, False)
    assert expire({}, 100, None, 10) == ({}, False)
    assert expire(s, 100, None, 200) == (s, False)  # expired: no such key


def test_expire_in_the_past_removes_the_key_at_once():
    """PEXPIREAT 5 at 20 after an increment at 10: a deadline of 5 alone would kill only
    records born before 5; the key must go (Redis deletes it)."""
    s = add({}, A, 1, 10)
    gone, done = expire(s, 5, None, 20)
    assert done and not exists(gone, 20) and value(gone, 20) == 0


# --------------------------------------------------------------------------- timelines

DEADLINE = 30


@st.composite
def timelines(draw: st.DrawFn) -> list[tuple]:
    """Steps in time order over three replicas that all know the deadline: adds (and
    resets) at increasing times around it, and merges between replicas."""
    steps: list[tuple] = []
    now = 0
    for _ in range(draw(st.integers(0, 20))):
        now += draw(st.integers(0, 6))
        node = draw(st.integers(0, 2))
        kind = draw(st.sampled_from(["add", "add", "merge", "reset"]))
        if kind == "merge":
            steps.append(("merge", now, node, draw(st.integers(0, 2))))
        elif kind == "reset":
            steps.append(("reset", now, node))
        else:
            steps.append(("add", now, node, draw(st.integers(-5, 5).filter(bool))))
    return steps


@LAWS
@given(timelines(), st.data())
def test_stale_old_life_records_never_count_after_the_deadline(steps, data):
    """Whatever the adds before the deadline and the order the replicas' states (and
    any stale copies of them) are merged in, after the deadline only the adds made
    after it count (no resets here: the sum is then exact)."""
    start = add({}, C, 1, 0, ttl_ms=DEADLINE)
    replicas: list[dict[str, Record]] = [dict(start) for _ in range(3)]
    copies: list[dict[str, Record]] = [dict(start)]
    after = 0
    for step in steps:
        if step[0] == "add":
            _, now, node, amount = step
            replicas[node] = add(replicas[node], slot_of(node), amount, now)
            after += amount if now >= DEADLINE else 0
        elif step[0] == "merge":
            _, _, src, dst = step
            replicas[dst] = merge(replicas[dst], replicas[src])
        copies.append(dict(replicas[step[2]]))
    if any(s[0] == "reset" for s in steps):
        return
    parts: list[State] = copies + replicas
    order = data.draw(st.permutations(range(len(parts))))
    note(f"order {order}")
    merged = merge_all(parts[i] for i in order)
    assert merged == merge_all(parts)
    end = max([DEADLINE] + [s[1] for s in steps])
    assert value(merged, end) == after


def test_a_register_write_is_stamped_after_the_register_it_overwrites():
    # Two changes in one millisecond: the later must win the merge against a peer that
    # holds the earlier one (not the longer deadline).
    first = set_register(DEFAULT_META, 1000, 41_000)
    persisted = set_register(first, 1000, 0)
    second = set_register(persisted, 1000, 11_000)
    assert second[1] > persisted[1] > first[1] == 1000
    assert join_meta(first, second) == join_meta(second, first) == second
    assert set_register(second, 5000, 0)[1] == 5000  # the clock ahead: its own time
    assert set_register((0, 2**63 - 1, 0), 1000, 5)[1] == 2**63 - 1  # bounded
