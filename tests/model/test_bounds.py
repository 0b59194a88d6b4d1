"""The bounds rule of zcounter/model/pncounter.py ("Bounds", issue 19), by Hypothesis:

* legal histories of adds, resets and merges across three replicas, started near
  2**63-1, are never refused: every state one replica sends another passes the peer
  codec and is merged; the replicas converge, and every read is the exact event model's
  value, saturated;
* a step is refused exactly when the live total in its direction, or the stepping slot's
  own total, would pass 2**63-1, and a refused step changes nothing;
* such histories do pass the 0.2 rule (a sum of increments past 2**63-1), which is why
  that rule was wrong for merges;
* whatever valid state a forger makes a replica merge (slots that are not the replicas'
  own), a reset makes the key take steps again at once.
"""

from __future__ import annotations

import contextlib

from histories import HISTORIES, Model, records, slot_of
from hypothesis import event, given, note
from hypothesis import strategies as st

from zcounter.model.keyspace import Keyspace
from zcounter.model.pncounter import (
    MAX_STEP,
    MAX_TOTAL,
    Overflow,
    live_totals,
    make_slot,
    saturate,
    totals,
)
from zcounter.protocol.codec import decode_broadcast, encode_broadcast
from zcounter.protocol.messages import Delta

KEY = "k"
NODES = 3
SEED = 3  # the model's fourth replica: the node that brought the key near the bound

amounts = st.integers(-MAX_STEP, MAX_STEP).filter(bool)
steps = st.one_of(
    st.tuples(st.just("add"), st.integers(0, NODES - 1), amounts),
    st.tuples(st.just("reset"), st.integers(0, NODES - 1)),
    st.tuples(st.just("merge"), st.integers(0, NODES - 1), st.integers(0, NODES - 1)),
)
#: How far below the bound the key starts: within a few of the largest steps of it.
starts = st.integers(0, 4 * MAX_STEP).map(lambda gap: MAX_TOTAL - gap)


def carried(ks: Keyspace, origin: int) -> dict[str, dict[str, tuple[int, int, int, int]]]:
    """The key's state as a peer receives it: through the broadcast codec (which
    raises ProtocolError for anything it would drop)."""
    message = decode_broadcast(encode_broadcast(Delta(origin, "e", 1, {KEY: ks.state(KEY)})))
    assert isinstance(message, Delta)
    return dict(message.states)


def start(seed_total: int, sign: int) -> tuple[list[Keyspace], Model, list[int]]:
    """Three replicas that all hold one node's ``seed_total`` (up or down)."""
    model = Model.of(NODES + 1)
    model.add(SEED, sign * seed_total)
    seed = slot_of(SEED)
    record = (seed_total, 0, 0, 0) if sign > 0 else (0, seed_total, 0, 0)
    spaces = [Keyspace() for _ in range(NODES)]
    for i, ks in enumerate(spaces):
        assert ks.merge_many({KEY: {seed: record}}) == 1
        model.merge(SEED, i)
    return spaces, model, [ks.slots.intern(slot_of(i)) for i, ks in enumerate(spaces)]


def would_overflow(ks: Keyspace, own: str, amount: int) -> bool:
    """The rule, computed from the state by name (independently of Keyspace.add)."""
    state = ks.state(KEY)
    p_live, n_live = live_totals(state, 0)
    p, n, _, _ = state.get(own, (0, 0, 0, 0))
    if amount > 0:
        return p_live + amount > MAX_TOTAL or p + amount > MAX_TOTAL
    return n_live - amount > MAX_TOTAL or n - amount > MAX_TOTAL


@HISTORIES
@given(starts, st.sampled_from([1, -1]), st.lists(steps, max_size=30))
def test_legal_histories_near_the_bound_are_never_refused(seed_total, sign, history):
    spaces, model, slots = start(seed_total, sign)
    for step in history:
        note(repr(step))
        if step[0] == "add":
            _, i, amount = step
            ks = spaces[i]
            expected = would_overflow(ks, slot_of(i), amount)
            before = ks.state(KEY)
            try:
                ks.add(KEY, slots[i], amount, 0)
            except Overflow:
                assert expected, "a step within the rule was refused"
                event("a step refused")
                assert ks.state(KEY) == before
                continue
            assert not expected, "a step past the rule was taken"
            model.add(i, amount)
        elif step[0] == "reset":
            _, i = step
            spaces[i].reset(KEY, 0)
            model.reset(i)
            assert spaces[i].value(KEY, 0) == 0
        else:
            _, src, dst = step
            # Never refused: merge_many returns how many keys grew, never None/raises.
            assert spaces[dst].merge_many(carried(spaces[src], src + 1)) in (0, 1)
            model.merge(src, dst)
        for i, ks in enumerate(spaces):
            assert ks.value(KEY, 0) == saturate(model.value(i))
        if step[0] != "merge":
            spaces[step[1]].flush()
    # Full exchange: every replica ends with the same state and the model's value.
    for src in range(NODES):
        for dst in range(NODES):
            spaces[dst].merge_many(carried(spaces[src], src + 1))
    assert all(ks.state(KEY) == spaces[0].state(KEY) for ks in spaces)
    assert all(ks.value(KEY, 0) == saturate(model.total()) for ks in spaces)
    if max(totals(spaces[0].state(KEY))) > MAX_TOTAL:
        event("converged past the old bound")  # ~5 % of examples
    # And a reset anywhere makes the key take a step of either sign again.
    spaces[0].reset(KEY, 0)
    spaces[0].add(KEY, slots[0], 1, 0)
    spaces[0].add(KEY, slots[0], -1, 0)
    assert spaces[0].value(KEY, 0) == 0


def test_concurrent_legal_steps_pass_the_old_bound():
    """The counterexample to 0.2's rule: two nodes at 2**63-11 each add 10 before
    hearing of the other; both steps were legal, and the merge sums to 2**63+9."""
    spaces, _, slots = start(MAX_TOTAL - 10, 1)
    spaces[0].add(KEY, slots[0], 10, 0)
    spaces[1].add(KEY, slots[1], 10, 0)
    merged = carried(spaces[1], 2)
    assert totals(merged[KEY])[0] <= MAX_TOTAL  # each side alone was within the old bound
    assert spaces[0].merge_many(merged) == 1
    assert totals(spaces[0].state(KEY))[0] == MAX_TOTAL + 10  # 0.2 dropped this merge
    assert spaces[0].value(KEY, 0) == MAX_TOTAL  # saturated; exact is MAX_TOTAL + 10


#: Slots a forger may name: any node's, except the replicas' current ones.
forged_slots = st.builds(make_slot, st.integers(1, 9), st.just("00000000feed"))


@HISTORIES
@given(st.dictionaries(forged_slots, records(hi=MAX_TOTAL), min_size=1, max_size=4),
       st.lists(steps, max_size=10), st.integers(0, NODES - 1))
def test_no_forged_state_stops_a_key_for_good(forged, history, victim):
    spaces, _, slots = start(MAX_TOTAL // 2, 1)
    for step in history:
        if step[0] == "add":
            with contextlib.suppress(Overflow):
                spaces[step[1]].add(KEY, slots[step[1]], step[2], 0)
        elif step[0] == "reset":
            spaces[step[1]].reset(KEY, 0)
        else:
            spaces[step[2]].merge_many(carried(spaces[step[1]], step[1] + 1))
    ks = spaces[victim]
    assert ks.merge_many({KEY: forged}) in (0, 1)  # valid records: merged
    assert -MAX_TOTAL <= ks.value(KEY, 0) <= MAX_TOTAL  # reads never fail
    ks.reset(KEY, 0)  # DEL
    assert ks.value(KEY, 0) == 0
    assert ks.add(KEY, slots[victim], MAX_STEP, 0)[0] >= MAX_STEP
    assert ks.add(KEY, slots[victim], -MAX_STEP, 0)[1] >= MAX_STEP
    assert ks.value(KEY, 0) == 0
