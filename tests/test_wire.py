"""Boundary validation: every malformed message is a ProtocolError naming the problem."""

from __future__ import annotations

import contextlib

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from zcounter.crdt import MAX_COUNT, make_slot
from zcounter.errors import ProtocolError
from zcounter.wire import (
    MAX_REQUEST_BYTES,
    GetCount,
    Heartbeat,
    Increment,
    PeerReply,
    Ping,
    Pull,
    Push,
    Reply,
    Status,
    Update,
    decode_broadcast,
    decode_peer_reply,
    decode_reply,
    decode_request,
    encode_broadcast,
    encode_peer_reply,
    encode_peer_request,
    encode_reply,
    encode_request,
    request_tag,
)

S1 = make_slot(1, "0123456789ab")


@pytest.mark.parametrize("request_", [
    Increment(id=1, by=5, rid="abc", wait="majority", timeout_ms=500, seen={S1: 3}),
    Increment(id="x", by=1),
    GetCount(id=2, read="all", timeout_ms=100, seen={S1: 1}),
    Status(id=None),
    Ping(id=7),
])
def test_client_requests_round_trip(request_):
    assert decode_request([encode_request(request_)]) == request_


@pytest.mark.parametrize("request_", [Pull(3, 2), Push(4, 2, {S1: 9}, ("r1", "r2"))])
def test_peer_requests_round_trip(request_):
    assert decode_request([encode_peer_request(request_)]) == request_


@pytest.mark.parametrize("message", [Update(1, 5, {S1: 4}, ("a",)),
                                     Heartbeat(1, 6, {S1: 4}, "ff")])
def test_broadcasts_round_trip(message):
    assert decode_broadcast(encode_broadcast(message)) == message


def test_replies_round_trip():
    ok = Reply(id=1, node=2, ok=True, count=5, slots={S1: 5}, duplicate=True)
    err = Reply(id="t", node=2, ok=False, error="overflow", message="too big")
    assert decode_reply(encode_reply(ok)) == ok
    assert decode_reply(encode_reply(err)) == err
    peer = PeerReply(1, 2, {S1: 1})
    assert decode_peer_reply(encode_peer_reply(peer)) == peer


BAD_REQUESTS = {
    b"not json": "not valid JSON",
    b"[1, 2]": "JSON object",
    b"{}": "missing field 'op'",
    b'{"op": "explode"}': "unknown operation",
    b'{"op": "increment", "by": 0}': "between 1 and",
    b'{"op": "increment", "by": -1}': "between 1 and",
    b'{"op": "increment", "by": 4294967297}': "between 1 and",
    b'{"op": "increment", "by": 1.5}': "integer",
    b'{"op": "increment", "by": true}': "integer",
    b'{"op": "increment", "by": "1"}': "integer",
    b'{"op": "increment", "wait": "some"}': "one of local",
    b'{"op": "increment", "rid": "has space"}': "request id",
    b'{"op": "increment", "rid": ""}': "request id",
    b'{"op": "get", "read": 3}': "one of local",
    b'{"op": "get", "timeout_ms": 0}': "timeout_ms",
    b'{"op": "get", "seen": {"bogus": 1}}': "malformed slot",
    b'{"op": "get", "seen": {"1.0123456789ab": -1}}': "integer in 0",
    b'{"op": "ping", "id": [1]}': "field 'id'",
    b'{"op": "push", "id": 1, "n": 2}': "must be an object",
    b'{"op": "pull", "id": 1, "n": 0}': "between 1",
}


@pytest.mark.parametrize("data,fragment", BAD_REQUESTS.items())
def test_bad_requests_name_the_problem(data, fragment):
    with pytest.raises(ProtocolError, match=fragment):
        decode_request([data])


def test_frame_count_and_size_are_checked():
    with pytest.raises(ProtocolError, match="expected 1 frame"):
        decode_request([b"", b'{"op": "ping"}'])
    big = orjson.dumps({"op": "ping", "pad": "x" * MAX_REQUEST_BYTES})
    with pytest.raises(ProtocolError, match="too large"):
        decode_request([big])


def test_slot_sums_past_the_limit_are_refused():
    s2 = make_slot(2, "0123456789ab")
    data = orjson.dumps({"t": "h", "n": 1, "q": 1, "s": {S1: MAX_COUNT, s2: 1}, "d": "x"})
    with pytest.raises(ProtocolError, match="sums past"):
        decode_broadcast(data)


def test_request_tag_is_recovered_best_effort():
    assert request_tag(b'{"op": "nope", "id": 42}') == 42
    assert request_tag(b"garbage") is None


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_escape_as_other_errors(data):
    for decode in (lambda d: decode_request([d]), decode_broadcast, decode_peer_reply,
                   decode_reply):
        with contextlib.suppress(ProtocolError):
            decode(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=10)


@given(st.dictionaries(st.sampled_from(["op", "id", "by", "rid", "wait", "read", "seen",
                                        "timeout_ms", "n", "s", "r", "t", "q", "d"]),
                       json_values, max_size=8))
def test_arbitrary_json_objects_are_valid_or_protocol_errors(obj):
    data = orjson.dumps(obj)
    for decode in (lambda d: decode_request([d]), decode_broadcast, decode_peer_reply):
        with contextlib.suppress(ProtocolError):
            decode(data)
