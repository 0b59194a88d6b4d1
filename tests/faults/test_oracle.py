"""The fault suite's oracle catches what it claims to catch (no root, no processes).

A hand-made history that a correct cluster could produce passes; each mutation below -
a lost or doubled update, nodes that disagree, a read that goes backwards or sees more
than was attempted, a base without a reset - fails it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest

from .scenarios import Result, check

S1, S2 = "1.00000000000a", "2.00000000000b"


def history() -> Result:
    """Node 1 adds 5 to a and takes 2 from b; node 2 adds 3 to a (unknown outcome, and
    applied); node 1's +7 to b was refused (not applied).  Reads along the way."""
    r = Result("synthetic", keys=["a", "b"])
    r.ops = [
        [1, "a", 5, "ok", 1.0, 1.1, "local", ""],
        [1, "b", -2, "ok", 1.2, 1.3, "local", ""],
        [2, "a", 3, "unknown", 1.4, 2.4, "majority", ""],
        [1, "b", 7, "fail", 1.5, 1.6, "local", ""],
    ]
    final = {"a": {S1: [5, 0, 0, 0], S2: [3, 0, 0, 0]}, "b": {S1: [0, 2, 0, 0]}}
    r.reads = [
        [1, 1.15, {"a": {S1: [5, 0, 0, 0]}, "b": {}}],
        [1, 1.35, {"b": {S1: [0, 2, 0, 0]}}],  # a reader reports what changed
        [2, 1.45, {"a": {S2: [3, 0, 0, 0]}, "b": {}}],
        [2, 3.0, copy.deepcopy(final)],
        [1, 3.0, copy.deepcopy(final)],
    ]
    r.final = {1: copy.deepcopy(final), 2: copy.deepcopy(final)}
    r.recovery_ok = {1: 1, 2: 1}
    return r


def test_a_possible_history_passes() -> None:
    check(history())


def lose_the_ok_update(r: Result) -> None:
    for states in r.final.values():
        states["a"][S1] = [4, 0, 0, 0]  # type: ignore[index]


def apply_the_refused_update(r: Result) -> None:
    for states in r.final.values():
        states["b"][S1] = [7, 2, 0, 0]  # type: ignore[index]


def apply_a_decrement_twice(r: Result) -> None:
    for states in r.final.values():
        states["b"][S1] = [0, 4, 0, 0]  # type: ignore[index]


def disagree(r: Result) -> None:
    r.final[2]["a"][S2] = [2, 0, 0, 0]  # type: ignore[index]


def go_backwards(r: Result) -> None:
    r.reads.append([1, 1.25, {"a": {S1: [4, 0, 0, 0]}}])


def see_more_than_attempted(r: Result) -> None:
    # Before node 2 started its +3, a node shows it (and node 1's +5).
    r.reads.append([2, 1.39, {"a": {S1: [5, 0, 0, 0], S2: [3, 0, 0, 0]}}])


def set_a_base(r: Result) -> None:
    for states in r.final.values():
        states["a"][S1] = [5, 0, 5, 0]  # type: ignore[index]


def lose_a_node(r: Result) -> None:
    r.final[2] = None


def no_recovery(r: Result) -> None:
    r.recovery_ok = {1: 3}


@pytest.mark.parametrize("mutate", [
    lose_the_ok_update, apply_the_refused_update, apply_a_decrement_twice, disagree,
    go_backwards, see_more_than_attempted, set_a_base, lose_a_node, no_recovery])
def test_the_oracle_catches(mutate: Callable[[Result], None]) -> None:
    r = history()
    mutate(r)
    with pytest.raises(AssertionError):
        check(r)


def test_a_wiped_node_may_go_backwards_and_lose_its_indeterminate_updates() -> None:
    r = history()
    r.ops.append([1, "a", 100, "indet", 2.5, 2.6, "majority", ""])
    r.wiped_at = {1: 2.8}
    r.reads.insert(3, [1, 2.7, {"a": {S1: [105, 0, 0, 0], S2: [3, 0, 0, 0]}}])
    check(r)  # the +100 was lost with node 1's disk, and node 1 read less after the wipe
    r.wiped_at = {}
    with pytest.raises(AssertionError):
        check(r)
