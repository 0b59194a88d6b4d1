"""A connection that is not a node's is held to the client bound before anything it sent
is decoded (issue 19: "a peer-sized message from a client key is decoded before its role
is checked"), with real node processes on loopback.

In ``curve`` mode a node's role is its key; in ``none`` mode it is the source address
(a configured node's host).  The proof that nothing was parsed: a frame past the client
bound that is not even JSON is answered ``forbidden``, not ``bad_request`` (which is what
parsing it would have said), and counted as ``forbidden``.  The controls: the same frame
from a node (its key; its host) is parsed - and refused as too large or as bad JSON by
the decoder - so the check is on the role, not on the size alone.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from harness import LocalCluster, RawDealer, free_port, running_cluster, wait_for, write_config

from zcounter.protocol.codec import MAX_REQUEST_BYTES

pytestmark = pytest.mark.integration

#: Just past the client bound, and not JSON: parsing it fails at the first byte.
NOT_JSON = b"\xff" * (MAX_REQUEST_BYTES + 1)
#: A loopback address no node of the test clusters is on (they are all on 127.0.0.1).
STRANGER_HOST = "127.0.0.9"


def big_merge(slot: str, key: str) -> bytes:
    """A valid merge of node 2's slot, past the client bound: padding keys of 0, long
    enough that the merge stays within the 5,000 keys a peer message may carry."""
    states = {key: {slot: [10**12]}}
    pad = "p" * 240
    states.update({f"pad-{i:04d}-{pad}": {slot: [0]} for i in range(4_500)})
    frame = orjson.dumps({"op": "merge", "id": 9, "n": 2, "s": states})
    assert len(frame) > MAX_REQUEST_BYTES
    return frame


def stats(cluster: LocalCluster, node: int) -> dict[str, int]:
    return dict(cluster.status(node)["stats"])


def refused_as(reply: dict[str, Any], code: str) -> str:
    assert reply["ok"] is False and reply["error"] == code, reply
    return str(reply["message"])


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[LocalCluster]:
    with running_cluster(tmp_path / "cluster", secure=True) as c:
        yield c


def test_a_client_key_is_refused_a_peer_sized_message_without_parsing_it(
        secure: LocalCluster) -> None:
    with secure.client(1) as c:
        c.increment(3, key="held", wait="all")
    slot2 = secure.status(2)["slot"]
    before = stats(secure, 1)
    with secure.raw(1) as dealer:  # the client's key
        message = refused_as(dealer.call(NOT_JSON, timeout=5.0), "forbidden")
        assert "only a node may send more" in message
        refused_as(dealer.call(big_merge(slot2, "held"), timeout=5.0), "forbidden")
        # The connection is still served: the worst a client gets is a refusal.
        assert dealer.request({"op": "get", "id": 3, "key": "held"})["count"] == 3
    after = stats(secure, 1)
    assert after.get("forbidden", 0) == before.get("forbidden", 0) + 2
    assert after.get("bad_requests", 0) == before.get("bad_requests", 0)
    assert secure.counts(key="held") == {1: 3, 2: 3, 3: 3}


def test_a_node_key_may_send_a_peer_sized_message(secure: LocalCluster) -> None:
    """The control: the same frames under node 2's key are parsed (the garbage is a
    ``bad_request``, the merge is applied)."""
    assert secure.keys is not None
    slot2 = secure.status(2)["slot"]
    node2 = secure.curve(1, cert=secure.keys.nodes[2][1])
    before = stats(secure, 1)
    with RawDealer(secure.router(1), node2) as dealer:
        assert "not valid JSON" in refused_as(dealer.call(NOT_JSON, timeout=5.0),
                                              "bad_request")
        assert dealer.call(big_merge(slot2, "pushed"), timeout=10.0)["t"] == "st"
    after = stats(secure, 1)
    assert after.get("forbidden", 0) == before.get("forbidden", 0)
    assert secure.count(1, key="pushed") == 10**12


def test_none_mode_refuses_a_peer_sized_message_from_another_host_without_parsing_it(
        cluster: LocalCluster) -> None:
    """``none`` mode: a connection from a host no node is on is a client; one from a
    node's host (127.0.0.1 here, every node's) is a peer and is parsed."""
    port = cluster.router(1).rsplit(":", 1)[1]
    before = stats(cluster, 1)
    # libzmq's "source;destination" form binds the connection's source address.
    with RawDealer(f"tcp://{STRANGER_HOST}:0;127.0.0.1:{port}") as stranger:
        refused_as(stranger.call(NOT_JSON, timeout=5.0), "forbidden")
        assert "peer operation" in refused_as(
            stranger.request({"op": "merge", "id": 2, "n": 2, "s": {}}), "forbidden")
        assert stranger.request({"op": "ping", "id": 3})["ok"] is True
    middle = stats(cluster, 1)
    assert middle.get("forbidden", 0) == before.get("forbidden", 0) + 2
    assert middle.get("bad_requests", 0) == before.get("bad_requests", 0)
    with cluster.raw(1) as local:  # from 127.0.0.1: a node's host
        refused_as(local.call(NOT_JSON, timeout=5.0), "bad_request")
    after = stats(cluster, 1)
    assert after.get("bad_requests", 0) == middle.get("bad_requests", 0) + 1
    assert after.get("forbidden", 0) == middle.get("forbidden", 0)


# --------------------------------------------------------------------------- steering to curve


def test_a_none_mode_node_not_on_loopback_says_once_what_it_trusts(tmp_path: Path,
                                                                   cluster: LocalCluster
                                                                   ) -> None:
    """Node 1 listens on every interface (0.0.0.0: it only listens, nothing is sent off
    loopback; node 2, on 127.0.0.1, is never started).  Its log says once, at start, what
    ``none`` trusts and to use ``curve``; a loopback-only cluster's logs do not."""
    nodes = {1: ("0.0.0.0", free_port(), free_port()), 2: ("127.0.0.1", free_port(),
                                                           free_port())}
    cfg = write_config(tmp_path / "exposed.toml", nodes)
    log_path = tmp_path / "node-1.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "zcounter.cli", "node", "--id", "1",
                                 "--config", str(cfg), "--data-dir", str(tmp_path / "d1")],
                                stdout=log, stderr=log, start_new_session=True)
    try:
        wait_for(lambda: "ready" in log_path.read_text(), 15.0, what="node 1 to start")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [line for line in log_path.read_text().splitlines()
             if "security mode none" in line]
    assert len(lines) == 1, lines
    assert "WARNING" in lines[0] and "nodes on 0.0.0.0" in lines[0]
    assert 'mode = "curve"' in lines[0]
    for node in cluster.ids:
        assert "security mode none" not in cluster.log_path(node).read_text()


# --------------------------------------------------------------------------- DEALER replies


def test_a_reply_claiming_another_node_than_its_connection_is_dropped(
        cluster: LocalCluster) -> None:
    """Whatever answers on node 3's address (node 3 is down: an impostor took its port)
    answers each request with the id before it - in a ``read=all`` that is the fetch
    sent to node 2, paused here so that it stays unanswered - claiming to be node 2, with
    a key nobody wrote.  Request ids are one sequence for all peers, so only the
    connection a reply came on says who sent it: every such reply is dropped and
    counted, and the key never appears (without the check, node 1 merged it)."""
    from harness import FakeRouter

    from zcounter.errors import RequestRefused

    cluster.kill(3)
    slot2 = cluster.status(2)["slot"]
    cluster.pause(2)

    def answer(request: Any) -> bytes | None:
        if not isinstance(request, dict) or request.get("op") not in ("fetch", "merge"):
            return None
        return orjson.dumps({"t": "st", "id": request["id"] - 1, "n": 2,
                             "s": {"stolen": {slot2: [7]}}})

    before = cluster.stat(1, "dropped_peer_messages")
    with FakeRouter(answer, cluster.config.node(3).router) as impostor:
        with cluster.client(1, timeout=1.0, retries=0) as c:
            def answered() -> bool:
                try:
                    c.get_counts(["stolen"], read="all")
                except RequestRefused as exc:
                    assert exc.code == "unavailable", exc
                return impostor.answered >= 3
            wait_for(answered, 15.0, what="the impostor to answer three fetches")
        wait_for(lambda: cluster.stat(1, "dropped_peer_messages") - before
                 >= impostor.answered, 5.0, what="node 1 to drop every impostor reply")
    cluster.resume(2)
    assert cluster.get_counts(1, ["stolen"]) == {"stolen": 0}
    assert "stolen" not in cluster.listing(1)
