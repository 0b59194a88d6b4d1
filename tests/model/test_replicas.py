"""Replicas of the keyspace under any pattern of adds, decrements, resets, full-state
merges, batches and delta deliveries, checked against an exact event model after every
step (a Hypothesis state machine in the manner of merchise/xotl.crdt's testing/base.py).

The model records events: an add (key, slot, amount) and a reset (key, the adds its
replica had seen of that key).  What a replica knows is a set of adds and a set of
*reset parts* (reset, slot): a record on the wire carries one slot's totals and bases,
so a delta of some slots conveys exactly the adds of those slots its sender knew and
the parts of resets it knew for those slots.  A replica's value of a key is the sum of
the adds it knows that no reset part it knows covers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from histories import amounts, slot_of
from hypothesis import note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

from zcounter.model import pncounter
from zcounter.model.keyspace import Keyspace

NODES = 3
KEYS = ("default", "ключ")


@dataclass(frozen=True)
class AddEvent:
    key: str
    slot: str
    amount: int


@dataclass
class Knowledge:
    adds: set[int] = field(default_factory=set)
    parts: set[tuple[int, str]] = field(default_factory=set)

    def __ior__(self, other: Knowledge) -> Knowledge:
        self.adds |= other.adds
        self.parts |= other.parts
        return self


@dataclass(frozen=True)
class Delta:
    """One batch's ``Flushed.local`` and what it conveys in the model."""

    sender: int
    records: dict[str, dict[str, pncounter.Record]]
    conveys: Knowledge


class EventModel:
    def __init__(self) -> None:
        self.adds: dict[int, AddEvent] = {}
        self.resets: dict[int, tuple[str, frozenset[int]]] = {}
        self.known = [Knowledge() for _ in range(NODES)]

    def _next(self) -> int:
        return len(self.adds) + len(self.resets)

    def add(self, i: int, key: str, amount: int) -> None:
        event = self._next()
        self.adds[event] = AddEvent(key, slot_of(i), amount)
        self.known[i].adds.add(event)

    def reset(self, i: int, key: str) -> None:
        event = self._next()
        seen = frozenset(a for a in self.known[i].adds if self.adds[a].key == key)
        self.resets[event] = (key, seen)
        self.known[i].parts |= {(event, self.adds[a].slot) for a in seen}

    def restricted(self, i: int, slots_by_key: dict[str, set[str]]) -> Knowledge:
        """What replica ``i`` knows of these keys' slots (what their records carry)."""
        known = self.known[i]
        return Knowledge(
            {a for a in known.adds
             if self.adds[a].slot in slots_by_key.get(self.adds[a].key, ())},
            {(r, s) for r, s in known.parts if s in slots_by_key.get(self.resets[r][0], ())})

    def value(self, knowledge: Knowledge, key: str) -> int:
        covered = {a for r, s in knowledge.parts if self.resets[r][0] == key
                   for a in self.resets[r][1] if self.adds[a].slot == s}
        return sum(self.adds[a].amount for a in knowledge.adds - covered
                   if self.adds[a].key == key)

    def everything(self) -> Knowledge:
        out = Knowledge()
        for known in self.known:
            out |= known
        return out


class KeyspaceReplicas(RuleBasedStateMachine):
    """NODES keyspaces; rules change them, batch them, and move full states or deltas."""

    deltas = Bundle("deltas")

    @initialize()
    def start(self) -> None:
        self.spaces = [Keyspace() for _ in range(NODES)]
        self.slots = [ks.slots.intern(slot_of(i)) for i, ks in enumerate(self.spaces)]
        self.model = EventModel()
        #: The join of every delta ever published, by key.
        self.published: dict[str, dict[str, pncounter.Record]] = {}

    nodes = st.integers(0, NODES - 1)
    keys = st.sampled_from(KEYS)

    @rule(i=nodes, key=keys, amount=amounts)
    def add(self, i: int, key: str, amount: int) -> None:
        self.spaces[i].add(key, self.slots[i], amount, 0)
        self.model.add(i, key, amount)

    @rule(i=nodes, key=keys)
    def reset(self, i: int, key: str) -> None:
        written = self.spaces[i].reset(key, 0)
        self.model.reset(i, key)
        assert all(bp == p and bn == n for p, n, bp, bn in written.values())

    @rule(src=nodes, dst=nodes)
    def merge_full_state(self, src: int, dst: int) -> None:
        for key in KEYS:
            self.spaces[dst].merge(key, self.spaces[src].state(key))
        self.model.known[dst] |= self.model.known[src]

    @rule(target=deltas, i=nodes)
    def end_batch(self, i: int) -> Delta:
        ks = self.spaces[i]
        live_before = {k: ks.exists(k, 0) for k in KEYS}
        flushed = ks.flush()
        assert not ks.dirty
        assert ks.live == sum(live_before.values())
        for key, records in flushed.local.items():
            assert records == {s: r for s, r in ks.state(key).items() if s in records}
            assert key in flushed.changed or ks.state(key) == records  # unchanged reset
        for key, records in flushed.local.items():
            self.published[key] = pncounter.merge(self.published.get(key, {}), records)
        conveys = self.model.restricted(
            i, {k: set(records) for k, records in flushed.local.items()})
        return Delta(i, flushed.local, conveys)

    @rule(delta=deltas, dst=nodes)
    def deliver(self, delta: Delta, dst: int) -> None:
        """A delta may arrive anywhere, late, in any order, any number of times."""
        for key, records in delta.records.items():
            self.spaces[dst].merge(key, records)
        self.model.known[dst] |= delta.conveys

    @rule(delta=consumes(deltas))
    def lose(self, delta: Delta) -> None:
        """A delta that is never delivered (full states still repair)."""

    @invariant()
    def every_replica_matches_the_model(self) -> None:
        for i, ks in enumerate(self.spaces):
            for key in KEYS:
                expected = self.model.value(self.model.known[i], key)
                assert ks.value(key, 0) == expected, (i, key, ks.state(key))

    @invariant()
    def the_merge_of_all_replicas_matches_the_model(self) -> None:
        everything = self.model.everything()
        for key in KEYS:
            union = pncounter.merge_all(ks.state(key) for ks in self.spaces)
            note(f"{key}: {union}")
            assert pncounter.value(union, 0) == self.model.value(everything, key)
            assert all(pncounter.is_valid_record(r) for r in union.values())

    @invariant()
    def once_every_batch_ended_the_deltas_carry_everything(self) -> None:
        """Every record any replica holds was published by the batch that made it."""
        if any(ks.dirty for ks in self.spaces):
            return
        for key in KEYS:
            union = pncounter.merge_all(ks.state(key) for ks in self.spaces)
            assert self.published.get(key, {}) == union


KeyspaceReplicas.TestCase.settings = settings(
    max_examples=40, stateful_step_count=30, deadline=None)
TestKeyspaceReplicas = KeyspaceReplicas.TestCase
