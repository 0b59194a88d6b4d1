"""Births and meta on the wire (issue 21): by-name states carry a record's birth as a
fifth integer (omitted when 0) and the key's meta under "~" as [F, S, D]; pages carry
the meta first and six integers per record; a 0.2 node's page (five per record, no meta)
is converted.  Round trips of what the keyspace produces, and the bounds checked."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zcounter.errors import ProtocolError
from zcounter.model.page import StatePage
from zcounter.protocol.codec import (
    decode_broadcast,
    decode_peer_reply,
    encode_broadcast,
    encode_peer_reply,
)
from zcounter.protocol.messages import Delta, SyncStates

A = "1.0123456789ab"
LAWS = settings(max_examples=30, deadline=None)
big = st.integers(0, 2**63 - 1)


@st.composite
def timed_states(draw: st.DrawFn) -> dict[str, tuple[int, ...]]:
    """A key's state with births (4 fields when 0) and, often, a meta under "~"."""
    out: dict[str, tuple[int, ...]] = {}
    for slot in draw(st.lists(st.sampled_from([A, "2.77aa88bb99cc", "3.000000000003"]),
                              unique=True, max_size=3)):
        p, n, b = draw(big), draw(big), draw(st.one_of(st.just(0), big))
        rec = (p, n, draw(st.integers(0, p)), draw(st.integers(0, n)))
        out[slot] = (*rec, b) if b else rec
    meta = draw(st.tuples(big, big, big))
    if any(meta):
        out["~"] = meta
    return out


@LAWS
@given(st.dictionaries(st.sampled_from(["k", "j", "x"]), timed_states(), max_size=3))
def test_states_and_pages_with_births_and_meta_round_trip(states):
    delta = Delta(1, "e", 1, states)
    assert decode_broadcast(encode_broadcast(delta)).states == states
    page = StatePage.of(states)
    reply = decode_peer_reply(encode_peer_reply(SyncStates(1, 2, page, (), 0)))
    assert isinstance(reply, SyncStates) and dict(reply.states) == states


def test_a_birth_of_zero_and_a_default_meta_are_not_sent():
    data = encode_broadcast(Delta(1, "e", 1, {"k": {A: (1, 0, 0, 0)}}))
    assert orjson.loads(data)["s"] == {"k": {A: [1]}}  # as 0.2 sent it
    data = encode_broadcast(Delta(1, "e", 1, {"k": {A: (1, 0, 0, 0, 7), "~": (0, 5, 9)}}))
    assert orjson.loads(data)["s"] == {"k": {A: [1, 0, 0, 0, 7], "~": [0, 5, 9]}}
    wire = orjson.loads(data)
    wire["s"] = {"k": {A: [1, 0, 0, 0, 0], "~": [0, 0, 0]}}  # zeros sent in full
    decoded = decode_broadcast(orjson.dumps(wire))
    assert isinstance(decoded, Delta) and decoded.states == {"k": {A: (1, 0, 0, 0)}}


def test_a_0_2_page_is_converted():
    old = {"t": "ss", "id": 1, "n": 2, "l": [A], "s": {"k": [0, 5, 1, 2, 0]}, "d": [], "c": 0}
    reply = decode_peer_reply(orjson.dumps(old))
    assert isinstance(reply, SyncStates) and reply.states.records == {"k": [0, 0, 0, 0, 5, 1,
                                                                           2, 0, 0]}
    assert dict(reply.states) == {"k": {A: (5, 1, 2, 0)}}


@pytest.mark.parametrize("flat", [
    [0, 0, 0, 0, 5, 1, 2, 0],  # not meta + whole records
    [0, 0, -1, 0, 5, 1, 2, 0, 0],  # a negative deadline
    [0, 0, 0, 0, 5, 1, 2, 0, -1],  # a negative birth
    [0, 0, 2**63, 0, 5, 1, 2, 0, 0],  # past 2**63-1
    [0, 0, 0, 0, 5, 1, 2, 0, True],  # a bool is no integer
])
def test_bad_pages_are_refused(flat):
    bad = {"t": "ss", "id": 1, "n": 2, "l": [A], "s": {"k": flat}, "d": [], "c": 0, "b": 1}
    with pytest.raises(ProtocolError, match="field 's'"):
        decode_peer_reply(orjson.dumps(bad))
