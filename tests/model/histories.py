"""Shared Hypothesis strategies and an exact model of the PN-counter with observed reset.

The model keeps events, not totals: every add is an event with an amount, every reset
an event that *observed* exactly the adds its node had seen when it ran.  A replica's
value is the sum of the adds it has seen that no reset it has seen observed.  The
CRDT's per-field maxima must agree with that, whatever the history.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st

from zcounter.model.pncounter import Record, make_slot

#: Budgets: the whole unit suite must stay well under a minute on a shared 2-core machine.
LAWS = settings(max_examples=30, deadline=None)
HISTORIES = settings(max_examples=80, deadline=None)

INCARNATIONS = ("0123456789ab", "a" * 12, "fedcba987654")

#: Slot names of a handful of nodes and incarnations (several slots per node id).
slot_names = st.builds(make_slot, st.integers(1, 4), st.sampled_from(INCARNATIONS))


@st.composite
def records(draw: st.DrawFn, hi: int = 10**12) -> Record:
    """A valid record: bp <= p, bn <= n."""
    p = draw(st.integers(0, hi))
    n = draw(st.integers(0, hi))
    return p, n, draw(st.integers(0, p)), draw(st.integers(0, n))


#: Any valid state (totals far below the bound: up to 12 slots of 10**12).
states = st.dictionaries(slot_names, records(), max_size=6)

#: Wall times in a small range, so that births, floors and deadlines often meet.
times = st.integers(0, 60)
#: A key's meta (F, S, D) (issue 21).
metas = st.tuples(times, times, st.one_of(st.just(0), times))


@st.composite
def timed_records(draw: st.DrawFn) -> Record:
    """A valid record with a birth (written as the 4-tuple when born at 0)."""
    p = draw(st.integers(0, 50))
    n = draw(st.integers(0, 50))
    b = draw(times)
    rec = (p, n, draw(st.integers(0, p)), draw(st.integers(0, n)))
    return (*rec, b) if b else rec


@st.composite
def timed_states(draw: st.DrawFn) -> dict[str, Record]:
    """A state with births and (often) a meta under "~"."""
    state: dict[str, Record] = draw(st.dictionaries(slot_names, timed_records(), max_size=4))
    meta = draw(metas)
    if meta != (0, 0, 0):
        state["~"] = meta
    return state


#: Non-zero steps, both signs, small and large.
amounts = st.integers(-(2**32), 2**32).filter(bool)


def steps(nodes: int) -> st.SearchStrategy[tuple]:
    """One step of a history over ``nodes`` replicas (indices 0..nodes-1)."""
    node = st.integers(0, nodes - 1)
    return st.one_of(
        st.tuples(st.just("add"), node, amounts),
        st.tuples(st.just("reset"), node),
        st.tuples(st.just("merge"), node, node),
    )


def histories(nodes: int, max_size: int = 25) -> st.SearchStrategy[list[tuple]]:
    return st.lists(steps(nodes), max_size=max_size)


@dataclass
class ModelReplica:
    adds: set[int] = field(default_factory=set)
    resets: set[int] = field(default_factory=set)


@dataclass
class Model:
    """Events, and what each replica has seen of them."""

    replicas: list[ModelReplica]
    amount: dict[int, int] = field(default_factory=dict)
    observed: dict[int, frozenset[int]] = field(default_factory=dict)

    @classmethod
    def of(cls, nodes: int) -> Model:
        return cls([ModelReplica() for _ in range(nodes)])

    def add(self, node: int, amount: int) -> None:
        event = len(self.amount) + len(self.observed)
        self.amount[event] = amount
        self.replicas[node].adds.add(event)

    def reset(self, node: int) -> None:
        event = len(self.amount) + len(self.observed)
        self.observed[event] = frozenset(self.replicas[node].adds)
        self.replicas[node].resets.add(event)

    def merge(self, src: int, dst: int) -> None:
        self.replicas[dst].adds |= self.replicas[src].adds
        self.replicas[dst].resets |= self.replicas[src].resets

    def value_of(self, adds: set[int], resets: set[int]) -> int:
        cancelled: set[int] = set()
        for r in resets:
            cancelled |= self.observed[r]
        return sum(self.amount[a] for a in adds - cancelled)

    def value(self, node: int) -> int:
        r = self.replicas[node]
        return self.value_of(r.adds, r.resets)

    def total(self) -> int:
        """The value once every replica has seen everything."""
        return self.value_of(set(self.amount), set(self.observed))


def slot_of(node: int) -> str:
    """Replica ``node``'s own slot (node ids from 1)."""
    return make_slot(node + 1, f"{node + 1:012x}")

