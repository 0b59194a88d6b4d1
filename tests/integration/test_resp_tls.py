"""TLS on the Redis-protocol door (issue 19) with real clients nobody here wrote -
``redis-cli --tls`` and redis-py ``ssl=True`` - against real node processes on loopback,
with certificates made at test time by the ``openssl`` command (tests/tlscerts.py).

What is proven: TLS clients count and replicate; with ``resp_tls_ca`` a client without a
certificate, or with one from another CA, is refused at the handshake and one with a good
certificate is served; a plaintext client, a half-open handshake and a client that stops
mid-handshake cost only their own connection (closed, counted in
``zcounter_resp_disconnects``), while a TLS client on another connection keeps its answers
within 1 s; in ``curve`` mode the door opens with TLS and stays shut without it; unusable
certificate files stop the node at start with one line naming the file and the field."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from harness import FAST_SETTINGS, LocalCluster, running_cluster, wait_for
from prometheus_client.parser import text_string_to_metric_families
from tlscerts import Certs, make_certs

pytestmark = [pytest.mark.integration, pytest.mark.tool("openssl")]

#: Every wait on a client, a process or a condition is bounded by this.
DEADLINE_S = 30.0
#: The handshake bound the test clusters run with (``resp_tls_handshake_timeout_s``).
HANDSHAKE_S = 1.0
#: A well-behaved client must get each answer within this while others misbehave.
ANSWER_S = 1.0
PING = b"*1\r\n$4\r\nPING\r\n"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def tls_fields(certs: Certs, **more: str) -> dict[str, str]:
    return {"resp_tls_cert": str(certs.server_cert), "resp_tls_key": str(certs.server_key),
            **more}


@pytest.fixture(scope="module")
def tc(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[LocalCluster]:
    """Two nodes whose RESP doors speak TLS only (shared: tests use distinct keys)."""
    with running_cluster(tmp_path_factory.mktemp("tls") / "cluster", n=2, resp=True,
                         metrics=True, security=tls_fields(certs),
                         settings={**FAST_SETTINGS,
                                   "resp_tls_handshake_timeout_s": HANDSHAKE_S}) as c:
        yield c


def tls_client(c: LocalCluster, certs: Certs, node: int = 1, **kw: Any) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=c.resp_port(node), protocol=2, ssl=True,
                       ssl_ca_certs=str(certs.ca), socket_timeout=DEADLINE_S, **kw)


def disconnects(c: LocalCluster, node: int) -> dict[str, float]:
    """``zcounter_resp_disconnects_total`` by reason, from the node's /metrics."""
    with urllib.request.urlopen(c.metrics_url(node), timeout=10) as reply:
        text = reply.read().decode()
    return {sample.labels["reason"]: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == "zcounter_resp_disconnects_total"}


def redis_cli(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True,
                          text=True, timeout=DEADLINE_S, check=False)


def timed_ping(r: redis.Redis) -> float:
    start = time.monotonic()
    assert r.ping() is True
    return time.monotonic() - start


# --------------------------------------------------------------------------- clients


@pytest.mark.tool("redis-cli")
def test_redis_cli_over_tls_pings_and_counts(tc: LocalCluster, certs: Certs) -> None:
    port = tc.resp_port(1)
    tls = ("--tls", "--cacert", str(certs.ca))
    assert redis_cli(port, *tls, "PING").stdout.strip() == "PONG"
    assert redis_cli(port, *tls, "INCR", "cli:tls").stdout.strip() == "1"
    assert redis_cli(port, *tls, "INCRBY", "cli:tls", "41").stdout.strip() == "42"
    # Without --tls, redis-cli's plaintext PING is not answered: the door is TLS only.
    plain = redis_cli(port, "PING")
    assert "PONG" not in plain.stdout
    with tls_client(tc, certs, 2) as r:
        wait_for(lambda: r.get("cli:tls") == b"42", DEADLINE_S, what="the count on node 2")


def test_redis_py_over_tls_counts_and_replicates(tc: LocalCluster, certs: Certs) -> None:
    with tls_client(tc, certs, 1) as r:
        assert r.ping() is True
        assert r.incrby("py:tls", 5) == 5
        pipe = r.pipeline(transaction=False)
        for _ in range(1000):
            pipe.incr("py:tls")
        assert pipe.execute()[-1] == 1005
    with tls_client(tc, certs, 2) as r:
        wait_for(lambda: r.get("py:tls") == b"1005", DEADLINE_S, what="the count on node 2")
    # The native protocol sees the same count.
    assert tc.count(2, "py:tls") == 1005


def test_a_plaintext_client_is_closed_without_harming_the_node(
        tc: LocalCluster, certs: Certs) -> None:
    before = disconnects(tc, 1).get("tls_handshake_failed", 0)
    with tls_client(tc, certs, 1) as good:
        assert good.incr("plain:k") == 1
        for _ in range(50):
            with socket.create_connection(("127.0.0.1", tc.resp_port(1)),
                                          timeout=DEADLINE_S) as plain:
                plain.sendall(PING + b"*2\r\n$4\r\nINCR\r\n$7\r\nplain:k\r\n")
                got = b""
                try:
                    while chunk := plain.recv(65536):
                        got += chunk
                except ConnectionResetError:
                    pass
                assert b"+PONG" not in got and b":1\r\n" not in got, got
            assert timed_ping(good) < ANSWER_S
        # The connection opened before the bad ones is still served, and nothing the
        # plaintext clients sent ran as a command.
        assert good.get("plain:k") == b"1"
    wait_for(lambda: disconnects(tc, 1).get("tls_handshake_failed", 0) >= before + 50,
             DEADLINE_S, what="50 failed handshakes counted")
    log = tc.log_path(1).read_text()
    # Logged once per cause per 10 s, not 50 times.
    assert log.count("TLS handshake failed") <= 2, log[-3000:]


@pytest.mark.parametrize("sent", [b"", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"],
                         ids=["silent", "half a ClientHello"])
def test_a_half_open_handshake_is_closed_after_the_bound(
        tc: LocalCluster, certs: Certs, sent: bytes) -> None:
    before = disconnects(tc, 2).get("tls_handshake_timeout", 0)
    with tls_client(tc, certs, 2) as good, \
            socket.create_connection(("127.0.0.1", tc.resp_port(2)), timeout=DEADLINE_S) as s:
        s.sendall(sent)
        start = time.monotonic()
        s.settimeout(0.1)
        while True:  # answers to the good client while the bad one hangs
            assert timed_ping(good) < ANSWER_S
            try:
                assert s.recv(100) == b""
                break
            except TimeoutError:
                assert time.monotonic() - start < DEADLINE_S, "never closed"
        waited = time.monotonic() - start
    # The loop checks deadlines at least every 0.1 s (runtime/loop.py MAX_POLL_S).
    assert HANDSHAKE_S - 0.1 <= waited < HANDSHAKE_S + 1.0, waited
    wait_for(lambda: disconnects(tc, 2).get("tls_handshake_timeout", 0) == before + 1,
             DEADLINE_S, what="the timeout counted")


def test_many_half_open_handshakes_cost_only_their_connections(
        tc: LocalCluster, certs: Certs) -> None:
    n = 200
    socks = []
    try:
        with tls_client(tc, certs, 1) as good:
            for _ in range(n):
                socks.append(socket.create_connection(("127.0.0.1", tc.resp_port(1)),
                                                      timeout=DEADLINE_S))
                socks[-1].sendall(b"\x16\x03\x01")
            worst = max(timed_ping(good) for _ in range(20))
            assert worst < ANSWER_S, worst
            for s in socks:
                s.settimeout(DEADLINE_S)
                with contextlib.suppress(ConnectionResetError):
                    assert s.recv(100) == b""
            assert good.incr("halfopen:k") == 1
    finally:
        for s in socks:
            s.close()


# --------------------------------------------------------------------------- client certs


@pytest.mark.tool("redis-cli")
def test_client_certificates_are_required_when_a_ca_is_set(tmp_path: Path,
                                                           certs: Certs) -> None:
    with running_cluster(tmp_path / "c", n=1, resp=True, metrics=True,
                         security=tls_fields(certs, resp_tls_ca=str(certs.ca))) as c:
        # Without a client certificate, or with one from another CA: the handshake fails
        # (TLS 1.3: the client learns it at its first read).
        for cert in (None, (certs.stranger_cert, certs.stranger_key)):
            kw = {} if cert is None else {"ssl_certfile": str(cert[0]),
                                          "ssl_keyfile": str(cert[1])}
            with pytest.raises(redis.ConnectionError):
                tls_client(c, certs, 1, **kw).ping()
        with tls_client(c, certs, 1, ssl_certfile=str(certs.client_cert),
                        ssl_keyfile=str(certs.client_key)) as r:
            assert r.incr("cert:k") == 1
        tls = ("--tls", "--cacert", str(certs.ca))
        denied = redis_cli(c.resp_port(1), *tls, "INCR", "cert:k")
        assert denied.stdout.strip() != "2"
        ok = redis_cli(c.resp_port(1), *tls, "--cert", str(certs.client_cert), "--key",
                       str(certs.client_key), "INCR", "cert:k")
        assert ok.stdout.strip() == "2", ok
        wait_for(lambda: disconnects(c, 1).get("tls_handshake_failed", 0) >= 3, DEADLINE_S,
                 what="three refused handshakes counted")


# --------------------------------------------------------------------------- curve mode


@pytest.mark.tool("redis-cli")
def test_curve_mode_serves_the_door_over_tls(tmp_path: Path, certs: Certs) -> None:
    secret = tmp_path / "resp.password"
    secret.write_text("hunter2\n")
    with running_cluster(tmp_path / "c", n=1, resp=True, secure=True,
                         security=tls_fields(certs, resp_password_file=str(secret))) as c:
        tls = ("--tls", "--cacert", str(certs.ca), "--no-auth-warning")
        ok = redis_cli(c.resp_port(1), *tls, "-a", "hunter2", "INCR", "curve:k")
        assert ok.stdout.strip() == "1", ok
        assert redis_cli(c.resp_port(1), *tls, "INCR", "curve:k").stdout.strip() == (
            "NOAUTH Authentication required.")
        assert c.count(1, "curve:k") == 1


def test_curve_mode_without_tls_keeps_the_door_shut(tmp_path: Path) -> None:
    secret = tmp_path / "resp.password"
    secret.write_text("hunter2\n")
    with running_cluster(tmp_path / "c", n=1, resp=True, secure=True,
                         security={"resp_password_file": str(secret)}) as c:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", c.resp_port(1)), timeout=DEADLINE_S)
        log = c.log_path(1).read_text()
        warnings = [line for line in log.splitlines() if "RESP door" in line]
        assert len(warnings) == 1 and "security.resp_tls_cert" in warnings[0], warnings


# --------------------------------------------------------------------------- start-up


def test_an_unreadable_certificate_stops_the_node_with_one_line(tmp_path: Path,
                                                                certs: Certs) -> None:
    missing = tmp_path / "gone.crt"
    cluster = LocalCluster(tmp_path / "c", n=1, resp=True,
                           security={"resp_tls_cert": str(missing),
                                     "resp_tls_key": str(certs.server_key)})
    done = subprocess.run(cluster.command(1), capture_output=True, text=True,
                          timeout=DEADLINE_S, check=False)
    assert done.returncode == 2, done.stderr
    # (Log lines of the start before it are INFO lines; the error is one line.)
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error: ")]
    assert f"security.resp_tls_cert: cannot read {missing}" in line
    assert str(cluster.config_path) in line
