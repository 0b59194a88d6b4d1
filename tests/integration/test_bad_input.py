"""Bad input on every port of a running node changes nothing.

* the client port (ROUTER), with raw DEALER frames: malformed requests and bad keys get a
  one-message ``bad_request`` answer;
* the replication broadcast path (PUB/SUB), by impersonating a peer's PUB socket;
* the peer request path (the same ROUTER, peer operations), by forging a peer's DEALER;
* the peer reply path (a node's DEALER), by impersonating a peer's ROUTER and answering
  the node's own fetches and merges with bad states;
* raw TCP garbage on every port.

After each, every node holds exactly what it held before (same counts, same keys).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import zmq
from harness import FakeRouter, LocalCluster, wait_for

from zcounter.errors import Indeterminate, RequestRefused
from zcounter.model.pncounter import MAX_TOTAL

pytestmark = pytest.mark.integration

#: Keys every node refuses, as JSON text (so the invalid UTF-8 one can be raw bytes).
BAD_KEYS: list[tuple[bytes, str]] = [
    (b'""', "empty"),
    (b'"' + b"k" * 257 + b'"', "257 bytes"),
    (b'"' + "\u00e9".encode() * 128 + b'k"', "257 bytes of 2-byte characters"),
    (b"5", "a number"),
    (b"null", "null"),  # where a key may be left out, null means "default" (see below)
    (b'["default"]', "a list"),
    (b'{"a": 1}', "an object"),
    (b'"\xff\xfe"', "invalid UTF-8 bytes"),
    (b'"\xed\xa0\x80"', "an encoded surrogate (invalid UTF-8)"),
    (b'"\\ud800"', "a lone surrogate escape"),
]
#: As keys of a JSON object (states maps), only strings can appear.
BAD_OBJECT_KEYS: list[bytes] = [key for key, _ in BAD_KEYS if key.startswith(b'"')]


def seed(cluster: LocalCluster) -> dict[str, int]:
    """A few keys on every node; returns what every node lists."""
    with cluster.client(1) as c:
        c.increment(by=5)
        c.increment(by=7, key="good")
        c.decrement(by=3, key="other")
    expected = {"default": 5, "good": 7, "other": -3}
    cluster.wait_keys_converged(expected)
    return expected


def assert_unchanged(cluster: LocalCluster, expected: dict[str, int],
                     nodes: list[int] | None = None) -> None:
    for node in nodes or cluster.ids:
        assert cluster.listing(node) == expected, f"node {node} changed"


# --------------------------------------------------------------------------- client port


def test_bad_client_requests_get_error_replies_and_change_nothing(cluster: LocalCluster):
    expected = seed(cluster)
    cases = [
        ([b"not json"], "not valid JSON"),
        ([b'{"op": "increment"}', b"extra"], "expected 1 frame"),
        ([b'{"op": "increment", "by": 0, "id": 9}'], "between 1 and"),
        ([b'{"op": "increment", "by": 4294967297}'], "between 1 and"),
        ([b'{"op": "decrement", "by": -1}'], "between 1 and"),
        ([b'{"op": "increment", "by": "7"}'], "integer"),
        ([b'{"op": "increment", "by": true}'], "integer"),
        ([b'{"op": "increment", "wait": "most"}'], "local, majority, all"),
        ([b'{"op": "get", "read": 3}'], "local, majority, all"),
        ([b'{"op": "increment", "rid": "has space"}'], "request id"),
        ([b'{"op": "get", "keys": []}'], "at least one key"),
        ([b'{"op": "get", "keys": "default"}'], "list"),
        ([b'{"op": "keys", "limit": 0}'], "between 1 and"),
        ([b'{"op": "launch"}'], "unknown operation"),
        ([b'{"no": "op"}'], "missing field 'op'"),
        ([b"[1, 2]"], "JSON object"),
        ([b'{"op": "increment", "pad": "' + b"x" * (1024 * 1024) + b'"}'], "too large"),
    ]
    with cluster.raw(1) as raw:
        for frames, fragment in cases:
            reply = raw.call(frames)
            assert reply["ok"] is False and reply["error"] == "bad_request", (frames[:1], reply)
            assert fragment in reply["message"], (fragment, reply)
        assert raw.request({"op": "ping", "id": 9})["id"] == 9
    assert_unchanged(cluster, expected)


def bad_key_requests(bad: bytes) -> list[bytes]:
    """Every client request that names a key, with ``bad`` (JSON text) as that key."""
    in_lists = [b'{"op": "get", "keys": ["default", %s, "good"]}' % bad,
                b'{"op": "get", "keys": [%s]}' % bad]
    if bad == b"null":
        return in_lists  # a null "key" (or "after") is the same as leaving it out
    return [
        *in_lists,
        b'{"op": "increment", "key": %s}' % bad,
        b'{"op": "decrement", "key": %s, "by": 2}' % bad,
        b'{"op": "reset", "key": %s}' % bad,
        b'{"op": "increment", "key": %s, "wait": "majority", "rid": "bad-key-1"}' % bad,
        b'{"op": "get", "key": %s}' % bad,
        b'{"op": "keys", "after": %s}' % bad,
    ]


def test_bad_keys_on_the_client_port_are_bad_requests_and_change_nothing(
        cluster: LocalCluster):
    expected = seed(cluster)
    with cluster.raw(2) as raw:
        for bad, why in BAD_KEYS:
            for frame in bad_key_requests(bad):
                reply = raw.call(frame)
                assert reply["ok"] is False and reply["error"] == "bad_request", (why, frame,
                                                                                   reply)
        # A session's ``seen`` naming a bad key is refused too, before anything applies.
        for bad in BAD_OBJECT_KEYS:
            frame = b'{"op": "increment", "seen": {%s: {}}}' % bad
            assert raw.call(frame)["error"] == "bad_request", frame
        # The same request id, retried with a *different* key, is refused, not applied.
        assert raw.request({"op": "increment", "key": "good", "rid": "r-1"})["count"] == 8
        refused = raw.request({"op": "increment", "key": "other", "rid": "r-1"})
        assert refused["error"] == "bad_request" and "already used" in refused["message"]
    expected["good"] = 8
    # A key of exactly 256 bytes, and any valid UTF-8, are fine.
    longest = "\u00e9" * 128
    with cluster.client(3) as c:
        assert c.increment(key=longest) == 1
        assert c.increment(key="k" * 256) == 1
        assert c.get_count("\U0001f600 \u00fc") == 0
    expected |= {longest: 1, "k" * 256: 1}
    cluster.wait_keys_converged(expected)
    assert_unchanged(cluster, expected)


# --------------------------------------------------------------------------- broadcasts


@contextmanager
def impersonated_pub(cluster: LocalCluster, node: int) -> Iterator[zmq.Socket[bytes]]:
    """Kill ``node`` and bind a PUB socket where it published; the others subscribe."""
    cluster.kill(node)
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(cluster.config.node(node).pub)
    try:
        yield pub
    finally:
        pub.close()
        ctx.term()


def publish_until_dropped(cluster: LocalCluster, pub: zmq.Socket[bytes],
                          bad: list[list[bytes]], nodes: list[int]) -> None:
    """A SUB connects asynchronously: keep publishing until every node dropped all."""
    before = {n: cluster.stat(n, "dropped_peer_messages") for n in nodes}

    def dropped() -> bool:
        for frames in bad:
            pub.send_multipart(frames)
        return all(cluster.stat(n, "dropped_peer_messages") - before[n] >= len(bad)
                   for n in nodes)
    wait_for(dropped, 10, interval=0.1, what="nodes to drop bad broadcasts")


def delta(states: bytes, origin: int = 3, rids: bytes = b"") -> bytes:
    return (b'{"t": "d", "n": %d, "e": "forged", "q": 1, "s": %s%s}'
            % (origin, states, b', "r": ' + rids if rids else b""))


def test_bad_replication_messages_are_dropped(cluster: LocalCluster):
    """Impersonate node 3's PUB socket and publish every kind of bad message."""
    expected = seed(cluster)
    slot = b'"3.0123456789ab"'
    bad = [
        [b"garbage"], [b"{}"], [b"[1]"], [b'{"t": "d"}'],
        [delta(b'{"default": {%s: [-5]}}' % slot)],
        [delta(b'{"default": {%s: [1e30]}}' % slot)],
        [delta(b'{"default": {%s: ["5"]}}' % slot)],
        [delta(b'{"default": {%s: [1, 0, 2]}}' % slot)],  # a base above its total
        [delta(b'{"default": {%s: [1, 2, 3, 4, 5]}}' % slot)],
        [delta(b'{"default": {%s: [%d]}}' % (slot, MAX_TOTAL + 1))],
        # (A valid record whose merge takes the sums past 2**63-1 is not bad: legal
        # concurrent steps make such states; test_overflow.py.)
        [delta(b'{"default": {"3.xyz": [5]}}')],
        [delta(b'{"default": {"42.0123456789ab": [5]}}', origin=42)],
        [delta(b'{"default": {"42.0123456789ab": [5]}}')],  # a slot of an unknown node
        [b'{"t": "h", "n": 3, "e": "forged", "q": 1, "h": -1, "k": 0, "a": {}, "re": "",'
         b' "rn": 0}'],
        [b'{"t": "u", "n": 3, "q": 1, "s": {}}'],
        [delta(b"{}"), b"second frame"],
    ]
    with impersonated_pub(cluster, 3) as pub:
        publish_until_dropped(cluster, pub, bad, [1, 2])
    assert_unchanged(cluster, expected, [1, 2])


def test_bad_keys_in_broadcasts_are_dropped(cluster: LocalCluster):
    expected = seed(cluster)
    good_state = b'{"3.0123456789ab": [5]}'
    bad = []
    for key in BAD_OBJECT_KEYS:
        # Each message also carries a good key: it must not be applied either.
        bad.append([delta(b'{"good": %s, %s: %s}' % (good_state, key, good_state))])
        bad.append([delta(b'{"good": %s}' % good_state,
                          rids=b'[["rid-1", %s, %s]]' % (key, good_state))])
    for key, _ in BAD_KEYS:
        bad.append([delta(b'{"good": %s}' % good_state,
                          rids=b'[["rid-2", %s, %s]]' % (key, good_state))])
    with impersonated_pub(cluster, 3) as pub:
        publish_until_dropped(cluster, pub, bad, [1, 2])
    assert_unchanged(cluster, expected, [1, 2])


# --------------------------------------------------------------------------- peer requests


def test_forged_peer_requests_with_bad_keys_change_nothing(cluster: LocalCluster):
    """A DEALER claiming to be node 3 sends peer operations naming bad keys: each is
    refused as a bad request, and nothing is merged."""
    expected = seed(cluster)
    state = b'{"3.0123456789ab": [5]}'
    forged: list[bytes] = []
    for key in BAD_OBJECT_KEYS:
        forged += [
            b'{"op": "merge", "id": 1, "n": 3, "s": {"good": %s, %s: %s}}' % (state, key, state),
            b'{"op": "merge", "id": 2, "n": 3, "s": {"good": %s}, "r": [["r-9", %s, %s]]}'
            % (state, key, state),
            b'{"op": "fetch", "id": 3, "n": 3, "k": ["good", %s]}' % key,
            b'{"op": "sk", "id": 4, "n": 3, "g": [1], "e": [[%s, 1]]}' % key,
        ]
    for key, _ in BAD_KEYS:
        forged.append(b'{"op": "fetch", "id": 5, "n": 3, "k": [%s]}' % key)
    with cluster.raw(1) as raw:
        for frame in forged:
            reply = raw.call(frame)
            assert reply.get("error") == "bad_request", (frame, reply)
    assert_unchanged(cluster, expected)


# --------------------------------------------------------------------------- peer replies


def test_bad_keys_in_peer_replies_are_dropped(cluster: LocalCluster):
    """Node 3 is replaced by an impostor that answers node 1's fetches (read=all) and
    merges (wait=all) with states naming bad keys: node 1 drops every answer, so the
    read is refused and the write indeterminate, and nothing bad is merged."""
    expected = seed(cluster)
    cluster.kill(3)
    bad_keys = iter(BAD_OBJECT_KEYS * 50)
    state = b'{"3.0123456789ab": [5]}'

    def answer(request: dict[str, Any]) -> bytes | None:
        if request.get("op") not in ("fetch", "merge"):
            return None
        key = next(bad_keys, b'""')
        return (b'{"t": "st", "id": %d, "n": 3, "s": {"good": %s, %s: %s}}'
                % (request["id"], state, key, state))

    before = cluster.stat(1, "dropped_peer_messages")
    peer = FakeRouter(answer, cluster.config.node(3).router)
    try:
        with cluster.client(1, timeout=1.0, retries=0) as c:
            def refused_after_an_answer() -> bool:
                # Until node 1's DEALER has reconnected to the impostor, nobody answers.
                with pytest.raises(RequestRefused) as refused:
                    c.get_counts(["good", "default"], read="all")
                assert refused.value.code == "unavailable"
                return peer.answered > 0
            wait_for(refused_after_an_answer, 10.0, what="the impostor to answer a fetch")
            answered = peer.answered
            with pytest.raises(Indeterminate):
                c.increment(key="good", wait="all")
            assert peer.answered > answered, "the impostor must have been asked to merge"
        expected["good"] += 1  # applied at node 1 (and spread to node 2), not confirmed
        wait_for(lambda: cluster.stat(1, "dropped_peer_messages") - before >= peer.answered,
                 5.0, what="node 1 to drop every answer of the impostor")
    finally:
        peer.close()
    cluster.wait_keys_converged(expected, nodes=[1, 2])
    assert_unchanged(cluster, expected, [1, 2])


# --------------------------------------------------------------------------- raw TCP


def test_garbage_bytes_on_every_port_never_crash_or_change_a_node(cluster: LocalCluster):
    expected = seed(cluster)
    for node in cluster.ids:
        for endpoint in (cluster.config.node(node).router, cluster.config.node(node).pub):
            host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
            for payload in (b"\x00" * 64, b"GET / HTTP/1.0\r\n\r\n", bytes(range(256)) * 4):
                with socket.create_connection((host, int(port)), timeout=2) as s:
                    s.sendall(payload)
    assert_unchanged(cluster, expected)
    assert all(p.poll() is None for p in cluster.procs.values())
