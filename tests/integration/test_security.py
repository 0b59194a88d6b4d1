"""CurveZMQ and roles (issue 10), with real node processes on loopback.

In ``curve`` mode: a rogue with no key (or an unknown one) neither changes nor reads a
count; a client key cannot do what only peers do; client keys are re-read without a
restart (SIGHUP, and periodically); nobody but a node subscribes to a node's PUB; a
capture of the loopback traffic holds no plaintext (while the same capture in ``none``
mode does); every client-side key problem is a one-line error naming the node, exit 1,
within the timeout; every bad key at start is a one-line error naming the file and the
field, exit 2; ``bin/keygen`` writes zmq certificates with the right modes; kill -9,
a wiped restart and a node key rotation end converged.

The same faults in network namespaces, the ``none`` mode's peer-host check and
``bin/cluster --secure`` are in ``tests/faults/test_security_netns.py``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import zmq
import zmq.auth
from harness import (
    LocalCluster,
    RawDealer,
    free_port,
    running_cluster,
    wait_for,
    write_config,
)
from zmq.utils.monitor import recv_monitor_message

from zcounter import Client
from zcounter.config import load_config
from zcounter.errors import AuthenticationError, RequestRefused
from zcounter.localcluster import curve_client
from zcounter.protocol.codec import decode_request
from zcounter.protocol.messages import PEER_REQUESTS
from zcounter.runtime.auth import CLIENT_KEYS_RELOAD_S
from zcounter.security import generate

pytestmark = pytest.mark.integration

#: Seconds a client command may take to fail, Python's start-up included; every client
#: command below runs with --timeout CLI_TIMEOUT_S and must end well inside it.
CLI_TIMEOUT_S = 5.0
#: A NULL-mechanism socket meeting a CURVE server: the handshake fails as a protocol error
#: (the mechanism mismatch), or without detail if the server closed the connection first.
NO_KEY_EVENTS = (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
#: How long a request without an answer is waited for before we call it unanswered.
#: Nothing signals "this will never be answered": a bounded wait is the only evidence.
SILENCE_S = 1.0


def zc(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
       preexec_fn: Any = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zcounter.cli", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})}, cwd=cwd,
                          preexec_fn=preexec_fn, check=False)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The error a command printed, which must be exactly one line on stderr."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[LocalCluster]:
    """A running three-node cluster in curve mode (keys under its root)."""
    with running_cluster(tmp_path / "cluster", secure=True) as c:
        yield c


def stranger_key(where: Path, name: str = "stranger") -> tuple[Path, Path]:
    """A key pair the cluster has never heard of (public, secret)."""
    return generate(name, where)


def stats(cluster: LocalCluster, node: int) -> dict[str, int]:
    return dict(cluster.status(node)["stats"])


# --------------------------------------------------------------------------- rogues


@pytest.mark.parametrize("rogue", ["no key", "unknown key"])
def test_a_rogue_can_neither_change_nor_read_a_count(secure: LocalCluster, tmp_path: Path,
                                                     rogue: str) -> None:
    with secure.client(1) as c:
        c.increment(5, key="guarded", wait="all")
    before = {n: stats(secure, n) for n in secure.ids}
    cert = None if rogue == "no key" else stranger_key(tmp_path / "rogue")[1]
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        for node in secure.ids:
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            if cert is not None:
                curve_client(sock, cert, secure.keys.nodes[node][0])  # type: ignore[union-attr]
            # The monitor is attached before the connect, so no event is missed.
            monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                              | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                              | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                                              | zmq.EVENT_HANDSHAKE_SUCCEEDED)
            sock.connect(secure.router(node))
            sock.send(orjson.dumps({"op": "increment", "id": 1, "key": "guarded",
                                    "by": 2**32}))
            sock.send(orjson.dumps({"op": "get", "id": 2, "keys": ["guarded"]}))
            assert monitor.poll(5000), f"node {node}: no handshake event"
            event = recv_monitor_message(monitor)["event"]
            # Unknown key: ZAP refused it (the node answered with an ERROR command).
            # No key: the node speaks CURVE, the rogue NULL, a mechanism mismatch that
            # either side may notice first (the rogue reads the greeting: PROTOCOL; or
            # the node has already closed: NO_DETAIL - both seen in the netns test).
            assert event in ((zmq.EVENT_HANDSHAKE_FAILED_AUTH,) if cert is not None else
                             NO_KEY_EVENTS), (node, event)
            # Neither the increment nor the read is ever answered.
            assert not sock.poll(int(SILENCE_S * 1000)), f"node {node} answered a rogue"
            sock.disable_monitor()
            monitor.close(linger=0)
            sock.close(linger=0)
    finally:
        ctx.destroy(linger=0)  # closes what a failed assertion left open
    assert secure.counts(key="guarded") == {1: 5, 2: 5, 3: 5}
    # Nothing the rogue sent reached a node: not even as a bad or forbidden request.
    after = {n: stats(secure, n) for n in secure.ids}
    for node in secure.ids:
        for name in ("increments", "bad_requests", "forbidden"):
            assert after[node].get(name, 0) == before[node].get(name, 0), (node, name)


#: One valid request of every peer operation, as a peer's DEALER sends them (codec.py).
def peer_frames(slot: str, key: str) -> dict[str, dict[str, Any]]:
    return {
        "fetch": {"op": "fetch", "id": 1, "n": 2, "k": [key]},
        # The issue's attack: a "push" of node 2's slot that would add 10**12.
        "merge": {"op": "merge", "id": 2, "n": 2, "s": {key: {slot: [10**12]}}},
        "sb": {"op": "sb", "id": 3, "n": 2, "h": [0] * 256},
        "ss": {"op": "ss", "id": 4, "n": 2, "b": [0], "h": [0] * 256},
        "sk": {"op": "sk", "id": 5, "n": 2, "g": [0], "e": [[key, 1]]},
        "rp": {"op": "rp", "id": 6, "n": 2, "e": "", "a": 0},
        # Issue 21: "do you hold this key dead?" - a yes would let a forger start a
        # collection; refused like the others.
        "hold": {"op": "hold", "id": 7, "n": 2, "k": [[key, 1]]},
    }


def test_a_client_key_cannot_do_any_peer_operation(secure: LocalCluster) -> None:
    with secure.client(2) as c:
        c.increment(7, key="guarded", wait="all")
    slot2 = secure.status(2)["slot"]
    frames = peer_frames(slot2, "guarded")
    # Every peer operation the node knows is tried (a new one fails this line).
    assert ({type(decode_request(orjson.dumps(f))) for f in frames.values()}
            == set(PEER_REQUESTS))
    before = {n: stats(secure, n).get("forbidden", 0) for n in secure.ids}
    for node in secure.ids:
        with secure.raw(node) as dealer:  # the client's key
            for op, frame in frames.items():
                reply = dealer.request(frame)
                assert reply["ok"] is False and reply["error"] == "forbidden", (node, op, reply)
    for node in secure.ids:
        assert stats(secure, node).get("forbidden", 0) == before[node] + len(frames)
    # The refusals were answered after the node handled them: a merge would have been
    # applied by then.  And the next write, acknowledged by all, sees the old count.
    assert secure.counts(key="guarded") == {1: 7, 2: 7, 3: 7}
    with secure.client(1) as c:
        assert c.increment(1, key="guarded", wait="all") == 8
    assert secure.counts(key="guarded") == {1: 8, 2: 8, 3: 8}


def test_the_same_peer_operations_under_a_node_key_are_served(secure: LocalCluster) -> None:
    """The control of the test above: the frames are valid, and node keys may do all."""
    assert secure.keys is not None
    frames = peer_frames("2.000000000000", "control")
    node2 = secure.curve(1, cert=secure.keys.nodes[2][1])
    with RawDealer(secure.router(1), node2) as dealer:
        for op, frame in frames.items():
            reply = dealer.request(frame)
            assert "t" in reply and "error" not in reply, (op, reply)
    assert secure.count(1, key="control") == 10**12


# --------------------------------------------------------------------------- client keys


def authorized(cluster: LocalCluster, cert: Path, node: int = 1) -> bool:
    """Does a fresh client with ``cert`` get an answer from ``node``?  (A fresh one:
    keys are checked at the handshake, once per connection.)"""
    try:
        with cluster.client(node, cert=cert, timeout=2.0, retries=0) as c:
            c.status(node)
        return True
    except AuthenticationError:
        return False


def test_client_keys_are_read_again_on_sighup_and_periodically(secure: LocalCluster,
                                                              tmp_path: Path) -> None:
    assert secure.keys is not None
    public, cert = stranger_key(tmp_path / "newcomer", "newcomer")
    added = secure.keys.clients / public.name
    log = secure.log_path(1)

    def refused_by_the_cli() -> None:
        started = time.monotonic()
        result = secure.cli("--cert", str(cert), "--node", "1", "increment", "--key", "kr",
                            timeout=CLI_TIMEOUT_S)
        elapsed = time.monotonic() - started
        assert result.returncode == 1, result
        line = one_line_error(result)
        assert "node 1" in line and "not among the node's authorized client keys" in line
        assert elapsed < CLI_TIMEOUT_S, elapsed

    refused_by_the_cli()
    # Added, then SIGHUP: accepted at once (the node re-reads before its next poll), also
    # by a client object that was refused before (it connects afresh).
    with secure.client(1, cert=cert, timeout=2.0, retries=0) as early:
        with pytest.raises(AuthenticationError):
            early.status(1)
        shutil.copy(public, added)
        secure.procs[1].send_signal(signal.SIGHUP)
        wait_for(lambda: authorized(secure, cert), 5.0, what="the key to be accepted")
        assert early.status(1)["node"] == 1
    assert "client keys re-read (SIGHUP)" in log.read_text()
    ok = secure.cli("--cert", str(cert), "--node", "1", "increment", "--key", "kr")
    assert (ok.returncode, ok.stdout) == (0, "1\n"), ok
    # Removed, then SIGHUP: refused again.
    added.unlink()
    secure.procs[1].send_signal(signal.SIGHUP)
    wait_for(lambda: not authorized(secure, cert), 5.0, what="the key to be refused")
    refused_by_the_cli()
    # No signal at all: the periodic re-read picks the file up within its interval.
    reads = log.read_text().count("client keys re-read (periodic)")
    shutil.copy(public, added)
    wait_for(lambda: authorized(secure, cert), CLIENT_KEYS_RELOAD_S + 5.0, interval=0.2,
             what="the periodic re-read to accept the key")
    assert log.read_text().count("client keys re-read (periodic)") == reads + 1
    added.unlink()
    wait_for(lambda: not authorized(secure, cert), CLIENT_KEYS_RELOAD_S + 5.0, interval=0.2,
             what="the periodic re-read to refuse the key")
    refused_by_the_cli()
    secure.wait_converged(1, key="kr")


def test_a_removed_key_is_refused_on_connections_already_open(secure: LocalCluster,
                                                              tmp_path: Path) -> None:
    """ZAP sees a key once, at the handshake; a key removed from the clients directory
    must stop working on the connections it already has, not only on new ones."""
    assert secure.keys is not None
    public, cert = stranger_key(tmp_path / "leaver", "leaver")
    added = secure.keys.clients / public.name
    shutil.copy(public, added)
    secure.procs[1].send_signal(signal.SIGHUP)
    wait_for(lambda: authorized(secure, cert), 5.0, what="the key to be accepted")
    with secure.client(1, cert=cert, retries=0) as c:
        assert c.increment(3, key="leaver") == 3
        added.unlink()
        secure.procs[1].send_signal(signal.SIGHUP)

        def refused() -> bool:
            try:
                c.get_count("leaver")
            except RequestRefused as exc:
                assert exc.code == "forbidden", exc
                return True
            return False
        wait_for(refused, 5.0, what="the open connection to be refused")
        with pytest.raises(RequestRefused) as info:
            c.increment(100, key="leaver")
        assert info.value.code == "forbidden"
        assert "no longer authorized" in str(info.value)
    assert secure.count(1, key="leaver") == 3


# --------------------------------------------------------------------------- PUB sniffers


def test_only_node_keys_receive_a_nodes_broadcasts(secure: LocalCluster) -> None:
    assert secure.keys is not None
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pub = secure.config.node(1).pub
    subs: dict[str, zmq.Socket[bytes]] = {}
    events: dict[str, int] = {}
    try:
        for name, cert in (("plain", None), ("client key", secure.keys.cert()),
                           ("node 3's key (the control)", secure.keys.nodes[3][1])):
            sub = ctx.socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            if cert is not None:
                curve_client(sub, cert, secure.keys.nodes[1][0])
            monitor = sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                             | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                             | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                                             | zmq.EVENT_HANDSHAKE_SUCCEEDED)
            sub.connect(pub)
            assert monitor.poll(5000), f"{name}: no handshake event"
            events[name] = recv_monitor_message(monitor)["event"]
            sub.disable_monitor()
            monitor.close(linger=0)
            subs[name] = sub
        assert events["plain"] in NO_KEY_EVENTS, events
        assert events["client key"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH, events
        assert events["node 3's key (the control)"] == zmq.EVENT_HANDSHAKE_SUCCEEDED, events
        control = subs.pop("node 3's key (the control)")
        received = {name: 0 for name in subs}
        with secure.client(1) as c:
            for _ in range(50):
                c.increment(1, key="broadcast")
                for name, sub in subs.items():
                    while sub.poll(0):
                        sub.recv()
                        received[name] += 1
        # The control hears the delta carrying the last increment: it was sent while
        # the sniffers were subscribed.
        deadline = time.monotonic() + 5.0
        heard = False
        while not heard and time.monotonic() < deadline:
            if control.poll(100):
                message = orjson.loads(control.recv())
                state = message.get("s", {}).get("broadcast", {})
                heard = any(record[0] == 50 for record in state.values())
        assert heard, "the node key's SUB did not receive the deltas"
        for name, sub in subs.items():
            while sub.poll(0):
                sub.recv()
                received[name] += 1
        assert received == {"plain": 0, "client key": 0}
    finally:
        for sock in [*subs.values()]:
            sock.close(linger=0)
        ctx.destroy(linger=0)


# --------------------------------------------------------------------------- the wire


def tcp_payloads(pcap: bytes) -> dict[tuple[int, int], bytes]:
    """Every TCP payload in a pcap file (link type Ethernet: what ``tcpdump -i lo``
    writes), concatenated per (source port, destination port) in capture order, so a
    message split over two segments is found whole."""
    magic = pcap[:4]
    order = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">", b"\x4d\x3c\xb2\xa1": "<",
             b"\xa1\xb2\x3c\x4d": ">"}[magic]
    linktype = struct.unpack(order + "I", pcap[20:24])[0]
    assert linktype == 1, f"expected Ethernet frames from tcpdump -i lo, got link type {linktype}"
    flows: dict[tuple[int, int], list[bytes]] = {}
    offset = 24
    while offset + 16 <= len(pcap):
        incl = struct.unpack(order + "I", pcap[offset + 8:offset + 12])[0]
        frame = pcap[offset + 16:offset + 16 + incl]
        offset += 16 + incl
        if len(frame) < 14 + 20 or frame[12:14] != b"\x08\x00":  # IPv4 only (127.0.0.1)
            continue
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 6:  # TCP
            continue
        total = struct.unpack("!H", ip[2:4])[0]
        tcp = ip[ihl:total]
        sport, dport = struct.unpack("!HH", tcp[:4])
        data = tcp[(tcp[12] >> 4) * 4:]
        if data:
            flows.setdefault((sport, dport), []).append(data)
    return {flow: b"".join(parts) for flow, parts in flows.items()}


def _mark(port: int, marker: bytes, pcap: Path, timeout_s: float = 10.0) -> None:
    """Send ``marker`` in a UDP datagram to ``port`` on loopback until it shows in the
    capture file: every packet sent before it is then in the file too (one interface,
    delivered in order), and the capture is live for every packet sent after it."""
    deadline = time.monotonic() + timeout_s
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        while True:
            udp.sendto(marker, ("127.0.0.1", port))
            if pcap.exists() and marker in pcap.read_bytes():
                return
            assert time.monotonic() < deadline, f"marker {marker!r} never reached {pcap}"
            time.sleep(0.05)


@contextlib.contextmanager
def capture(ports: list[int], out: Path) -> Iterator[dict[str, int]]:
    """``tcpdump -i lo`` of ``ports`` into ``out`` while the block runs, from a moment
    it is known to capture to a moment everything sent in the block is known to be in
    the file (:func:`_mark`); afterwards the yielded dict holds tcpdump's own counts
    (captured, dropped by kernel)."""
    marks = free_port()
    expr = " or ".join([f"tcp port {p}" for p in ports] + [f"udp port {marks}"])
    # --immediate-mode and -U: each packet reaches the file as it is seen (without
    # them the last second of traffic sat in tcpdump's buffer when it was stopped, and
    # 16 of 120 requests were missing from a none-mode capture).
    proc = subprocess.Popen(["tcpdump", "-i", "lo", "-n", "--immediate-mode", "-U",
                             "-B", "16384", "-s", "0", "-w", str(out), expr],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    counts: dict[str, int] = {}
    try:
        _mark(marks, b"zcounter-capture-start", out)
        yield counts
        _mark(marks, b"zcounter-capture-end", out)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    for line in err.splitlines():
        words = line.split()
        if line.endswith("packets captured"):
            counts["captured"] = int(words[0])
        elif line.endswith("packets dropped by kernel"):
            counts["dropped"] = int(words[0])


CANARY_KEY = "canary-key-9f3e2a"
CANARY_RID = "canary-rid-"


@pytest.mark.tool("tcpdump")
@pytest.mark.parametrize("mode", ["curve", "none"])
def test_a_capture_of_the_loopback_traffic_holds_no_plaintext(tmp_path: Path,
                                                              mode: str) -> None:
    """In curve mode no request, reply, delta or heartbeat is readable on the wire; the
    same capture of a ``none`` cluster finds all of them (so the capture works)."""
    if os.geteuid() != 0:
        pytest.skip("tcpdump needs root (CAP_NET_RAW) to capture")
    with running_cluster(tmp_path / "cluster", secure=mode == "curve") as cluster:
        ports = [int(e.rsplit(":", 1)[1]) for n in cluster.ids
                 for e in (cluster.router(n), cluster.config.node(n).pub)]
        slots = [cluster.status(n)["slot"] for n in cluster.ids]
        pcap = tmp_path / f"{mode}.pcap"
        increments = 120
        with capture(ports, pcap) as counts:
            clients = {n: cluster.client(n) for n in cluster.ids}
            try:
                # Every node writes, so every slot name travels in deltas and replies.
                for i in range(increments):
                    clients[cluster.ids[i % 3]].increment(
                        1, key=CANARY_KEY, wait="all", request_id=f"{CANARY_RID}{i}")
                for c in clients.values():
                    assert c.get_count(CANARY_KEY) == increments
            finally:
                for c in clients.values():
                    c.close()
        flows = tcp_payloads(pcap.read_bytes())
    assert counts.get("dropped") == 0, counts
    # Requests, replies, deltas, repairs: at least one segment each way per increment.
    assert counts.get("captured", 0) >= 2 * increments, counts
    wire = b"\n".join(flows.values())
    needles = [b'"op":', b'"increment"', CANARY_KEY.encode(), CANARY_RID.encode(),
               *[s.encode() for s in slots]]
    found = {n.decode(): wire.count(n) for n in needles}
    if mode == "curve":
        assert all(v == 0 for v in found.values()), found
        assert len(wire) > increments * 100, "too few payload bytes captured to judge"
    else:
        assert all(v > 0 for v in found.values()), found
        # Every request is in the capture, whole.
        assert all(f'"rid":"{CANARY_RID}{i}"'.encode() in wire for i in range(increments))


# --------------------------------------------------------------------------- client errors


def client_config(cluster: LocalCluster, path: Path, **node1: str) -> Path:
    """The cluster's file with node 1's public key (or the security table) changed, as a
    client on another machine might hold it."""
    text = cluster.config_path.read_text()
    if "public_key" in node1:
        text = text.replace("'keys/node1.key'", repr(node1["public_key"]), 1)
    if node1.get("mode") == "none":
        lines = [line for line in text.splitlines() if not line.startswith("public_key")]
        text = "\n".join(lines).split("[security]")[0]
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", ["wrong node key", "no certificate", "none-mode client"])
def test_client_side_key_problems_are_one_line_errors_within_the_timeout(
        secure: LocalCluster, tmp_path: Path, case: str) -> None:
    assert secure.keys is not None
    args = ["--cert", str(secure.cert)]
    config = secure.config_path
    if case == "wrong node key":
        imposter, _ = generate("imposter", secure.root / "keys")
        config = client_config(secure, secure.root / "wrong.toml",
                               public_key=str(imposter))
        reason = "secure handshake failed: the node's public key"
    elif case == "no certificate":
        args = []
        reason = "no certificate (--cert FILE or ZCOUNTER_CERT)"
    else:
        config = client_config(secure, secure.root / "plain.toml", mode="none")
        args = []
        reason = "the node requires CurveZMQ keys"
    env = {k: v for k, v in os.environ.items() if k != "ZCOUNTER_CERT"}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "zcounter.cli", "client", "--config", str(config), *args,
         "--node", "1", "--timeout", str(CLI_TIMEOUT_S), "increment", "--key", "k"],
        capture_output=True, text=True, timeout=60, env=env, check=False)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result
    line = one_line_error(result)
    assert line.startswith("error: node 1") and reason in line, line
    assert elapsed < CLI_TIMEOUT_S, elapsed
    assert secure.count(1, key="k") == 0


# --------------------------------------------------------------------------- bad keys at start


def _no_dac_override() -> None:
    # Root reads any file whatever its mode (CAP_DAC_OVERRIDE): drop that capability
    # from the bounding set, so the node meets a mode-000 file as any user would.
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


class Layout:
    """A curve cluster's files, not running: the cluster file, keys, clients directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        keys = root / "keys"
        (keys / "clients").mkdir(parents=True)
        self.public: dict[int, Path] = {}
        self.secret: dict[int, Path] = {}
        for i in (1, 2):
            self.public[i], self.secret[i] = generate(f"node{i}", keys)
        client_public, self.cert = generate("client", keys)
        shutil.copy(client_public, keys / "clients" / client_public.name)
        self.write()

    def write(self, node_keys: dict[int, str] | None = None,
              security: dict[str, str] | None = None) -> Path:
        keys = node_keys if node_keys is not None else {i: f"keys/node{i}.key" for i in (1, 2)}
        nodes = {1: ("127.0.0.1", 15551, 15561), 2: ("127.0.0.1", 15552, 15562)}
        self.config = write_config(
            self.root / "cluster.toml", nodes,
            extra={i: {"public_key": k} for i, k in keys.items()},
            security=security if security is not None else {"mode": "curve",
                                                            "clients": "keys/clients"})
        return self.config

    def node(self, secret: Path | None = None, preexec_fn: Any = None
             ) -> subprocess.CompletedProcess[str]:
        args = ["node", "--id", "1", "--config", str(self.config),
                "--data-dir", str(self.root / "data")]
        if secret is not None:
            args += ["--secret-key", str(secret)]
        return zc(*args, preexec_fn=preexec_fn)


def assert_start_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result
    line = one_line_error(result)
    for fragment in fragments:
        assert fragment in line, (fragment, line)


def test_bad_keys_stop_the_node_at_start_naming_file_and_field(tmp_path: Path) -> None:
    lay = Layout(tmp_path)
    keys = tmp_path / "keys"
    # Malformed public key file named by the cluster file.
    garbage = keys / "garbage.key"
    garbage.write_text("this is not a certificate\n")
    lay.write({1: "keys/garbage.key", 2: "keys/node2.key"})
    assert_start_error(lay.node(lay.secret[1]), str(garbage), "nodes.1.public_key")
    # A public key file that does not exist, and one that is a directory.
    lay.write({1: "keys/absent.key", 2: "keys/node2.key"})
    assert_start_error(lay.node(lay.secret[1]), str(keys / "absent.key"),
                       "nodes.1.public_key", "cannot read")
    lay.write({1: "keys", 2: "keys/node2.key"})
    assert_start_error(lay.node(lay.secret[1]), str(keys), "nodes.1.public_key", "cannot read")
    # curve mode, node 2 without a public key.
    lay.write({1: "keys/node1.key"})
    assert_start_error(lay.node(lay.secret[1]), str(lay.config), "nodes.2.public_key",
                       "missing")
    # A missing clients directory.
    lay.write(security={"mode": "curve", "clients": "keys/nobody-here"})
    assert_start_error(lay.node(lay.secret[1]), str(keys / "nobody-here"), "security.clients")
    # No security.clients at all in curve mode.
    lay.write(security={"mode": "curve"})
    assert_start_error(lay.node(lay.secret[1]), str(lay.config), "security.clients")
    lay.write()
    # No secret key given.
    assert_start_error(lay.node(None), str(lay.config), "--secret-key")
    # The secret of another node.
    assert_start_error(lay.node(lay.secret[2]), str(lay.secret[2]), "--secret-key",
                       "nodes.1.public_key")
    # The public half given as the secret (kept private, so only its content is wrong).
    public_only = keys / "public-only.key_secret"
    shutil.copy(lay.public[1], public_only)
    public_only.chmod(0o600)
    assert_start_error(lay.node(public_only), str(public_only), "--secret-key",
                       "no secret-key")
    # A directory given as the secret.
    assert_start_error(lay.node(keys), str(keys), "--secret-key", "not a regular file")
    # A malformed secret file.
    bad_secret = keys / "bad.key_secret"
    bad_secret.write_text("metadata\ncurve\n    public-key = \"short\"\n")
    bad_secret.chmod(0o600)
    assert_start_error(lay.node(bad_secret), str(bad_secret), "--secret-key")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_a_secret_readable_by_group_or_others_stops_the_node(tmp_path: Path, mode: int) -> None:
    lay = Layout(tmp_path)
    lay.secret[1].chmod(mode)
    assert_start_error(lay.node(lay.secret[1]), str(lay.secret[1]), "--secret-key",
                       "group or others", f"{mode:04o}")


def test_an_unreadable_key_file_stops_the_node(tmp_path: Path) -> None:
    lay = Layout(tmp_path)
    preexec = _no_dac_override if os.geteuid() == 0 else None
    lay.secret[1].chmod(0o000)
    assert_start_error(lay.node(lay.secret[1], preexec), str(lay.secret[1]), "--secret-key",
                       "cannot read (Permission denied)")
    lay.secret[1].chmod(0o600)
    lay.public[2].chmod(0o000)
    assert_start_error(lay.node(lay.secret[1], preexec), str(lay.public[2]),
                       "nodes.2.public_key", "cannot read (Permission denied)")


def test_a_bad_client_certificate_is_a_configuration_error(tmp_path: Path) -> None:
    lay = Layout(tmp_path)
    args = ["client", "--config", str(lay.config), "--cert", str(lay.cert), "status"]
    lay.cert.chmod(0o644)
    assert_start_error(zc(*args), str(lay.cert), "--cert", "group or others")
    lay.cert.chmod(0o000)
    preexec = _no_dac_override if os.geteuid() == 0 else None
    assert_start_error(zc(*args, preexec_fn=preexec), str(lay.cert), "--cert",
                       "cannot read (Permission denied)")
    # The environment variable names the same file, and the error says so.
    lay.cert.chmod(0o640)
    result = zc(*[a for a in args if a not in ("--cert", str(lay.cert))],
                env={"ZCOUNTER_CERT": str(lay.cert)})
    assert_start_error(result, str(lay.cert), "ZCOUNTER_CERT", "group or others")


# --------------------------------------------------------------------------- keygen


def test_keygen_writes_a_zmq_key_pair_with_safe_modes_and_never_overwrites_a_secret(
        tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "zcounter-keygen"
    assert script.exists(), f"{script}: the console script is not installed"
    # Default DIR: the current directory; a permissive umask changes nothing.
    done = subprocess.run(["sh", "-c", f"umask 000 && exec {script} alice"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    public, secret = tmp_path / "alice.key", tmp_path / "alice.key_secret"
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    # zmq's certificate format: both load with zmq.auth, and the halves match.
    pub_only, none = zmq.auth.load_certificate(public)
    pub, sec = zmq.auth.load_certificate(secret)
    assert none is None and sec is not None and pub == pub_only
    assert zmq.curve_public(sec) == pub
    # --dir, created if missing.
    done = zc("keygen", "bob", "--dir", str(tmp_path / "sub" / "dir"))
    assert done.returncode == 0 and (tmp_path / "sub" / "dir" / "bob.key_secret").exists()
    # Refuses to overwrite a secret: exit 1, the files untouched.
    before = secret.read_bytes(), public.read_bytes()
    again = subprocess.run([str(script), "alice"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=60, check=False)
    assert again.returncode == 1
    assert "refusing to overwrite" in one_line_error(again)
    assert (secret.read_bytes(), public.read_bytes()) == before


# --------------------------------------------------------------------------- faults


def test_kill_9_and_a_wiped_restart_in_curve_mode(secure: LocalCluster) -> None:
    with secure.client(2) as c:
        for _ in range(50):
            c.increment(key="faults")
    secure.kill(2)
    secure.start(2)
    assert secure.count(2, key="faults") >= 50
    secure.wait_converged(50, key="faults")
    old_slot = secure.status(1)["slot"]
    secure.kill(1)
    shutil.rmtree(secure.data_dir(1))
    secure.start(1)
    secure.wait_converged(50, key="faults")
    with secure.client(1) as c:
        assert c.status(1)["slot"] != old_slot
        for _ in range(5):
            c.increment(key="faults", wait="all")
    secure.wait_converged(55, key="faults")


def liveness(cluster: LocalCluster, observer: int, node: int) -> str:
    return str(cluster.status(observer)["peers"][str(node)]["liveness"])


def test_rotating_a_node_key_with_a_rolling_restart(secure: LocalCluster) -> None:
    """WRITEUP.md's procedure: a new key pair for node 1; its public key in the cluster
    file; restart node 1, then each other node.  Until a peer has restarted with the new
    file, it and node 1 cannot handshake (each refuses or cannot verify the other): a
    partition between them, with writes still taken everywhere, and convergence once the
    last node restarted."""
    assert secure.keys is not None
    with secure.client(1) as c:
        c.increment(10, key="rot", wait="all")
    new_public, new_secret = generate("node1-2", secure.keys.clients.parent)
    text = secure.config_path.read_text().replace("'keys/node1.key'", "'keys/node1-2.key'")
    secure.config_path.write_text(text)
    secure.keys = replace(secure.keys, nodes={**secure.keys.nodes, 1: (new_public, new_secret)})
    old_config = secure.config
    secure.config = load_config(secure.config_path)
    secure.kill(1, signal.SIGTERM)
    secure.start(1)
    # Node 1 (new key) and nodes 2, 3 (old file) cannot reach each other ...
    wait_for(lambda: liveness(secure, 1, 2) != "live" and liveness(secure, 1, 3) != "live",
             10.0, what="node 1 to be cut from nodes 2 and 3")
    # ... yet every node takes writes: clients of node 1 use the new file, clients of
    # nodes 2 and 3 the old one.
    with secure.client(1) as c:
        c.increment(1, key="rot")
    for node in (2, 3):
        with Client(node, config=old_config, cert=secure.cert) as c:
            c.increment(1, key="rot")
    # Node 2 finds node 1 silent one peer timeout after the old node 1's last message;
    # the writes above can take less than that (this asserted at once, and failed when
    # they did: node 2 logged "node 1 silent" ~0.1 s after the check).
    wait_for(lambda: liveness(secure, 2, 1) != "live", 10.0,
             what="node 2 to find node 1 silent")
    for node in (2, 3):
        secure.kill(node, signal.SIGTERM)
        secure.start(node)
    wait_for(lambda: all(liveness(secure, a, b) == "live" for a in secure.ids
                         for b in secure.ids if a != b), 15.0,
             what="every node to hear every other after the rolling restart")
    secure.wait_converged(13, key="rot")
