"""Real node processes on loopback: replication, durability, repair, bad input."""

from __future__ import annotations

import random
import shutil
import socket
import time

import orjson
import pytest
import zmq
from harness import LocalCluster, wait_for

from zcounter.crdt import MAX_COUNT

pytestmark = pytest.mark.integration


def test_increments_at_random_nodes_converge_on_all_nodes(cluster: LocalCluster):
    rng = random.Random(7)
    clients = {n: cluster.client(n) for n in cluster.ids}
    total = 0
    try:
        for _ in range(200):
            by = rng.randint(1, 5)
            clients[rng.choice(cluster.ids)].increment(by=by)
            total += by
    finally:
        for c in clients.values():
            c.close()
    assert cluster.wait_converged(total) == total


def test_sigkill_and_restart_keeps_the_count(cluster: LocalCluster):
    with cluster.client(2) as c:
        for _ in range(50):
            c.increment()
    cluster.kill(2)
    cluster.start(2)
    assert cluster.count(2) >= 50
    cluster.wait_converged(50)


def test_restart_with_wiped_data_loses_nothing_and_never_reuses_its_slot(cluster: LocalCluster):
    with cluster.client(1) as c:
        for _ in range(30):
            c.increment()
    cluster.wait_converged(30)
    old_slot = cluster.client(1).status(1)["slot"]
    cluster.kill(1)
    shutil.rmtree(cluster.data_dir(1))
    cluster.start(1)
    # Peers still hold the old slot; the wiped node pulls it back by snapshot.
    cluster.wait_converged(30)
    with cluster.client(1) as c:
        status = c.status(1)
        assert status["slot"] != old_slot
        for _ in range(5):
            c.increment()
    cluster.wait_converged(35)


def test_paused_node_catches_up_after_sigcont(cluster: LocalCluster):
    cluster.pause(3)
    try:
        with cluster.client(1) as c:
            for _ in range(40):
                c.increment()
        # Past the peer timeout: the others see node 3 as silent.
        time.sleep(cluster.config.settings.peer_timeout_s * 1.5)
    finally:
        cluster.resume(3)
    cluster.wait_converged(40, nodes=cluster.ids)


def test_every_node_restarted_resumes_everything(cluster: LocalCluster):
    with cluster.client(3) as c:
        for _ in range(10):
            c.increment(by=3)
    cluster.wait_converged(30)
    for n in cluster.ids:
        cluster.kill(n)
    for n in cluster.ids:
        cluster.start(n, wait=False)
    for n in cluster.ids:
        cluster.wait_ready(n)
    assert cluster.counts() == {1: 30, 2: 30, 3: 30}


def _router_call(endpoint: str, frames: list[bytes], timeout: float = 2.0) -> dict:
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        sock.send_multipart(frames)
        assert sock.poll(timeout * 1000), "node did not answer a bad request"
        return orjson.loads(sock.recv())
    finally:
        sock.close()


def test_bad_client_requests_get_error_replies_and_change_nothing(cluster: LocalCluster):
    with cluster.client(1) as c:
        c.increment(by=5)
    cluster.wait_converged(5)
    router = cluster.config.node(1).router
    cases = [
        ([b"not json"], "not valid JSON"),
        ([b'{"op": "increment"}', b"extra"], "expected 1 frame"),
        ([b'{"op": "increment", "by": 0, "id": 9}'], "between 1 and"),
        ([b'{"op": "increment", "by": 4294967297}'], "between 1 and"),
        ([b'{"op": "increment", "by": "7"}'], "integer"),
        ([b'{"op": "launch"}'], "unknown operation"),
        ([b'{"op": "increment", "pad": "' + b"x" * 70_000 + b'"}'], "too large"),
    ]
    for frames, fragment in cases:
        reply = _router_call(router, frames)
        assert reply["ok"] is False and reply["error"] == "bad_request", reply
        assert fragment in reply["message"]
    assert _router_call(router, [b'{"op": "ping", "id": 9}'])["id"] == 9
    assert cluster.counts() == {1: 5, 2: 5, 3: 5}


def test_garbage_bytes_on_every_port_never_crash_or_change_a_node(cluster: LocalCluster):
    with cluster.client(2) as c:
        c.increment(by=4)
    cluster.wait_converged(4)
    for node in cluster.ids:
        for endpoint in (cluster.config.node(node).router, cluster.config.node(node).pub):
            host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
            for payload in (b"\x00" * 64, b"GET / HTTP/1.0\r\n\r\n", bytes(range(256)) * 4):
                with socket.create_connection((host, int(port)), timeout=2) as s:
                    s.sendall(payload)
    assert cluster.counts() == {1: 4, 2: 4, 3: 4}
    assert all(p.poll() is None for p in cluster.procs.values())


def test_bad_replication_messages_are_dropped(cluster: LocalCluster):
    """Impersonate node 3's PUB socket and publish every kind of bad message."""
    with cluster.client(1) as c:
        c.increment(by=2)
    cluster.wait_converged(2)
    cluster.kill(3)
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(cluster.config.node(3).pub)
    bad = [
        [b"garbage"], [b"{}"], [b"[1]"], [b'{"t": "u"}'],
        [b'{"t": "u", "n": 3, "q": 1, "s": {"3.0123456789ab": -5}}'],
        [b'{"t": "u", "n": 3, "q": 1, "s": {"3.0123456789ab": 1e30}}'],
        [b'{"t": "u", "n": 3, "q": 1, "s": {"3.0123456789ab": "5"}}'],
        [b'{"t": "u", "n": 42, "q": 1, "s": {"42.0123456789ab": 5}}'],
        [b'{"t": "u", "n": 3, "q": 1, "s": {"1.0123456789ab": 5}}'],
        [b'{"t": "u", "n": 3, "q": 1, "s": {"3.0123456789ab": %d}}' % MAX_COUNT],
        [b'{"t": "h", "n": 3, "q": 1, "s": {}, "d": 5}'],
        [b'{"t": "u", "n": 3, "q": 1, "s": {}}', b"second frame"],
    ]
    try:
        # A SUB connects asynchronously: keep publishing until both nodes dropped some.
        def dropped() -> bool:
            for frames in bad:
                pub.send_multipart(frames)
            with cluster.client(1) as c1, cluster.client(2) as c2:
                return all(c.status(n)["stats"]["dropped_peer_messages"] >= len(bad)
                           for c, n in ((c1, 1), (c2, 2)))
        wait_for(dropped, 10, interval=0.1, what="nodes to drop bad broadcasts")
    finally:
        pub.close()
    assert cluster.counts([1, 2]) == {1: 2, 2: 2}


def test_count_past_2_63_is_refused_not_crashed(cluster: LocalCluster):
    with cluster.client(1) as c:
        # Near the limit by a few big increments... 2**32 at a time would take 2**31
        # calls, so seed the limit through the database instead.
        c.increment(by=1)
    cluster.kill(1)
    import sqlite3
    db = sqlite3.connect(cluster.data_dir(1) / "zcounter.sqlite3")
    db.execute("UPDATE slots SET value = ?", (MAX_COUNT - 2,))
    db.commit()
    db.close()
    cluster.start(1)
    with cluster.client(1) as c:
        assert c.increment(by=1) == MAX_COUNT - 1
        from zcounter import RequestRefused
        with pytest.raises(RequestRefused, match="2\\*\\*63-1"):
            c.increment(by=2)
        assert c.get_count() == MAX_COUNT - 1
    cluster.wait_converged(MAX_COUNT - 1)
