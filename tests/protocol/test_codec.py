"""The codec (zcounter.protocol.codec): every message round-trips, and every malformed
input is refused at the boundary with a ProtocolError naming what is wrong."""

from __future__ import annotations

import contextlib
import re

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zcounter.errors import ProtocolError
from zcounter.model.page import StatePage
from zcounter.model.pncounter import MAX_STEP, MAX_TOTAL, make_slot
from zcounter.protocol import codec
from zcounter.protocol.codec import (
    MAX_KEYS_PER_GET,
    MAX_PEER_MESSAGE_BYTES,
    MAX_REQUEST_BYTES,
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
    validate_key,
)
from zcounter.protocol.messages import (
    MAX_TTL_MS,
    Add,
    Confirm,
    Counted,
    Delta,
    ErrorCode,
    Expire,
    ExpireMode,
    Fetch,
    Get,
    Heartbeat,
    Held,
    KeysPage,
    Level,
    ListKeys,
    Merge,
    Ping,
    Pong,
    Refused,
    Reset,
    RidPage,
    RidPull,
    StatesReply,
    Status,
    StatusReply,
    SyncBuckets,
    SyncDiff,
    SyncKeys,
    SyncSegments,
    SyncStates,
    Ttl,
)

FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
S1 = make_slot(1, "0123456789ab")

# --------------------------------------------------------------------------- strategies


def text(**kw: int) -> st.SearchStrategy[str]:
    """Text JSON can carry: valid UTF-8, so no lone surrogates."""
    return st.text(st.characters(codec="utf-8"), **kw)


def _fits(key: str) -> bool:
    return 0 < len(key.encode("utf-8")) <= 256


#: Keys: any non-empty text of at most 256 bytes of UTF-8 (``codec="utf-8"``: no lone
#: surrogates), biased to non-ASCII and to the length limit.
keys = st.one_of(
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=20),
    st.text(st.characters(codec="utf-8", min_codepoint=0x80), min_size=1, max_size=64),
    st.sampled_from(["default", "x" * 256, "é" * 128, "🔑" * 64, "a\x00b", "\u2028"]),
).filter(_fits)
slots = st.builds(make_slot, st.integers(1, 999_999_999),
                  st.text("0123456789abcdef", min_size=12, max_size=12))


@st.composite
def records(draw: st.DrawFn, hi: int = 2**40) -> tuple[int, int, int, int]:
    p, n = draw(st.integers(0, hi)), draw(st.integers(0, hi))
    return p, n, draw(st.integers(0, p)), draw(st.integers(0, n))


state = st.dictionaries(slots, records(), max_size=4) | st.builds(
    lambda s: {s: (MAX_TOTAL, MAX_TOTAL, MAX_TOTAL, 0)}, slots)
states = st.dictionaries(keys, state, max_size=4)
tags = st.none() | st.integers(-MAX_TOTAL, MAX_TOTAL) | text(max_size=128)
levels = st.sampled_from(Level)
timeouts = st.integers(1, 10 * 60 * 1000)
rids = st.from_regex(r"\A[A-Za-z0-9._:\-]{1,64}\Z")
epochs = text(max_size=64)
node_ids = st.integers(1, 999_999_999)
req_ids = st.integers(0, MAX_TOTAL)
u64 = st.integers(0, 2**64 - 1)
rid_entries = st.lists(st.tuples(rids, keys, state), max_size=3).map(tuple)
applied = st.dictionaries(node_ids, st.tuples(epochs, st.integers(0, MAX_TOTAL)), max_size=4)
steps = st.integers(1, MAX_STEP) | st.integers(-MAX_STEP, -1)
json_scalars = st.none() | st.booleans() | st.integers(-MAX_TOTAL, MAX_TOTAL) | text()
json_objects = st.dictionaries(text(max_size=8), st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(text(max_size=5), inner, max_size=3), max_leaves=8), max_size=4)

client_requests = st.one_of(
    st.builds(Add, tags, keys, steps, st.none() | rids, levels, timeouts, states, st.booleans(),
              st.just(0) | st.integers(1, MAX_TTL_MS)),
    st.builds(Expire, tags, keys, st.none() | st.integers(0, MAX_TOTAL),
              st.none() | st.sampled_from(ExpireMode), st.none() | rids, levels, timeouts,
              states, st.booleans(), st.none(), st.booleans()).filter(
                  lambda e: e.mode is ExpireMode.LT or not e.also_xx).filter(
                  lambda e: e.at_ms is not None or e.mode is None),  # a mode needs a deadline
    st.builds(Expire, tags, keys, st.none(), st.none() | st.sampled_from(ExpireMode),
              st.none() | rids, levels, timeouts, states, st.booleans(),
              st.integers(0, MAX_TTL_MS), st.booleans()).filter(
                  lambda e: e.mode is ExpireMode.LT or not e.also_xx),
    st.builds(Ttl, tags, keys, levels, timeouts, states, st.booleans()),
    st.builds(Reset, tags, keys, st.none() | rids, levels, timeouts, states, st.booleans()),
    st.builds(Get, tags, st.lists(keys, min_size=1, max_size=5).map(tuple), levels, timeouts,
              states, st.booleans()),
    st.builds(ListKeys, tags, text(max_size=20), st.none() | keys, st.integers(1, 10_000)),
    st.builds(Status, tags),
    st.builds(Ping, tags),
    st.builds(Confirm, tags, keys, st.integers(1, 1_000_000), timeouts),
)
client_replies = st.one_of(
    st.builds(Counted, tags, node_ids,
              st.lists(st.integers(-MAX_TOTAL, MAX_TOTAL), min_size=1, max_size=4).map(tuple),
              states, st.booleans(), st.just(())),
    st.lists(st.booleans(), min_size=1, max_size=4).flatmap(lambda live: st.builds(
        Counted, tags, node_ids, st.just(tuple(range(len(live)))), states, st.booleans(),
        st.just(tuple(live)))),
    st.builds(KeysPage, tags, node_ids, st.lists(st.tuples(
        keys, st.integers(-MAX_TOTAL, MAX_TOTAL)), max_size=4).map(tuple), st.booleans()),
    st.builds(StatusReply, tags, node_ids, json_objects),
    st.builds(Pong, tags, node_ids),
    st.builds(Held, tags, node_ids, keys, st.integers(1, 1_000_000)),
    st.builds(Refused, tags, node_ids, st.sampled_from(ErrorCode), text()),
)
peer_requests = st.one_of(
    st.builds(Fetch, req_ids, node_ids, st.lists(keys, max_size=4).map(tuple)),
    st.builds(Merge, req_ids, node_ids, states, rid_entries),
    st.builds(SyncBuckets, req_ids, node_ids, st.lists(u64, min_size=256, max_size=256).map(
        tuple)),
    st.integers(0, 3).flatmap(lambda n: st.builds(
        SyncSegments, req_ids, node_ids,
        st.lists(st.integers(0, 255), min_size=n, max_size=n).map(tuple),
        st.lists(u64, min_size=256 * n, max_size=256 * n).map(tuple))),
    st.builds(SyncKeys, req_ids, node_ids, st.lists(st.integers(0, 65535), max_size=5).map(
        tuple), st.lists(st.tuples(keys, u64), max_size=4).map(tuple)),
    st.builds(RidPull, req_ids, node_ids, epochs, st.integers(0, MAX_TOTAL)),
)
peer_replies = st.one_of(
    st.builds(StatesReply, req_ids, node_ids, states),
    st.builds(SyncDiff, req_ids, node_ids,
              st.lists(st.integers(0, 65535), max_size=5).map(tuple), applied),
    st.builds(SyncStates, req_ids, node_ids, states.map(StatePage.of),
              st.lists(keys, max_size=4).map(tuple),
              st.integers(0, 65536)),
    st.builds(RidPage, req_ids, node_ids, rid_entries, epochs, st.integers(0, MAX_TOTAL),
              st.booleans()),
)
broadcasts = st.one_of(
    st.builds(Delta, node_ids, epochs, st.integers(0, MAX_TOTAL), states, rid_entries),
    st.builds(Heartbeat, node_ids, epochs, st.integers(0, MAX_TOTAL), u64,
              st.integers(0, MAX_TOTAL), applied, epochs, st.integers(0, MAX_TOTAL)),
)

# --------------------------------------------------------------------------- round trips


@FAST
@given(keys)
def test_every_key_up_to_256_bytes_of_utf8_is_valid(key):
    assert validate_key(key) == key


@FAST
@given(client_requests)
def test_client_requests_round_trip(request):
    assert decode_request(encode_request(request)) == request


@FAST
@given(client_replies)
def test_client_replies_round_trip(reply):
    assert decode_reply(encode_reply(reply)) == reply


@FAST
@given(peer_requests)
def test_peer_requests_round_trip(request):
    assert decode_request(encode_peer_request(request)) == request


@FAST
@given(peer_replies)
def test_peer_replies_round_trip(reply):
    assert decode_peer_reply(encode_peer_reply(reply)) == reply


@FAST
@given(broadcasts)
def test_broadcasts_round_trip(message):
    assert decode_broadcast(encode_broadcast(message)) == message


def test_zcounter_0_1_requests_still_decode_to_the_default_key():
    assert decode_request(b'{"op": "increment", "id": 1}') == Add(1)
    assert decode_request(b'{"op": "increment", "id": 1, "by": 3}') == Add(1, amount=3)
    assert decode_request(b'{"op": "getCount", "id": 2}') == Get(2)
    assert decode_request(b'{"op": "decrement", "id": 3, "key": "k", "by": 2}') == \
        Add(3, "k", -2)


def test_a_page_by_slot_name_from_a_0_2_0_node_is_read():
    """zcounter 0.2.0 sent a repair's states by slot name: a node of this version reads
    them (an old node does not read the new pages: the CHANGELOG says so)."""
    old = (b'{"t": "ss", "id": 1, "n": 2, "d": ["j"], "c": 3, "s": {"k": {"'
           + S1.encode() + b'": [5, 1]}}}')
    reply = decode_peer_reply(old)
    assert reply == SyncStates(1, 2, StatePage.of({"k": {S1: (5, 1, 0, 0)}}), ("j",), 3)


def test_expiry_fields_on_the_wire():
    """What a client sends: a deadline absolute (``at``) or relative (``ttl_ms``), a
    mode only with one; none of it on a plain request (the increment's wire unchanged)."""
    assert orjson.loads(encode_request(Add(1, "k", 2))) == {
        "op": "increment", "id": 1, "key": "k", "by": 2, "wait": "local", "timeout_ms": 2000}
    assert orjson.loads(encode_request(Add(1, "k", -2, ttl_ms=60_000)))["ttl_ms"] == 60_000
    assert decode_request(b'{"op": "expire", "id": 1, "key": "k", "ttl_ms": 1500, '
                          b'"mode": "gt"}') == Expire(1, "k", None, ExpireMode.GT, ttl_ms=1500)
    assert decode_request(b'{"op": "expire", "id": 1, "key": "k", "at": 5}') == Expire(
        1, "k", 5)
    persist = decode_request(b'{"op": "expire", "id": 2, "key": "k", "at": null}')
    assert persist == Expire(2, "k") and persist.at_ms is None and persist.ttl_ms is None
    assert decode_request(b'{"op": "ttl", "id": 3, "key": "k", "read": "all"}') == Ttl(
        3, "k", Level.ALL)
    assert orjson.loads(encode_reply(Counted(4, 1, (1500, 17), {})))["counts"] == [1500, 17]


def test_records_drop_trailing_zeros_on_the_wire():
    wire = orjson.loads(encode_broadcast(Delta(1, "e", 1, {"k": {
        S1: (5, 0, 0, 0), make_slot(2, "0123456789ab"): (5, 3, 5, 0)}})))
    assert wire["s"]["k"] == {S1: [5], make_slot(2, "0123456789ab"): [5, 3, 5]}


# --------------------------------------------------------------------------- bad input

BAD_REQUESTS = {
    # keys
    b'{"op": "increment", "key": ""}': "field 'key' must be a non-empty string",
    orjson.dumps({"op": "increment", "key": "x" * 257}): "field 'key' is 257 bytes",
    orjson.dumps({"op": "increment", "key": "é" * 128 + "x"}): "field 'key' is 257 bytes",
    orjson.dumps({"op": "reset", "key": "🔑" * 64 + "x"}): "field 'key' is 257 bytes",
    orjson.dumps({"op": "get", "key": "x" * 300}): "field 'key' is 300 bytes",
    b'{"op": "increment", "key": 5}': "field 'key' must be a non-empty string",
    b'{"op": "increment", "key": ["k"]}': "field 'key' must be a non-empty string",
    b'{"op": "increment", "key": true}': "field 'key' must be a non-empty string",
    b'{"op": "reset", "key": {}}': "field 'key' must be a non-empty string",
    b'{"op": "get", "keys": ["a", ""]}': "field 'keys' must be a non-empty string",
    b'{"op": "get", "keys": ["a", 1]}': "field 'keys' must be a non-empty string",
    b'{"op": "get", "keys": []}': "field 'keys' must name at least one key",
    b'{"op": "get", "keys": "abc"}': "field 'keys' must be a list",
    orjson.dumps({"op": "get", "keys": ["k"] * (MAX_KEYS_PER_GET + 1)}): "field 'keys'",
    b'{"op": "keys", "after": ""}': "field 'after' must be a non-empty string",
    b'{"op": "increment", "seen": {"": {}}}': "field 'seen' must be a non-empty string",
    # not UTF-8, lone surrogates (refused by the JSON parser, before any field)
    b'{"op":"increment","key":"\xff"}': "not valid JSON",
    b'{"op":"increment","key":"\xed\xa0\x80"}': "not valid JSON",
    b'{"op":"increment","key":"\\ud800"}': "not valid JSON",
    b'{"op":"increment","key":"a\\udc00b"}': "not valid JSON",
    b'{"op":"increment","key":"\\udfff\\ud800"}': "not valid JSON",
    # integers
    b'{"op": "increment", "by": true}': "field 'by' must be an integer",
    b'{"op": "increment", "by": false}': "field 'by' must be an integer",
    b'{"op": "increment", "by": 1.0}': "field 'by' must be an integer",
    b'{"op": "increment", "by": "1"}': "field 'by' must be an integer",
    b'{"op": "increment", "by": null}': "missing field 'by'",
    b'{"op": "decrement", "by": 0}': "field 'by' must be between 1 and 4294967296",
    b'{"op": "decrement", "by": -1}': "field 'by' must be between 1 and 4294967296",
    b'{"op": "increment", "by": 4294967297}': "field 'by' must be between 1 and 4294967296",
    b'{"op": "increment", "by": 18446744073709551615}': "field 'by' must be between",
    b'{"op": "increment", "timeout_ms": true}': "field 'timeout_ms' must be an integer",
    b'{"op": "increment", "timeout_ms": 0}': "field 'timeout_ms' must be between",
    b'{"op": "get", "timeout_ms": 600001}': "field 'timeout_ms' must be between",
    b'{"op": "keys", "limit": true}': "field 'limit' must be an integer",
    b'{"op": "keys", "limit": 0}': "field 'limit' must be between",
    b'{"op": "ping", "id": true}': "field 'id'",
    b'{"op": "ping", "id": 9223372036854775808}': "field 'id'",
    b'{"op": "ping", "id": [1]}': "field 'id'",
    # other fields
    b'{"op": "explode"}': "unknown operation 'explode'",
    b'{"op": 7}': "unknown operation",
    b'{"op": true}': "unknown operation",
    b'{"op": []}': "unknown operation",  # unhashable: once a TypeError that killed the node
    b'{"op": {"a": 1}}': "unknown operation",
    b'{}': "missing field 'op'",
    b'{"op": "increment", "wait": "most"}': "field 'wait' must be one of",
    b'{"op": "reset", "wait": 2}': "field 'wait' must be one of",
    b'{"op": "get", "read": "quorum"}': "field 'read' must be one of",
    b'{"op": "increment", "rid": "has space"}': "request id",
    b'{"op": "increment", "rid": ""}': "request id",
    b'{"op": "reset", "rid": 12}': "request id",
    b'{"op": "keys", "prefix": 1}': "field 'prefix'",
    # states a session sends
    b'{"op": "get", "seen": {"k": {"1.0123456789ab": [1, 0, 2]}}}': "seen['k'].1.0123456789ab",
    b'{"op": "get", "seen": {"k": {"1.0123456789ab": [0, 1, 0, 2]}}}': "a record is",
    b'{"op": "get", "seen": {"k": {"1.0123456789ab": [-1]}}}': "a record is",
    b'{"op": "get", "seen": {"k": {"1.0123456789ab": [true]}}}': "a record is",
    b'{"op": "get", "seen": {"k": {"1.0123456789ab": []}}}': "a record is",
    # Five integers are a record with its birth (issue 21); six are not a record.
    b'{"op": "get", "seen": {"k": {"1.0123456789ab": [1, 1, 1, 1, 1, 1]}}}': "a record is",
    b'{"op": "get", "seen": {"k": {"1.0123456789ab": [1, 1, 1, 1, -1]}}}': "a record is",
    b'{"op": "get", "seen": {"k": {"~": [1, 1]}}}': "the meta",
    b'{"op": "get", "seen": {"k": {"~": [1, 1, -1]}}}': "the meta",
    b'{"op": "get", "seen": {"k": {"~": [1, 1, true]}}}': "the meta",
    b'{"op": "get", "seen": {"k": {"1.0123456789ab": 5}}}': "a record is",
    b'{"op": "get", "seen": {"k": {"bogus": [1]}}}': "seen['k']: malformed slot name",
    b'{"op": "get", "seen": {"k": {"1.0123456789ab\\n": [1]}}}': "malformed slot name",
    b'{"op": "get", "seen": {"k": [1]}}': "seen['k'] must be an object",
    b'{"op": "get", "seen": [1]}': "field 'seen' must be an object",
    # peer requests on the same socket
    b'{"op": "fetch", "id": 1, "n": 0, "k": []}': "field 'n' must be between 1",
    b'{"op": "fetch", "id": 1, "n": true, "k": []}': "field 'n' must be an integer",
    b'{"op": "fetch", "id": true, "n": 2, "k": []}': "field 'id' must be an integer",
    b'{"op": "fetch", "id": 1, "n": 2, "k": [""]}': "field 'k' must be a non-empty",
    b'{"op": "merge", "id": 1, "n": 2, "s": {"k": {"1.0123456789ab": [1, 0, 2]}}}':
        "s['k'].1.0123456789ab: a record is",
    b'{"op": "merge", "id": 1, "n": 2, "r": [["r1", "k"]]}': "field 'r' must be a list of",
    b'{"op": "merge", "id": 1, "n": 2, "r": [["r 1", "k", {}]]}': "request id",
    b'{"op": "sb", "id": 1, "n": 2, "h": [0]}': "field 'h' must hold 256 bucket hashes",
    b'{"op": "sb", "id": 1, "n": 2, "h": [true]}': "field 'h' must hold integers",
    b'{"op": "ss", "id": 1, "n": 2, "b": [1], "h": [0]}': "256 segment hashes per bucket",
    b'{"op": "ss", "id": 1, "n": 2, "b": [256], "h": []}': "field 'b' must hold integers",
    b'{"op": "sk", "id": 1, "n": 2, "g": [65536], "e": []}': "field 'g' must hold integers",
    b'{"op": "sk", "id": 1, "n": 2, "g": [], "e": [["k", -1]]}': "field 'e' must be a list",
    b'{"op": "sk", "id": 1, "n": 2, "g": [], "e": [["k", true]]}': "field 'e' must be a list",
    b'{"op": "rp", "id": 1, "n": 2, "e": "x", "a": true}': "field 'a' must be an integer",
    # expiry: Add.ttl_ms, Expire, Ttl
    b'{"op": "increment", "ttl_ms": 0}': "field 'ttl_ms' must be between 1 and",
    b'{"op": "increment", "ttl_ms": -5}': "field 'ttl_ms' must be between 1 and",
    orjson.dumps({"op": "increment", "ttl_ms": MAX_TTL_MS + 1}): "field 'ttl_ms' must be",
    b'{"op": "decrement", "ttl_ms": 1.5}': "field 'ttl_ms' must be an integer",
    b'{"op": "increment", "ttl_ms": true}': "field 'ttl_ms' must be an integer",
    b'{"op": "increment", "ttl_ms": "5"}': "field 'ttl_ms' must be an integer",
    b'{"op": "expire", "key": "k", "at": -1}': "field 'at' must be between 0 and",
    orjson.dumps({"op": "expire", "at": MAX_TOTAL + 1}): "field 'at' must be between 0 and",
    b'{"op": "expire", "at": 1.0}': "field 'at' must be an integer",
    b'{"op": "expire", "at": "1"}': "field 'at' must be an integer",
    b'{"op": "expire", "ttl_ms": -1}': "field 'ttl_ms' must be between 0 and",
    orjson.dumps({"op": "expire", "ttl_ms": MAX_TTL_MS + 1}): "field 'ttl_ms' must be",
    b'{"op": "expire", "at": 5, "ttl_ms": 5}': "fields 'at' and 'ttl_ms' exclude each other",
    b'{"op": "expire", "at": 5, "mode": "NX"}': "field 'mode' must be one of nx, xx, gt, lt",
    b'{"op": "expire", "at": 5, "mode": "nx xx"}': "field 'mode' must be one of",
    b'{"op": "expire", "at": 5, "mode": 1}': "field 'mode' must be one of",
    b'{"op": "expire", "at": 5, "mode": ["nx"]}': "field 'mode' must be one of",
    b'{"op": "expire", "mode": "nx"}': "field 'mode' needs a deadline",
    b'{"op": "expire", "at": 5, "mode": "gt", "xx": true}': "true only with mode lt",
    b'{"op": "expire", "at": 5, "xx": true}': "true only with mode lt",
    b'{"op": "expire", "at": 5, "mode": "lt", "xx": 1}': "field 'xx' must be a boolean",
    b'{"op": "expire", "key": ""}': "field 'key' must be a non-empty string",
    b'{"op": "expire", "at": 5, "rid": "a b"}': "request id",
    b'{"op": "expire", "at": 5, "wait": "most"}': "field 'wait' must be one of",
    b'{"op": "ttl", "key": 5}': "field 'key' must be a non-empty string",
    b'{"op": "ttl", "read": "all!"}': "field 'read' must be one of",
    b'{"op": "ttl", "timeout_ms": 0}': "field 'timeout_ms' must be between 1",
}


@pytest.mark.parametrize("data,fragment", BAD_REQUESTS.items(),
                         ids=[str(i) for i in range(len(BAD_REQUESTS))])
def test_bad_requests_are_refused_naming_the_field(data, fragment):
    with pytest.raises(ProtocolError, match=re.escape(fragment)):
        decode_request(data)


BAD_BROADCASTS = {
    b'{"t": "d", "n": 1, "e": "x", "q": true, "s": {}}': "field 'q' must be an integer",
    b'{"t": "d", "n": 1, "e": "x", "q": -1, "s": {}}': "field 'q' must be between",
    b'{"t": "d", "n": 1, "e": 5, "q": 1, "s": {}}': "field 'e' must be a string",
    orjson.dumps({"t": "d", "n": 1, "e": "x" * 65, "q": 1, "s": {}}): "field 'e'",
    b'{"t": "d", "n": 1, "e": "x", "q": 1, "s": {"": {}}}': "field 's' must be a non-empty",
    b'{"t": "d", "n": 1, "e": "x", "q": 1, "s": {"k": {"1.0123456789ab": [2, 0, 3]}}}':
        "a record is",
    b'{"t": "h", "n": 1, "e": "x", "q": 1, "h": -1, "k": 0, "a": {}, "re": "", "rn": 0}':
        "field 'h'",
    b'{"t": "h", "n": 1, "e": "x", "q": 1, "h": 0, "k": 0, "a": {"0": ["e", 1]}, "re": "",'
    b' "rn": 0}': "field 'a'",
    b'{"t": "h", "n": 1, "e": "x", "q": 1, "h": 0, "k": 0, "a": {"1": ["e", true]}, "re": "",'
    b' "rn": 0}': "field 'a'",
    # Digits that are not ASCII: superscript two, Arabic-Indic digit one.
    orjson.dumps({"t": "h", "n": 1, "e": "x", "q": 1, "h": 0, "k": 0, "a": {"²": ["e", 1]},
                  "re": "", "rn": 0}): "field 'a'",
    orjson.dumps({"t": "h", "n": 1, "e": "x", "q": 1, "h": 0, "k": 0, "a": {"\u0661": ["e", 1]},
                  "re": "", "rn": 0}): "field 'a'",
    b'{"t": "h", "n": 1, "e": "x", "q": 1, "h": 0, "k": 0, "re": "", "rn": 0}': "field 'a'",
    b'{"t": "z", "n": 1, "e": "x", "q": 1}': "unknown broadcast type",
}


@pytest.mark.parametrize("data,fragment", BAD_BROADCASTS.items(),
                         ids=[str(i) for i in range(len(BAD_BROADCASTS))])
def test_bad_broadcasts_are_refused_naming_the_field(data, fragment):
    with pytest.raises(ProtocolError, match=re.escape(fragment)):
        decode_broadcast(data)


BAD_PEER_REPLIES = {
    b'{"t": "st", "id": 1, "n": 2, "s": {"k": {"9.0123456789ab": [1, 0, 0, 2]}}}':
        "a record is",
    b'{"t": "sd", "id": 1, "n": 2, "i": [65536]}': "field 'i' must hold integers",
    b'{"t": "sd", "id": 1, "n": 2, "i": [], "a": []}': "field 'a'",
    b'{"t": "ss", "id": 1, "n": 2, "l": [], "s": {}, "d": [""], "c": 0}':
        "field 'd' must be a non-empty",
    b'{"t": "ss", "id": 1, "n": 2, "l": [], "s": {}, "d": [], "c": true}':
        "field 'c' must be an integer",
    b'{"t": "ss", "id": 1, "n": 2, "l": null, "s": {}, "d": [], "c": 0}':
        "field 'l' must be a list",
    b'{"t": "ss", "id": 1, "n": 2, "s": {"k": {"x": [1]}}, "d": [], "c": 0}':
        "malformed slot name",
    b'{"t": "ss", "id": 1, "n": 2, "l": ["x"], "s": {}, "d": [], "c": 0}':
        "field 'l': malformed slot name 'x'",
    b'{"t": "ss", "id": 1, "n": 2, "l": ["9.0123456789ab", "9.0123456789ab"], "s": {},'
    b' "d": [], "c": 0}': "names a slot twice",
    b'{"t": "ss", "id": 1, "n": 2, "l": [], "s": [], "d": [], "c": 0}': "field 's' must be",
    b'{"t": "ss", "id": 1, "n": 2, "l": ["9.0123456789ab"], "s": {"": []}, "d": [], "c": 0}':
        "must be a non-empty string",
    b'{"t": "ss", "id": 1, "n": 2, "l": ["9.0123456789ab"], "s": {"k": [0, 1, 0, 0]},'
    b' "d": [], "c": 0}': "must be a list of records",
    b'{"t": "ss", "id": 1, "n": 2, "l": ["9.0123456789ab"], "s": {"k": [1, 1, 0, 0, 0]},'
    b' "d": [], "c": 0}': "a record is a slot index (increasing, below 1)",
    b'{"t": "ss", "id": 1, "n": 2, "l": ["9.0123456789ab"], "s": {"k": [0, 1, 0, 2, 0]},'
    b' "d": [], "c": 0}': "with bp <= p",
    b'{"t": "ss", "id": 1, "n": 2, "l": ["9.0123456789ab"], "s": {"k": [0, 1.5, 0, 0, 0]},'
    b' "d": [], "c": 0}': "a record is",
    b'{"t": "ss", "id": 1, "n": 2, "l": ["9.0123456789ab"], "s": {"k": [0, true, 0, 0, 0]},'
    b' "d": [], "c": 0}': "a record is",
    b'{"t": "ss", "id": 1, "n": 2, "l": ["9.0123456789ab", "8.0123456789ab"],'
    b' "s": {"k": [1, 1, 0, 0, 0, 0, 1, 0, 0, 0]}, "d": [], "c": 0}': "(increasing",
    b'{"t": "rp", "id": 1, "n": 2, "r": [], "e": null, "c": 0}': "field 'e'",
    b'{"t": "rp", "id": 1, "n": 2, "r": [], "e": "x", "c": -1}': "field 'c'",
    b'{"t": "xx", "id": 1, "n": 2}': "unknown peer reply type",
    b'{"t": "st", "id": 1, "n": false, "s": {}}': "field 'n' must be an integer",
}


@pytest.mark.parametrize("data,fragment", BAD_PEER_REPLIES.items(),
                         ids=[str(i) for i in range(len(BAD_PEER_REPLIES))])
def test_bad_peer_replies_are_refused_naming_the_field(data, fragment):
    with pytest.raises(ProtocolError, match=re.escape(fragment)):
        decode_peer_reply(data)


@pytest.mark.parametrize("data,fragment", {
    b'{"ok": 1, "node": 1}': "boolean 'ok'",
    b'{"ok": true, "node": 0}': "field 'node'",
    b'{"ok": false, "node": 1, "error": "nope", "message": "x"}': "known 'error' code",
    b'{"ok": false, "node": 1, "error": [], "message": "x"}': "known 'error' code",
    b'{"ok": true, "node": 1, "count": true}': "field 'count' must be an integer",
    b'{"ok": true, "node": 1, "count": 9223372036854775808}': "field 'count'",
    b'{"ok": true, "node": 1, "count": 1, "counts": [1, true]}': "'counts'",
    b'{"ok": true, "node": 1, "keys": [["", 1]]}': "field 'keys' must be a non-empty",
    b'{"ok": true, "node": 1, "keys": [["k", 1.5]]}': "'keys' must be a list",
    b'{"ok": true, "node": 1, "status": []}': "'status' must be an object",
    b'{"ok": true, "node": 1, "count": 1, "exists": [1]}': "'exists' must be a list of bool",
    b'{"ok": true, "node": 1, "count": 1, "exists": [true, false]}': "one per count",
    b'{"ok": true, "node": 1, "count": 1, "exists": true}': "'exists' must be a list",
}.items())
def test_bad_replies_are_refused(data, fragment):
    with pytest.raises(ProtocolError, match=re.escape(fragment)):
        decode_reply(data)


def test_oversize_messages_are_refused_before_parsing():
    pad = "x" * MAX_REQUEST_BYTES
    with pytest.raises(ProtocolError, match="request too large"):
        decode_request(orjson.dumps({"op": "ping", "pad": pad}))
    # A peer request may be larger than a client's, up to the peer limit.
    big_fetch = orjson.dumps({"op": "fetch", "id": 1, "n": 2, "k": ["k"], "pad": pad})
    assert decode_request(big_fetch) == Fetch(1, 2, ("k",))
    huge = b" " * (MAX_PEER_MESSAGE_BYTES + 1)
    for decode in (decode_request, decode_broadcast, decode_peer_reply, decode_reply):
        with pytest.raises(ProtocolError, match="message too large"):
            decode(huge)


def test_not_an_object_is_refused():
    for data in (b"not json", b"[1, 2]", b'"op"', b"", b"null"):
        for decode in (decode_request, decode_broadcast, decode_peer_reply, decode_reply):
            with pytest.raises(ProtocolError):
                decode(data)


def test_validate_key_direct():
    assert validate_key("k" * 256) == "k" * 256
    for bad in ("", "k" * 257, "\ud800", "a\udcffb", b"k", None, 5, ["k"]):
        with pytest.raises(ProtocolError, match="field 'key'"):
            validate_key(bad)
    with pytest.raises(ProtocolError, match="field 'keys'"):
        validate_key("", "keys")


def test_request_tag_is_recovered_best_effort():
    assert request_tag(b'{"op": "nope", "id": 42}') == 42
    assert request_tag(b'{"op": "nope", "id": "t"}') == "t"
    assert request_tag(b'{"op": "nope", "id": true}') is None
    assert request_tag(b"garbage") is None
    assert request_tag(b"[1]") is None


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_escape_as_other_errors(data):
    for decode in (decode_request, decode_broadcast, decode_peer_reply, decode_reply):
        with contextlib.suppress(ProtocolError):
            decode(data)


FIELDS = ["op", "id", "key", "keys", "by", "rid", "wait", "read", "seen", "timeout_ms",
          "after", "prefix", "limit", "n", "s", "r", "t", "q", "e", "h", "k", "a", "b", "g",
          "c", "d", "i", "m", "re", "rn", "ok", "node", "count", "counts", "status", "error"]
OPS = ["increment", "decrement", "reset", "get", "getCount", "keys", "status", "ping",
       "fetch", "merge", "sb", "ss", "sk", "rp"]
field_values = st.recursive(
    json_scalars | st.sampled_from([*OPS, "d", "h", "st", "sd", "ss", "rp", S1, "²", "1"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from([S1, "k", "1", "²", ""]) | text(max_size=4), inner, max_size=3),
    max_leaves=12)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=8))
def test_arbitrary_json_objects_decode_or_raise_protocol_errors(obj):
    data = orjson.dumps(obj)
    for decode in (decode_request, decode_broadcast, decode_peer_reply, decode_reply):
        with contextlib.suppress(ProtocolError):
            decode(data)


def test_limits_are_the_documented_ones():
    assert codec.MAX_REQUEST_BYTES == 1024 * 1024
    assert MAX_STEP == 2**32 and MAX_TOTAL == 2**63 - 1


def test_states_whose_sums_pass_2_63_are_valid():
    """Legal concurrent steps can sum past 2**63-1 across slots (the model's "Bounds"):
    only each record is bounded, in every form states take on the wire."""
    two = {S1: (MAX_TOTAL, 0, 0, 0), make_slot(2, "0123456789ab"): (1, MAX_TOTAL, 0, 0)}
    request = decode_request(orjson.dumps({"op": "get", "seen": {"k": two}}))
    assert isinstance(request, Get) and request.seen == {"k": two}
    page = decode_peer_reply(
        b'{"t": "ss", "id": 1, "n": 2, "l": ["9.0123456789ab", "8.0123456789ab"],'
        b' "s": {"k": [0, 9223372036854775807, 0, 0, 0, 1, 1, 0, 0, 0]}, "d": [], "c": 0}')
    assert isinstance(page, SyncStates) and page.states["k"]["9.0123456789ab"][0] == MAX_TOTAL


def test_peer_fetches_merges_and_their_replies_carry_at_most_what_nodes_send():
    """Nodes cut fetches, merges and their replies into chunks of
    MAX_KEYS_PER_PEER_MESSAGE keys; one more is refused before the node does any work
    for it (200,000-key merges from a local process stalled a node's loop for 1-2 s)."""
    from zcounter.limits import MAX_KEYS_PER_PEER_MESSAGE as most

    state = {"1.0123456789ab": [1]}
    keys = [f"k{i}" for i in range(most + 1)]
    for op, field, value in (("fetch", "k", keys), ("merge", "s", dict.fromkeys(keys, state))):
        ok = orjson.dumps({"op": op, "id": 1, "n": 2, field: value[:most] if op == "fetch"
                           else dict(list(value.items())[:most])})
        assert len(getattr(decode_request(ok), "keys" if op == "fetch" else "states")) == most
        with pytest.raises(ProtocolError, match=f"'{field}'"):
            decode_request(orjson.dumps({"op": op, "id": 1, "n": 2, field: value}))
    reply = orjson.dumps({"t": "st", "id": 1, "n": 2, "s": dict.fromkeys(keys, state)})
    with pytest.raises(ProtocolError, match="'s'"):
        decode_peer_reply(reply)
