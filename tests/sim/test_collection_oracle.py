"""The oracle has teeth for collection (issue 21): a node that answers every Hold with
"yes" blindly lets its peers collect keys it still holds live or different; the seed
fails with a sentence that says so - through the per-answer check, and, with that
check switched off, through the check every collection makes against every node."""

from __future__ import annotations

from dataclasses import replace

import pytest

from zcounter.protocol.messages import Holding
from zcounter.protocol.node import NodeCore
from zcounter.protocol.outputs import ToClient
from zcounter.sim import Simulation
from zcounter.sim.checker import Checker

_TAKE = NodeCore.take_outputs


def _with(obj, **changes):  # type: ignore[no-untyped-def]
    # Outputs and ToClient are dataclasses or named tuples, whichever the protocol uses.
    return obj._replace(**changes) if hasattr(obj, "_replace") else replace(obj, **changes)


def _blind_yes(self: NodeCore):  # type: ignore[no-untyped-def]
    out = _TAKE(self)
    messages = [_with(m, reply=Holding(m.reply.id, m.reply.node,
                                         (True,) * len(m.reply.ok)))
                if isinstance(m, ToClient) and isinstance(m.reply, Holding) else m
                for m in out.messages]
    return _with(out, messages=messages)


def _run(seeds: range) -> list[str]:
    failures = []
    for seed in seeds:
        result = Simulation(seed, 3, 600).run()
        if not result.ok:
            failures.append(result.failure or "")
    return failures


@pytest.mark.parametrize("answer_check", [True, False], ids=["per-answer", "at-collection"])
def test_a_blind_hold_answer_fails_the_seed(monkeypatch: pytest.MonkeyPatch,
                                            answer_check: bool) -> None:
    monkeypatch.setattr(NodeCore, "take_outputs", _blind_yes)
    if not answer_check:
        monkeypatch.setattr(Checker, "holding", lambda *args: None)
    failures = _run(range(10))
    assert failures, "no seed caught Hold answered yes blindly"
    wanted = ("said it holds" if answer_check else
              "a Hold answered yes without holding it dead")
    assert any(wanted in f or "came back" in f for f in failures), failures
