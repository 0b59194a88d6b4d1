"""TLS on the RESP door (issue 19), in process: the cluster file's fields, when a node in
``curve`` mode opens the door, the errors for unusable files, and the door's TLS sockets in
a real ``zmq.Poller`` loop with a real core (loopback only, every wait bounded).  Clients
run in a thread, since a TLS client's handshake blocks until the loop answers it.

The same against real node processes with redis-cli and redis-py:
tests/integration/test_resp_tls.py."""

from __future__ import annotations

import logging
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent.parent / "protocol"))
from resploop import DoorLoop
from tlscerts import Certs, make_certs

from zcounter.config import ClusterConfig, Mode, NodeAddress, Security, load_config
from zcounter.errors import ConfigError
from zcounter.runtime import respconn
from zcounter.runtime.resp import RespDoor, curve_refusal, make_door, tls_context

T = TypeVar("T")
DEADLINE_S = 10.0
PING = b"*1\r\n$4\r\nPING\r\n"


def config(resp_at: str = "tcp://127.0.0.1:0", mode: Mode = Mode.NONE,
           **security: object) -> ClusterConfig:
    nodes = {1: NodeAddress(1, "tcp://127.0.0.1:1", "tcp://127.0.0.1:2", resp=resp_at)}
    base = Security(mode, Path("/nonexistent"))
    return ClusterConfig(nodes, security=replace(base, **security), source="c.toml")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def tls_config(certs: Certs, **security: object) -> ClusterConfig:
    files: dict[str, object] = {"resp_tls_cert": certs.server_cert,
                                "resp_tls_key": certs.server_key}
    return config(**{**files, **security})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- cluster file


def write(tmp_path: Path, security: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text('[nodes.1]\nrouter = "tcp://127.0.0.1:1"\npub = "tcp://127.0.0.1:2"\n'
                    f'resp = "tcp://127.0.0.1:3"\n[security]\n{security}\n')
    return path


def test_tls_fields_are_read_relative_to_the_cluster_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'resp_tls_cert = "tls/node.crt"\nresp_tls_key = "tls/node.key"\n'
                           'resp_tls_ca = "/etc/ca.crt"\nresp_plaintext_loopback = true')
    security = load_config(path).security
    assert security.resp_tls_cert == tmp_path / "tls" / "node.crt"
    assert security.resp_tls_key == tmp_path / "tls" / "node.key"
    assert security.resp_tls_ca == Path("/etc/ca.crt")
    assert security.resp_plaintext_loopback and security.resp_tls


@pytest.mark.parametrize("fields,fragment", [
    ('resp_tls_cert = "a.crt"', "security.resp_tls_key is missing"),
    ('resp_tls_key = "a.key"', "security.resp_tls_cert is missing"),
    ('resp_tls_ca = "ca.crt"', "security.resp_tls_cert is missing"),
    ('resp_plaintext_loopback = "yes"', "security.resp_plaintext_loopback must be true or"),
    ('resp_tls_cert = ""\nresp_tls_key = "a.key"', "security.resp_tls_cert must be a path"),
])
def test_incomplete_tls_fields_name_the_file_and_the_field(tmp_path: Path, fields: str,
                                                          fragment: str) -> None:
    path = write(tmp_path, fields)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and fragment in str(info.value)


# --------------------------------------------------------------------------- curve mode


CURVE_CASES = [
    # (endpoint, security fields, password?, the field the refusal names or None: opens)
    ("tcp://127.0.0.1:0", {}, True, "resp_tls_cert"),
    ("tcp://127.0.0.1:0", {"resp_plaintext_loopback": True}, True, None),
    ("tcp://[::1]:0", {"resp_plaintext_loopback": True}, True, None),
    ("tcp://127.8.9.10:0", {"resp_plaintext_loopback": True}, True, None),
    ("tcp://10.0.0.1:0", {"resp_plaintext_loopback": True}, True, "resp_plaintext_loopback"),
    ("tcp://0.0.0.0:0", {"resp_plaintext_loopback": True}, True, "resp_plaintext_loopback"),
    ("tcp://localhost:0", {"resp_plaintext_loopback": True}, True, "resp_plaintext_loopback"),
    ("tcp://127.0.0.1:0", {"resp_plaintext_loopback": True}, False, "resp_password_file"),
    ("tcp://10.0.0.1:0", {"resp_tls_cert": Path("c"), "resp_tls_key": Path("k")}, True, None),
    ("tcp://10.0.0.1:0", {"resp_tls_cert": Path("c"), "resp_tls_key": Path("k")}, False,
     "resp_password_file"),
    ("tcp://10.0.0.1:0", {"resp_tls_cert": Path("c"), "resp_tls_key": Path("k"),
                          "resp_tls_ca": Path("ca")}, False, None),
]


@pytest.mark.parametrize("endpoint,fields,password,names", CURVE_CASES)
def test_curve_mode_opens_the_door_only_with_tls_or_on_loopback_by_choice(
        endpoint: str, fields: dict[str, object], password: bool, names: str | None) -> None:
    refusal = curve_refusal(config(endpoint, Mode.CURVE, **fields), endpoint, password)
    if names is None:
        assert refusal is None
    else:
        assert refusal is not None and f"security.{names}" in refusal, refusal
    # In none mode nothing is refused (CurveZMQ protects nothing there to bypass).
    assert curve_refusal(config(endpoint, Mode.NONE, **fields), endpoint, password) is None


@pytest.mark.tool("openssl")
def test_curve_mode_with_tls_and_client_certificates_opens_the_door(certs: Certs) -> None:
    door = make_door(tls_config(certs, mode=Mode.CURVE, resp_tls_ca=certs.ca), 1, "0")
    assert door is not None
    try:
        assert door.tls is not None and door.tls.verify_mode == ssl.CERT_REQUIRED
    finally:
        door.close()


def test_curve_mode_without_tls_logs_one_warning_naming_the_field(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "zcounter.node"):
        assert make_door(config(mode=Mode.CURVE), 1, "0") is None
    (record,) = caplog.records
    assert "RESP door tcp://127.0.0.1:0 is off" in record.message
    assert "security.resp_tls_cert" in record.message


# --------------------------------------------------------------------------- bad files


@pytest.mark.tool("openssl")
def test_unusable_tls_files_are_one_line_errors_naming_file_and_field(
        certs: Certs, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(["openssl", "pkey", "-in", certs.server_key, "-aes256", "-passout",
                    "pass:secret", "-out", encrypted], check=True, timeout=30)
    cases: list[tuple[dict[str, object], str]] = [
        ({"resp_tls_cert": missing}, f"security.resp_tls_cert: cannot read {missing}"),
        ({"resp_tls_key": missing}, f"security.resp_tls_key: cannot read {missing}"),
        ({"resp_tls_ca": missing}, f"security.resp_tls_ca: cannot read {missing}"),
        ({"resp_tls_key": certs.client_key}, "security.resp_tls_cert / resp_tls_key"),
        ({"resp_tls_cert": garbage}, "security.resp_tls_cert / resp_tls_key"),
        ({"resp_tls_key": encrypted}, f"security.resp_tls_key: {encrypted} is encrypted"),
        ({"resp_tls_ca": garbage}, f"security.resp_tls_ca: {garbage}"),
    ]
    for fields, fragment in cases:
        with pytest.raises(ConfigError) as info:
            tls_context(tls_config(certs, **fields))
        message = str(info.value)
        assert message.startswith("c.toml: ") and fragment in message, (fields, message)
        assert "\n" not in message


# --------------------------------------------------------------------------- the loop


class Loop(DoorLoop):
    """A TLS door in the reduced loop (tests/resploop.py)."""

    def __init__(self, cfg: ClusterConfig, handshake_s: float = 5.0) -> None:
        super().__init__(cfg, handshake_s=handshake_s)
        assert self.door.tls is not None

    def until(self, done: Callable[[], object], what: str, limit_s: float = DEADLINE_S) -> None:
        super().until(done, what, limit_s)


@pytest.fixture
def loop(certs: Certs) -> Iterator[Loop]:
    made = Loop(tls_config(certs), handshake_s=0.5)
    try:
        yield made
    finally:
        made.door.close()


def tls_client(port: int, certs: Certs) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=certs.ca)
    raw = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def recv_until(sock: socket.socket, want: bytes) -> bytes:
    got = b""
    while not got.endswith(want):
        chunk = sock.recv(65536)
        assert chunk, f"closed after {got!r}"
        got += chunk
    return got


@pytest.mark.tool("openssl")
def test_a_tls_client_is_served_in_the_loop(loop: Loop, certs: Certs) -> None:
    def talk() -> bytes:
        with tls_client(loop.port, certs) as sock:
            sock.sendall(b"*2\r\n$4\r\nINCR\r\n$1\r\na\r\n" * 3 + PING)
            got = recv_until(sock, b"+PONG\r\n")
            sock.sendall(b"*1\r\n$4\r\nQUIT\r\n")
            return got + recv_until(sock, b"+OK\r\n")
    assert loop.beside(talk) == b":1\r\n:2\r\n:3\r\n+PONG\r\n+OK\r\n"
    loop.until(lambda: not loop.door.conns, "QUIT to close the connection")
    assert loop.door.disconnects == {"quit": 1} and loop.door.tls_handshakes == 1


@pytest.mark.tool("openssl")
def test_bytes_openssl_holds_are_read_without_a_poll_event(
        loop: Loop, certs: Certs, monkeypatch: pytest.MonkeyPatch) -> None:
    # 256-byte reads: after four of them per cycle, the rest of a TLS record (up to
    # 16 KiB) is decrypted inside OpenSSL, the kernel buffer is empty and poll says
    # nothing more.  Without reading SSLSocket.pending() the commands below stall.
    monkeypatch.setattr(respconn, "READ_BYTES", 256)
    n = 300
    batch = b"*2\r\n$4\r\nINCR\r\n$1\r\nb\r\n" * n  # 7.5 KB: one TLS record

    def talk() -> bytes:
        with tls_client(loop.port, certs) as sock:
            sock.sendall(batch)
            return recv_until(sock, b":%d\r\n" % n)
    assert loop.beside(talk).count(b"\r\n") == n
    assert loop.core.keys.value("b", 0) == n
    assert loop.busy_cycles > 0  # the door kept the loop awake for what OpenSSL held


@pytest.mark.tool("openssl")
def test_a_plaintext_client_is_closed_and_others_are_served(
        loop: Loop, certs: Certs, caplog: pytest.LogCaptureFixture) -> None:
    def talk() -> bytes:
        with tls_client(loop.port, certs) as good:
            good.sendall(PING)
            assert recv_until(good, b"+PONG\r\n") == b"+PONG\r\n"
            got = b""
            for _ in range(20):
                with socket.create_connection(("127.0.0.1", loop.port),
                                              timeout=DEADLINE_S) as plain:
                    plain.sendall(PING)
                    try:
                        while chunk := plain.recv(65536):
                            got += chunk
                    except ConnectionResetError:
                        pass
            # The TLS connection made before the bad ones still works.
            good.sendall(PING)
            assert recv_until(good, b"+PONG\r\n") == b"+PONG\r\n"
            return got
    with caplog.at_level(logging.INFO, "zcounter.node"):
        assert b"PONG" not in loop.beside(talk)
    loop.until(lambda: len(loop.door.conns) <= 1, "the plaintext clients to be closed")
    assert loop.door.disconnects["tls_handshake_failed"] == 20
    # Logged once for the 20, not 20 times.
    failed = [r for r in caplog.records if "TLS handshake failed" in r.message]
    assert len(failed) == 1, [r.message for r in failed]


@pytest.mark.tool("openssl")
@pytest.mark.parametrize("sent", [b"", b"\x16\x03\x01\x02\x00\x01"], ids=["nothing", "a part"])
def test_a_half_open_handshake_is_closed_after_the_bound(loop: Loop, sent: bytes) -> None:
    with socket.create_connection(("127.0.0.1", loop.port), timeout=DEADLINE_S) as sock:
        sock.sendall(sent)
        start = time.monotonic()
        loop.until(lambda: loop.door.conns, "the accept")
        loop.until(lambda: not loop.door.conns, "the handshake to time out")
        waited = time.monotonic() - start
        assert sock.recv(100) == b""
    assert 0.5 <= waited < 2.0, waited
    assert loop.door.disconnects == {"tls_handshake_timeout": 1}
    assert not loop.door._handshakes


@pytest.mark.tool("openssl")
def test_large_replies_to_a_slow_reader_go_out_whole(
        loop: Loop, certs: Certs, monkeypatch: pytest.MonkeyPatch) -> None:
    # 4 KiB socket buffers on both sides make the door's SSL_write block
    # (SSLWantWriteError) again and again; a retry that did not repeat the same start
    # would be OpenSSL's "bad write retry" (closed as tls_error) or corrupt the stream.
    secure, send = RespDoor._secure, ssl.SSLSocket.send
    blocked = 0

    def small_buffer(door: RespDoor, sock: socket.socket, now: float) -> socket.socket | None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        return secure(door, sock, now)

    def counting_send(sock: ssl.SSLSocket, data: bytes, flags: int = 0) -> int:
        nonlocal blocked
        try:
            return send(sock, data, flags)
        except ssl.SSLWantWriteError:
            blocked += 1
            raise
    monkeypatch.setattr(RespDoor, "_secure", small_buffer)
    monkeypatch.setattr(ssl.SSLSocket, "send", counting_send)
    payloads = [bytes([65 + i]) * 65536 for i in range(10)]
    request = b"".join(b"*2\r\n$4\r\nECHO\r\n$65536\r\n%s\r\n" % p for p in payloads)
    want = b"".join(b"$65536\r\n%s\r\n" % p for p in payloads)

    def talk() -> bytes:
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.settimeout(DEADLINE_S)
        raw.connect(("127.0.0.1", loop.port))
        context = ssl.create_default_context(cafile=certs.ca)
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(request)
            got = b""
            while len(got) < len(want):
                chunk = sock.recv(4096)
                assert chunk, f"closed after {len(got)} bytes"
                got += chunk
            return got
    assert loop.beside(talk) == want
    assert "tls_error" not in loop.door.disconnects
    assert blocked > 10, blocked  # the door did meet a full socket, many times


def client_hello(certs: Certs) -> bytes:
    """A real ClientHello (Python's, for TLS 1.2 and 1.3), made in memory."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context(cafile=certs.ca).wrap_bio(
        incoming, outgoing, server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@pytest.mark.tool("openssl")
def test_fuzzed_handshakes_close_only_their_connection(certs: Certs) -> None:
    """Raw bytes, and a real ClientHello with bytes changed, cut or appended, then the
    client closes its side or goes silent: every such connection ends closed and counted,
    nothing escapes the door, and a real TLS client is served afterwards."""
    loop = Loop(tls_config(certs), handshake_s=0.1)
    hello = client_hello(certs)
    mutated = st.builds(
        lambda edits, cut, tail: bytes(_edit(hello, edits))[:cut] + tail,
        st.lists(st.tuples(st.integers(0, len(hello) - 1), st.integers(0, 255)),
                 max_size=8),
        st.integers(0, len(hello)), st.binary(max_size=64))

    @settings(max_examples=40, deadline=None)
    @given(data=st.one_of(st.binary(max_size=512), mutated), close=st.booleans())
    def one(data: bytes, close: bool) -> None:
        with socket.create_connection(("127.0.0.1", loop.port), timeout=DEADLINE_S) as sock:
            sock.sendall(data)
            if close:
                sock.shutdown(socket.SHUT_WR)
            loop.until(lambda: loop.door.conns, "the accept")
            loop.until(lambda: not loop.door.conns, "the connection to be closed")
        assert not loop.door._handshakes and not loop.door._unread

    try:
        one()
        failed = sum(n for reason, n in loop.door.disconnects.items()
                     if reason.startswith("tls_handshake"))
        assert failed == sum(loop.door.disconnects.values()) > 0

        def talk() -> bytes:
            with tls_client(loop.port, certs) as sock:
                sock.sendall(PING)
                return recv_until(sock, b"+PONG\r\n")
        assert loop.beside(talk) == b"+PONG\r\n"
    finally:
        loop.door.close()


def _edit(data: bytes, edits: list[tuple[int, int]]) -> bytearray:
    out = bytearray(data)
    for at, value in edits:
        out[at] = value
    return out
