"""Hostile input on the ZeroMQ doors (issue 19), against real node processes.

* a message whose frames never end (raw ZMTP over TCP) is cut, and the node stays small;
* a message of too many frames is dropped unanswered and counted;
* held requests past their caps are refused ``busy`` (and the CLI says so, exit 1);
* 300,000 pipelined ``confirm`` requests from a connection that then closes no longer
  abort the node inside libzmq;
* a client that never reads its replies loses them, not the node its memory.
"""

from __future__ import annotations

import select
import socket
import struct
import time

import orjson
import pytest
import zmq
from harness import FAST_SETTINGS, LocalCluster, RawDealer, running_cluster, wait_for
from zmtp import PING, connect, frame

from zcounter import limits

pytestmark = pytest.mark.integration


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def answers(cluster: LocalCluster, node: int) -> bool:
    with cluster.client(node, timeout=1.0, retries=0) as c:
        return bool(c.status(node))


# --------------------------------------------------------------------------- frames


@pytest.mark.parametrize("frame_bytes", [65536, 1], ids=["64KiB-frames", "1-byte-frames"])
def test_a_message_whose_frames_never_end_is_cut_and_the_node_stays_small(tmp_path,
                                                                          frame_bytes):
    """Without the watch the node held every frame: 64 KiB frames grew it 1:1 with the
    bytes sent (1.59 GB after 5 s), 1-byte frames ~21x (74 MiB sent: 1.56 GB)."""
    # One node: its ROUTER has no peer hosts, so a connection gets the client limit.
    with running_cluster(tmp_path / "c", n=1) as cluster:
        pid = cluster.procs[1].pid
        before = rss_mib(pid)
        peak = before
        chunk = frame(b"x" * frame_bytes, more=True) * max(1, (1 << 20) // (frame_bytes + 9))
        sock = connect(cluster.router(1))
        sock.settimeout(0.5)
        sent = 0
        cut = False
        deadline = time.monotonic() + 20
        # Bounded by 2 GiB sent or 20 s, whichever first.
        while time.monotonic() < deadline and sent < 2 << 30:
            try:
                sock.sendall(chunk)
                sent += len(chunk)
            except TimeoutError:
                pass
            except OSError:
                cut = True  # reset by the node
                break
            peak = max(peak, rss_mib(pid))
            # The node never writes to us after the handshake: readable means its end of
            # the connection is gone (EOF; our unsent bytes then just wait in our queue).
            if select.select([sock], [], [], 0)[0] and sock.recv(1) == b"":
                cut = True
                break
        sock.close()
        assert cut, f"the node never cut a connection that sent {sent >> 20} MiB of one message"
        assert peak - before < 200, f"node grew {peak - before:.0f} MiB before the cut"
        assert cluster.stat(1, "connections_cut") == 1
        wait_for(lambda: rss_mib(pid) - before < 50, 10, what="libzmq to free the frames")
        assert answers(cluster, 1)


def test_a_client_flooding_faster_than_the_node_reads_is_cut(tmp_path):
    """With no RCVHWM on the ROUTER, the watch bounds what one connection may queue:
    500,000 pipelined status requests (~19 MiB) outrun the node's reading."""
    with running_cluster(tmp_path / "c", n=1) as cluster:
        pid = cluster.procs[1].pid
        before = rss_mib(pid)
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        flood = ctx.socket(zmq.DEALER)
        flood.setsockopt(zmq.SNDHWM, 0)
        flood.setsockopt(zmq.RCVHWM, 1)
        flood.connect(cluster.router(1))
        try:
            status = orjson.dumps({"op": "status", "id": 1})
            for _ in range(500_000):
                flood.send(status)
            wait_for(lambda: cluster.stat(1, "connections_cut") >= 1, 30,
                     what="the flooding connection to be cut")
            t = time.monotonic()
            assert answers(cluster, 1) and time.monotonic() - t < 1.0
            assert rss_mib(pid) - before < 200
        finally:
            flood.close(linger=0)
            ctx.term()


def test_a_message_of_too_many_frames_is_dropped_unanswered_and_counted(cluster):
    with cluster.raw(1) as raw:
        # A few frames too many still get a readable answer ...
        reply = raw.call([b'{"op": "ping", "id": 1}', b"extra"])
        assert reply["error"] == "bad_request" and "got 2" in reply["message"]
        # ... a message of a thousand frames gets none, and is counted.
        raw.sock.send_multipart([b"x"] * 1000)
        assert raw.request({"op": "ping", "id": 2})["id"] == 2  # the next is answered
    assert cluster.stat(1, "oversized_messages") == 1


# --------------------------------------------------------------------------- held


def confirm(i: int, nodes: int = 4, timeout_ms: int = 60_000) -> bytes:
    """A confirm a three-node cluster can never meet (4 nodes): held until its timeout."""
    return orjson.dumps({"op": "confirm", "id": i, "key": "k", "nodes": nodes,
                         "timeout_ms": timeout_ms})


def test_held_confirms_past_the_connection_cap_are_refused_busy_at_once(cluster):
    with cluster.client(1) as c:
        c.increment(key="k")
    cap = limits.MAX_HELD_PER_CONNECTION
    with cluster.raw(1) as raw:
        for i in range(cap + 50):
            raw.sock.send(confirm(i))
        busy = []
        deadline = time.monotonic() + 20
        while len(busy) < 50:
            assert raw.sock.poll(int(max(0.0, deadline - time.monotonic()) * 1000)), (
                f"only {len(busy)} of 50 busy answers arrived")
            reply = orjson.loads(raw.sock.recv())
            assert reply.get("error") == "busy", reply  # held ones answer only at 60 s
            busy.append(reply["id"])
        assert sorted(busy) == list(range(cap, cap + 50))
        assert "max_held_per_connection" in reply["message"]
        # Another connection is not refused: the cap is per connection.
        with cluster.raw(1) as other:
            other.sock.send(confirm(0, nodes=1))
            assert other.sock.poll(2000) and orjson.loads(other.sock.recv())["held"] >= 1
    assert cluster.stat(1, "held_refused") == 50


def test_a_write_refused_busy_exits_1_with_a_clear_message_and_is_not_applied(tmp_path):
    settings = {**FAST_SETTINGS, "max_held_per_node": 3}
    with running_cluster(tmp_path / "c", settings=settings) as cluster:
        with cluster.client(1) as c:
            c.increment(key="k")
        with cluster.raw(1) as raw:
            for i in range(3):
                raw.sock.send(confirm(i))
            wait_for(lambda: cluster.status(1)["held_requests"] == 3, 5,
                     what="three held confirms")
            result = cluster.cli("--node", "1", "increment", "--key", "k", "--wait", "all")
            assert result.returncode == 1, result
            assert "busy" in result.stderr and "max_held_per_node = 3" in result.stderr
            assert "nothing was applied" in result.stderr
        assert cluster.count(1, "k") == 1
        assert cluster.stat(1, "held_refused") == 1


# --------------------------------------------------------------------------- abort

#: libzmq's ZMTP heartbeat fires every second on each connection of a socket that sends
#: heartbeats; the abort came from that timer within a second of the close.
ABORT_WINDOW_S = 3.0


def test_300k_held_confirms_then_a_closed_connection_do_not_abort_the_node(cluster):
    """The reproduction of issue 19's abort: one DEALER pipelines 300,000 ``confirm``
    requests, the node's queue for it fills (input stopped), the DEALER closes.  On main
    (913b68c) node 1 aborted with ``Assertion failed: !_io_error
    (src/stream_engine_base.cpp:310)`` on the second of three rounds."""
    with cluster.client(1) as c:
        c.increment(key="k")
    proc = cluster.procs[1]
    started = time.monotonic()
    for round_ in range(3):
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.SNDHWM, 0)
        dealer.connect(cluster.router(1))
        target = cluster.stat(1, "held_refused") + 1_000
        for i in range(300_000):
            dealer.send(confirm(i))
        # Close once the node is working through them (its queue for us is full).
        wait_for(lambda t=target: cluster.stat(1, "held_refused") > t, 20,
                 what="the node to refuse confirms past the cap")
        dealer.close(linger=0)
        ctx.term()
        closed = time.monotonic()
        while time.monotonic() - closed < ABORT_WINDOW_S:
            assert proc.poll() is None, (f"node 1 exited with {proc.returncode} in round "
                                         f"{round_}:\n" + cluster.log_path(1).read_text()[-500:])
            answers(cluster, 1)
    assert time.monotonic() - started < 60
    assert answers(cluster, 1)
    log = cluster.log_path(1).read_text()
    assert "Assertion failed" not in log


def test_pings_left_in_a_flooded_connection_do_not_abort_the_node(cluster):
    """The same abort reached without the node's own heartbeats: a raw client that
    interleaves ZMTP PINGs with 100,000 requests, so that one is in libzmq's input buffer
    whichever request filled the queue, then resets the connection.  Draining the queue
    decoded the PING and answered it on the failed connection: node 1 aborted in the
    first of five rounds with RCVHWM 10,000 and no ROUTER heartbeats."""
    proc = cluster.procs[1]
    body = b"".join(frame(orjson.dumps({"op": "status", "id": i}), more=False) + PING
                    for i in range(100_000))
    for round_ in range(3):
        sock = connect(cluster.router(1), version=(3, 1))
        sock.sendall(body)
        # Reset once the node is answering (its queue for us is long by then).
        got = 0
        deadline = time.monotonic() + 20
        while got < 64 * 1024:
            assert time.monotonic() < deadline, "the node did not answer the flood"
            got += len(sock.recv(65536))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        closed = time.monotonic()
        while time.monotonic() - closed < ABORT_WINDOW_S:
            assert proc.poll() is None, (f"node 1 exited with {proc.returncode} in round "
                                         f"{round_}:\n" + cluster.log_path(1).read_text()[-500:])
            answers(cluster, 1)
    assert "Assertion failed" not in cluster.log_path(1).read_text()


# --------------------------------------------------------------------------- output


def test_a_client_that_never_reads_loses_its_replies_not_the_node_its_memory(cluster):
    pid = cluster.procs[1].pid
    before = rss_mib(pid)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    deaf = ctx.socket(zmq.DEALER)
    deaf.setsockopt(zmq.SNDHWM, 0)
    deaf.setsockopt(zmq.RCVHWM, 1)
    deaf.setsockopt(zmq.RCVBUF, 4096)
    deaf.connect(cluster.router(1))
    try:
        status = orjson.dumps({"op": "status", "id": 1})  # a reply of ~1 KB each
        for _ in range(4 * limits.ROUTER_SNDHWM):
            deaf.send(status)
        wait_for(lambda: cluster.stat(1, "send_queue_full") > 0, 30,
                 what="replies past SNDHWM to be dropped and counted")
        dropped = cluster.stat(1, "send_queue_full")
        assert dropped > 0
        t = time.monotonic()
        assert answers(cluster, 1) and time.monotonic() - t < 1.0
        # ~10,000 queued replies of ~1 KB (SNDHWM) plus the kernel's buffers.
        assert rss_mib(pid) - before < 100
    finally:
        deaf.close(linger=0)
        ctx.term()


def test_raw_dealer_helper_still_pipelines_past_the_old_window(cluster):
    """512 in flight (the largest window a zcounter tool uses) all come back."""
    with RawDealer(cluster.router(2)) as raw:
        replies = raw.pipeline(({"op": "ping"} for _ in range(2000)), window=512)
    assert len(replies) == 2000 and all(r["ok"] for r in replies)
