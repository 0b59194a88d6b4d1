"""The shared fuzz targets (zcounter.fuzz.targets) under Hypothesis: each parser and door
with structured inputs (the door's grammar, sometimes damaged at the byte level) and raw
bytes.  Short by design (``MAX_EXAMPLES``): ``bin/fuzz --minutes N`` runs the same
targets for as long as asked.

An input that reaches a bug still open (zcounter.fuzz.known, measured at run time) is
skipped while that bug is present, so this suite tests those inputs as soon as the fix
lands; ``bin/fuzz`` keeps reporting them meanwhile."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

import pytest
from hypothesis import assume, given, note, settings
from hypothesis import strategies as st

from zcounter.fuzz import targets
from zcounter.fuzz.grammar import GRAMMARS, mutate
from zcounter.fuzz.known import open_finding
from zcounter.fuzz.metrics import MetricsTarget
from zcounter.protocol import codec

T = TypeVar("T")

#: Examples per test: each test stays within a few seconds on this 2-core machine.
MAX_EXAMPLES = 100


class HypothesisChooser:
    """The grammar's choices drawn by Hypothesis, so failing inputs shrink."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def pick(self, options: Sequence[T]) -> T:
        return self.data.draw(st.sampled_from(options))

    def integer(self, lo: int, hi: int) -> int:
        return self.data.draw(st.integers(lo, hi))

    def raw(self, max_size: int) -> bytes:
        return self.data.draw(st.binary(max_size=min(max_size, 256)))


def structured(door: str, data: st.DataObject) -> bytes:
    chooser = HypothesisChooser(data)
    message = GRAMMARS[door](chooser)
    if data.draw(st.booleans()):
        message = mutate(message, chooser)
    note(f"input: {message!r}")
    return message


def run(door: str, message: bytes) -> None:
    assume(open_finding(door, message) is None)
    targets.IN_PROCESS[door](message)


@pytest.mark.parametrize("door", sorted(targets.IN_PROCESS))
@settings(max_examples=MAX_EXAMPLES)
@given(data=st.data())
def test_structured_inputs_never_break_a_door(door: str, data: st.DataObject) -> None:
    run(door, structured(door, data))


@pytest.mark.parametrize("door", sorted(targets.IN_PROCESS))
@settings(max_examples=MAX_EXAMPLES)
@given(message=st.binary(max_size=2048))
def test_raw_bytes_never_break_a_door(door: str, message: bytes) -> None:
    run(door, message)


@pytest.fixture(scope="module")
def metrics_target() -> Iterator[MetricsTarget]:
    with MetricsTarget() as target:
        yield target


@settings(max_examples=60)
@given(data=st.data())
def test_the_metrics_door_answers_a_scrape_after_any_request(
        metrics_target: MetricsTarget, data: st.DataObject) -> None:
    metrics_target(structured("metrics", data))


@settings(max_examples=30)
@given(message=st.binary(max_size=1024))
def test_the_metrics_door_answers_a_scrape_after_raw_bytes(
        metrics_target: MetricsTarget, message: bytes) -> None:
    metrics_target(message)


# ----------------------------------------------------------------- the targets catch bugs


def test_a_decoder_that_leaks_an_exception_fails_the_native_target(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The oracle is not vacuous: a decoder raising anything but ProtocolError is a bug."""
    def broken(frame: bytes) -> object:
        raise KeyError("op")
    monkeypatch.setattr(codec, "decode_request", broken)
    with pytest.raises(KeyError):
        targets.native_request(b'{"op": "ping"}')


def test_a_reply_that_is_not_resp_fails_the_resp_target(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from zcounter.protocol.resp import replies

    monkeypatch.setattr(replies, "error", lambda text: b"-" + text.encode())  # no CRLF
    with pytest.raises(targets.TargetFailed, match="end inside a reply"):
        targets.resp_session(b"*1\r\n$4\r\nNOPE\r\n")


def test_every_grammar_reaches_past_the_first_check() -> None:
    """Most structured inputs decode: the grammar explores the code behind the parser,
    not only its first refusal (counted over a fixed seed)."""
    import random

    from zcounter.errors import ProtocolError
    from zcounter.fuzz.grammar import RandomChooser

    chooser = RandomChooser(random.Random(19))
    decoded = 0
    for _ in range(500):
        try:
            codec.decode_request(GRAMMARS["native"](chooser))
            decoded += 1
        except ProtocolError:
            pass
    assert decoded > 50, decoded


def test_every_listed_open_finding_is_still_present() -> None:
    """A fixed bug must leave zcounter.fuzz.known: while listed, inputs reaching it are
    skipped, so a fix left listed would let the bug come back unnoticed."""
    from zcounter.fuzz.known import FINDINGS

    fixed = [f.name for f in FINDINGS if not f.present()]
    assert not fixed, f"fixed, remove from zcounter/fuzz/known.py: {fixed}"
