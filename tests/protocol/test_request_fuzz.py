"""Fuzzing the native request codec, ``zcounter.protocol.codec.decode_request`` (issue 19):
whatever one ROUTER frame holds - request-shaped JSON with hostile field values, raw
bytes, or a valid request mangled byte by byte - decoding either returns a request
within the documented bounds or raises :class:`ProtocolError`, nothing else, and never
allocates more than a small multiple of the frame (measured with tracemalloc).

Each test stays under a few seconds (``max_examples``); ``bin/fuzz`` runs the same
targets for as long as asked."""

from __future__ import annotations

import contextlib
import json
import tracemalloc
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from zcounter.errors import ProtocolError
from zcounter.model.pncounter import MAX_STEP, MAX_TOTAL
from zcounter.protocol.codec import (
    MAX_CONFIRM_NODES,
    MAX_KEYS_PER_GET,
    MAX_PAGE,
    MAX_PEER_MESSAGE_BYTES,
    MAX_REQUEST_BYTES,
    MAX_TIMEOUT_MS,
    decode_request,
    encode_request,
)
from zcounter.protocol.messages import (
    PEER_REQUESTS,
    Add,
    Confirm,
    Get,
    ListKeys,
    Ping,
    Reset,
    Status,
)

CLIENT_OPS = ["increment", "decrement", "reset", "get", "getCount", "keys", "status",
              "ping", "confirm"]
PEER_OPS = ["fetch", "merge", "sb", "ss", "sk", "rp"]
#: Integers at and around every bound the codec checks, and far past them.
EDGES = [0, 1, -1, 2, 255, 256, 257, MAX_STEP, MAX_STEP + 1, MAX_TIMEOUT_MS,
         MAX_TIMEOUT_MS + 1, MAX_CONFIRM_NODES, MAX_CONFIRM_NODES + 1, MAX_PAGE, MAX_PAGE + 1,
         MAX_TOTAL, MAX_TOTAL + 1, -MAX_TOTAL - 1, 2**64, -(2**64)]

scalars = (st.none() | st.booleans() | st.sampled_from(EDGES)
           | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
           | st.text(max_size=8) | st.sampled_from(["local", "majority", "all", "k", "",
                                                    "\ud800", "k" * 257, "é" * 129]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(st.text(max_size=4), inner, max_size=4),
                      max_leaves=12)
FIELDS = ["id", "key", "keys", "by", "rid", "wait", "read", "seen", "timeout_ms", "after",
          "prefix", "limit", "nodes", "session", "o", "k", "s", "r", "e", "a", "q", "h"]

#: Request-shaped objects: a known operation (or a hostile one) and fields of any value.
requests = st.builds(
    lambda op, fields: {**fields, "op": op} if op is not None else fields,
    st.none() | st.sampled_from(CLIENT_OPS + PEER_OPS) | values,
    st.dictionaries(st.sampled_from(FIELDS), values, max_size=7))

#: Valid requests of every client operation, to mangle.
valid_requests = st.sampled_from([
    Add(1, "k", 5), Add("t", "k", -3, "rid-1"), Reset(2, "k"), Get(3, ("a", "b")),
    ListKeys(4, "p", "a", 10), Status(5), Ping(6), Confirm(7, "k", 3, 1000)])


def _dumps(obj: Any) -> bytes:
    # The standard library writes a lone surrogate as its escape (``"\\ud800"``), valid
    # JSON text that a client can send; orjson refuses to write it at all.
    return json.dumps(obj).encode()


def _check_bounds(request: Any) -> None:
    """What a decoded request may hold: what the node's handling relies on."""
    if isinstance(request, PEER_REQUESTS):
        return  # peer messages are the peer codec's (tests/protocol/test_codec.py)
    key = getattr(request, "key", None)
    if key is not None:
        assert isinstance(key, str) and 0 < len(key.encode()) <= 256
    if isinstance(request, Add):
        assert 1 <= abs(request.amount) <= MAX_STEP
    if isinstance(request, Get):
        assert 1 <= len(request.keys) <= MAX_KEYS_PER_GET
    if isinstance(request, Confirm):
        assert 1 <= request.nodes <= MAX_CONFIRM_NODES
    if isinstance(request, ListKeys):
        assert 1 <= request.limit <= MAX_PAGE
    timeout = getattr(request, "timeout_ms", None)
    if timeout is not None:
        assert 1 <= timeout <= MAX_TIMEOUT_MS


def _decode(frame: bytes) -> Any:
    """Decode as from a node's connection and as from a client's (the role the runtime
    passes in); either way only a ProtocolError may escape."""
    decoded = None
    for is_peer in (lambda: True, lambda: False):
        try:
            request = decode_request(frame, is_peer)
        except ProtocolError:
            continue
        _check_bounds(request)
        decoded = request
    return decoded


@settings(max_examples=120, deadline=None)
@given(requests)
def test_request_shaped_objects_decode_within_bounds_or_raise_protocol_error(obj):
    _decode(_dumps(obj))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_raw_bytes_only_ever_raise_protocol_error(data):
    _decode(data)


@settings(max_examples=300, deadline=None)
@given(valid_requests, st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255),
                                          st.sampled_from(["flip", "cut", "insert"])),
                                min_size=1, max_size=4))
def test_mangled_valid_requests_only_ever_raise_protocol_error(request, edits):
    data = bytearray(encode_request(request))
    for at, byte, how in edits:
        at %= len(data) + 1
        if how == "flip" and at < len(data):
            data[at] = byte
        elif how == "cut":
            del data[at:]
        else:
            data[at:at] = bytes([byte])
        if not data:
            data = bytearray(b"{")
    _decode(bytes(data))


def _peak_allocation(frame: bytes) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        _decode(frame)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


#: Python objects cost more than the JSON text that makes them: the worst found is a
#: list of one-character strings, 4 bytes of text (``"k",``) for a 50-byte str and an
#: 8-byte list slot - 1 MiB of it peaked at 25.7 MB (24.5 bytes per byte).
ALLOCATION_PER_BYTE = 32
ALLOCATION_SLACK = 256 * 1024


@settings(max_examples=40, deadline=None)
@given(requests, st.integers(0, 3))
def test_decoding_a_client_sized_frame_allocates_a_bounded_multiple_of_it(obj, widen):
    # Widened by repetition so that the bound is tested on frames of kilobytes, not bytes.
    obj = {**obj, "keys": [obj.get("key", "k")] * (10 ** widen)} if widen else obj
    frame = _dumps(obj)
    if len(frame) > MAX_REQUEST_BYTES:
        return
    peak = _peak_allocation(frame)
    assert peak <= ALLOCATION_PER_BYTE * len(frame) + ALLOCATION_SLACK, (len(frame), peak)


def test_the_largest_client_request_allocates_a_bounded_multiple_of_it():
    """Worst case within the client limit: a get of 10,000 keys of 256 bytes, and a
    frame of MAX_REQUEST_BYTES of one-character keys (refused: too many keys)."""
    longest = orjson.dumps({"op": "get", "keys": [f"{i:0256d}" for i in range(4000)]})
    widest = orjson.dumps({"op": "get", "keys": ["k"] * ((MAX_REQUEST_BYTES - 40) // 4)})
    for frame in (longest, widest):
        assert len(frame) <= MAX_REQUEST_BYTES
        peak = _peak_allocation(frame)
        assert peak <= ALLOCATION_PER_BYTE * len(frame) + ALLOCATION_SLACK, (len(frame), peak)


def test_a_peer_sized_frame_from_a_client_is_refused_before_it_is_parsed():
    """Parsed whole, 16 MiB of one-character keys peaked at 392 MiB before it was refused
    as too large for a client; from a connection that is not a node's it is refused
    before parsing."""
    frame = orjson.dumps({"op": "get", "keys": ["k"] * ((MAX_PEER_MESSAGE_BYTES - 40) // 4)})
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        with contextlib.suppress(ProtocolError):
            decode_request(frame, lambda: False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < ALLOCATION_SLACK, peak
