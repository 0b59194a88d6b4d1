"""The attack mix of issue 19's Evidence: idle connections on every door of node 1, then
issue 19's hostile inputs in turn, while the probe checks every node.

Pass: every probe answer within 1 s, counts exact, no node dies, and every node's RSS
stays under :data:`RSS_LIMIT`.  Every attack is bounded in bytes, count and time (the
network rule), and each closes what it opened before the next one starts, except the
idle connections, held for the whole run.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import zmq

from ..model.pncounter import MAX_TOTAL
from .live import REAL, Crash, FuzzCluster, Probe, Senders, fuzz_cluster, rss_bytes, watch

#: Issue 19: "node RSS stays under 300 MB".
RSS_LIMIT = 300 * 1000 * 1000
#: Bytes one streaming attack sends at most (a message that never ends, a huge command).
STREAM_BYTES = 512 * 1024 * 1024
#: How long one attack may run.
ATTACK_S = 10.0

Echo = Callable[[str], None]


def _tcp(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=5)
    sock.setblocking(True)
    return sock


def zmtp_dealer(host: str, port: int) -> socket.socket:
    """A raw TCP connection that has done ZMTP 3.0's NULL handshake as a DEALER: what an
    idle client looks like to the ROUTER, without a zmq socket (and its fds) per peer."""
    sock = _tcp(host, port)
    sock.sendall(b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00")
                 + b"\x00" + b"\x00" * 31)
    prop = b"\x0bSocket-Type" + struct.pack(">I", 6) + b"DEALER"
    body = b"\x05READY" + prop
    sock.sendall(b"\x04" + bytes([len(body)]) + body)
    return sock


def _host_port(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.removeprefix("tcp://").rpartition(":")
    return host.strip("[]"), int(port)


@contextlib.contextmanager
def idle_connections(cluster: FuzzCluster, node: int, per_door: int,
                     echo: Echo) -> Iterator[dict[str, int]]:
    """``per_door`` idle connections on node's RESP, metrics and native doors."""
    socks: list[socket.socket] = []
    opened = dict.fromkeys(("resp", "metrics", "native"), 0)
    refused = dict.fromkeys(opened, 0)
    try:
        for door in opened:
            if door == "native":
                host, port = _host_port(cluster.config.node(node).router)
            else:
                host, port = cluster.host_port(node, door)
            for _ in range(per_door):
                try:
                    socks.append(zmtp_dealer(host, port) if door == "native"
                                 else _tcp(host, port))
                    opened[door] += 1
                except OSError:
                    refused[door] += 1
        echo(f"idle connections held on node {node}: {opened} (refused or failed: {refused})")
        yield opened
    finally:
        for sock in socks:
            sock.close()


# --------------------------------------------------------------------------- attacks


def _resp(cluster: FuzzCluster, node: int, payload: bytes, hold_s: float = 1.0) -> None:
    host, port = cluster.host_port(node, "resp")
    with _tcp(host, port) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(payload)
        sock.settimeout(hold_s)
        with contextlib.suppress(OSError):
            sock.recv(65536)


def cmd(*words: bytes) -> bytes:
    return b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)


def huge_array(cluster: FuzzCluster, node: int) -> None:
    _resp(cluster, node, b"*4294967295\r\n")


def backtracking_glob(cluster: FuzzCluster, node: int) -> None:
    _resp(cluster, node, cmd(b"INCR", b"a" * 200) + cmd(b"SCAN", b"0", b"MATCH", b"*a" * 7 + b"b"),
          hold_s=2.0)


def big_pattern(cluster: FuzzCluster, node: int) -> None:
    _resp(cluster, node, cmd(b"KEYS", b"*?" * (2 * 1024 * 1024)), hold_s=2.0)


def pipelined_waits(cluster: FuzzCluster, node: int) -> None:
    _resp(cluster, node, cmd(b"INCR", b"w") + cmd(b"WAIT", b"3", b"60000") * 1024, hold_s=2.0)


def big_names_and_partials(cluster: FuzzCluster, node: int) -> None:
    """Ten connections each holding a 3 MB name, ten each holding most of a 4 MB command."""
    host, port = cluster.host_port(node, "resp")
    socks = []
    try:
        for i in range(20):
            sock = _tcp(host, port)
            socks.append(sock)
            with contextlib.suppress(OSError):
                if i % 2:
                    sock.sendall(cmd(b"CLIENT", b"SETNAME", b"n" * (3 * 1000 * 1000)))
                else:
                    sock.sendall(b"*2\r\n$4\r\nECHO\r\n$4000000\r\n" + b"p" * 3_900_000)
        time.sleep(2.0)  # held: what the node keeps per connection is what this measures
    finally:
        for sock in socks:
            sock.close()


def resp3_marker(cluster: FuzzCluster, node: int) -> None:
    inner = cmd(b"INCR", b"desync")
    _resp(cluster, node, b"*2\r\n$4\r\nECHO\r\n%" + b"%d\r\n" % len(inner) + inner + b"\r\n")


def confirm_flood(cluster: FuzzCluster, node: int) -> None:
    """50,000 held ``confirm`` requests on one connection (issue 19 saw aborts at ~300,000)."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDTIMEO, 2000)
    sock.connect(cluster.config.node(node).router)
    try:
        for i in range(50_000):
            sock.send(b'{"op":"confirm","id":%d,"key":"c%d","nodes":4,"timeout_ms":600000}'
                      % (i, i % 100))
        time.sleep(1.0)
    except zmq.ZMQError:
        pass
    finally:
        sock.close(linger=0)
        ctx.term()


def endless_message(cluster: FuzzCluster, node: int) -> None:
    """One ZeroMQ message whose frames never end (MORE on every frame), up to
    :data:`STREAM_BYTES` or :data:`ATTACK_S`, or until the node closes the connection."""
    host, port = _host_port(cluster.config.node(node).router)
    frame = b"\x03" + struct.pack(">Q", 65536) + b"f" * 65536  # MORE | LONG
    sent = 0
    deadline = time.monotonic() + ATTACK_S
    with contextlib.suppress(OSError), zmtp_dealer(host, port) as sock:
        while sent < STREAM_BYTES and time.monotonic() < deadline:
            sock.sendall(frame)
            sent += len(frame)


def forged_overflow(cluster: FuzzCluster, node: int) -> None:
    """A peer's merge (from anyone, in none mode) with a total of 2**63-1."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(cluster.config.node(node).router)
    try:
        sock.send(orjson.dumps({"op": "merge", "id": 1, "n": 3,
                                "s": {"victim": {"3.0123456789ab": [MAX_TOTAL]}}}))
        sock.poll(1000)
    finally:
        sock.close(linger=0)
        ctx.term()


def client_sends_peer_size(cluster: FuzzCluster, node: int) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(cluster.config.node(node).router)
    try:
        states = {f"k{i}": {"3.0123456789ab": [1]} for i in range(200_000)}
        sock.send(orjson.dumps({"op": "merge", "id": 2, "n": 3, "s": states}))
        sock.poll(2000)
    finally:
        sock.close(linger=0)
        ctx.term()


def huge_broadcast(cluster: FuzzCluster, node: int) -> None:
    """64 MiB published by the forged fourth node: every SUB takes it."""
    cluster.pub.send(b'{"t":"d","n":4,"e":"x","q":1,"s":{"' + b"k" * (64 << 20) + b'":{}}}')
    time.sleep(1.0)


ATTACKS: dict[str, Callable[[FuzzCluster, int], None]] = {
    "resp-huge-array": huge_array,
    "resp-backtracking-glob": backtracking_glob,
    "resp-4mb-pattern": big_pattern,
    "resp-pipelined-waits": pipelined_waits,
    "resp-big-names-and-partials": big_names_and_partials,
    "resp3-marker-in-argument": resp3_marker,
    "native-confirm-flood": confirm_flood,
    "zmq-endless-message": endless_message,
    "peer-forged-overflow": forged_overflow,
    "client-peer-sized-message": client_sends_peer_size,
    "sub-huge-broadcast": huge_broadcast,
}


def run_attack_mix(root: Path, seconds: float, idle: int, seed: int, echo: Echo,
                   node: int = 1) -> bool:
    with fuzz_cluster(root) as cluster:
        started = time.monotonic()
        probe = Probe(cluster, started)
        senders = Senders(cluster, (), seed)  # no fuzzing: only its crash bookkeeping
        crashes: list[Crash] = []
        deaths: dict[str, int] = dict.fromkeys(ATTACKS, 0)
        runs: dict[str, int] = dict.fromkeys(ATTACKS, 0)
        stalls: dict[str, int] = dict.fromkeys(ATTACKS, 0)
        probe.start()
        with idle_connections(cluster, node, idle, echo):
            echo("RSS with the idle connections, before any attack: " + ", ".join(
                f"node {n} {rss_bytes(cluster.pid(n)) / 1e6:.0f} MB" for n in REAL))
            end = time.monotonic() + seconds
            for name in itertools.cycle(ATTACKS):
                if time.monotonic() > end:
                    break
                before_fail, before_crash = len(probe.report.failures), len(crashes)
                with contextlib.suppress(OSError):
                    ATTACKS[name](cluster, node)
                runs[name] += 1
                watch(cluster, senders, probe, crashes, started)
                deaths[name] += len(crashes) - before_crash
                stalls[name] += len(probe.report.failures) - before_fail
        report = probe.stop()
    echo(f"attack mix: {seconds:.0f} s, {idle} idle connections per door on node {node}")
    echo("| attack | runs | node deaths | probe failures during it |")
    echo("| --- | --- | --- | --- |")
    for name in ATTACKS:
        echo(f"| {name} | {runs[name]} | {deaths[name]} | {stalls[name]} |")
    echo(f"probe: {report.answers} answers, worst {report.worst_s * 1000:.0f} ms, "
         f"{len(report.failures)} failures")
    for at, failed_node, what in report.failures[:20]:
        echo(f"  probe failure at {at:.1f} s, node {failed_node}: {what}")
    echo("peak RSS: " + ", ".join(f"node {n} {v / 1e6:.0f} MB" for n, v in report.peak_rss.items()))
    for crash in crashes:
        last = crash.log.strip().splitlines()[-1:] or ["(no log)"]
        echo(f"  node {crash.node} died at {crash.at:.1f} s: {last[0]}")
    ok = (not crashes and not report.failures
          and all(v < RSS_LIMIT for v in report.peak_rss.values()))
    echo("result: " + ("OK" if ok else "FAILED"))
    return ok


__all__ = ["ATTACKS", "RSS_LIMIT", "idle_connections", "run_attack_mix", "zmtp_dealer"]
