"""The RESP door's runtime (zcounter.runtime.resp) in process: when a node opens it, and
its sockets in a real zmq.Poller with a real core (loopback only, bounded waits)."""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "protocol"))
from resploop import DoorLoop

from zcounter.config import ClusterConfig, Mode, NodeAddress, Security
from zcounter.errors import ConfigError
from zcounter.runtime.resp import make_door


def config(resp: str | None = "tcp://127.0.0.1:0", mode: Mode = Mode.NONE,
           password: Path | None = None) -> ClusterConfig:
    nodes = {1: NodeAddress(1, "tcp://127.0.0.1:1", "tcp://127.0.0.1:2", resp=resp)}
    return ClusterConfig(nodes, security=Security(mode, Path("/nonexistent"), password))


def test_no_resp_endpoint_no_door() -> None:
    assert make_door(config(resp=None), 1, "0") is None


def test_curve_mode_without_a_password_file_keeps_the_door_shut(
        caplog: pytest.LogCaptureFixture) -> None:
    plain = replace(config(mode=Mode.CURVE).security, resp_plaintext_loopback=True)
    with caplog.at_level(logging.WARNING, "zcounter.node"):
        assert make_door(replace(config(), security=plain), 1, "0") is None
    assert "RESP door" in caplog.text and "resp_password_file" in caplog.text


def test_a_password_file_opens_it_and_requires_auth(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\nignored\n")
    curve = config(mode=Mode.CURVE, password=secret)
    curve = replace(curve, security=replace(curve.security, resp_plaintext_loopback=True))
    door = make_door(curve, 1, "0")
    assert door is not None
    try:
        assert door.door.password == b"s3cret"
    finally:
        door.close()


def test_an_unreadable_or_empty_password_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        make_door(config(password=tmp_path / "missing"), 1, "0")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        make_door(config(password=tmp_path / "empty"), 1, "0")


class Loop(DoorLoop):
    def __init__(self, stall_s: float = 10.0) -> None:
        super().__init__(config(), stall_s=stall_s)


def recv_until(sock: socket.socket, loop: Loop, want: bytes) -> bytes:
    got = b""
    sock.setblocking(False)
    deadline = time.monotonic() + 10
    while not got.endswith(want):
        assert time.monotonic() < deadline, f"got {got!r}"
        loop.cycle()
        with contextlib.suppress(BlockingIOError):
            got += sock.recv(65536)
    return got


def test_pipelined_commands_over_a_real_socket() -> None:
    loop = Loop()
    try:
        with socket.create_connection(("127.0.0.1", loop.port), timeout=5) as sock:
            sock.sendall(b"*2\r\n$4\r\nINCR\r\n$1\r\na\r\n" * 3 + b"*1\r\n$4\r\nPING\r\n")
            assert recv_until(sock, loop, b"+PONG\r\n") == b":1\r\n:2\r\n:3\r\n+PONG\r\n"
            sock.sendall(b"*1\r\n$4\r\nQUIT\r\n")
            assert recv_until(sock, loop, b"+OK\r\n") == b"+OK\r\n"
            loop.until(lambda: not loop.door.conns, "QUIT to close the connection")
        assert loop.door.disconnects == {"quit": 1}
    finally:
        loop.close()


def test_reading_pauses_while_many_requests_are_queued_and_resumes() -> None:
    """DELs of 1,000 keys pipelined as fast as the socket takes them: the requests the
    session queues stay near RESP_MAX_QUEUED_REQUESTS (before issue 20 they reached
    1,025,024 for 1,024 such DELs), and every DEL is answered."""
    from zcounter.limits import RESP_MAX_QUEUED_REQUESTS
    loop = Loop()
    try:
        with socket.create_connection(("127.0.0.1", loop.port), timeout=5) as sock:
            dels = b"".join(
                b"*1001\r\n$3\r\nDEL\r\n" + b"".join(b"$5\r\nk%04d\r\n" % i
                                                    for i in range(1000))
                for _ in range(64))
            sock.setblocking(False)
            sent, got, most = 0, b"", 0
            deadline = time.monotonic() + 30
            while got.count(b":0\r\n") < 64:
                assert time.monotonic() < deadline, f"{got.count(b':0')} of 64 answered"
                if sent < len(dels):
                    with contextlib.suppress(BlockingIOError):
                        sent += sock.send(dels[sent:sent + 65536])
                loop.cycle(0)
                for conn in loop.door.conns.values():
                    most = max(most, len(conn.session.requests))
                with contextlib.suppress(BlockingIOError):
                    got += sock.recv(65536)
            assert got == b":0\r\n" * 64
            assert RESP_MAX_QUEUED_REQUESTS <= most <= RESP_MAX_QUEUED_REQUESTS + 9000
    finally:
        loop.close()


def test_a_stalled_reader_is_dropped_and_reading_pauses_first() -> None:
    loop = Loop(stall_s=0.3)
    try:
        sock = socket.create_connection(("127.0.0.1", loop.port), timeout=5)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        echo = b"*2\r\n$4\r\nECHO\r\n$65536\r\n" + b"x" * 65536 + b"\r\n"
        sock.settimeout(0.05)
        paused = False
        for _ in range(400):  # bounded: 26 MB at most
            try:
                sock.sendall(echo)
            except TimeoutError:
                paused = True
                break
            finally:
                loop.cycle(0)
        assert paused, "the door never stopped reading"
        (conn,) = loop.door.conns.values()
        assert not conn.reading and conn.pending > 0
        loop.until(lambda: not loop.door.conns, "the stalled client to be dropped")
        assert loop.door.disconnects == {"stalled": 1}
        sock.close()
    finally:
        loop.close()


def test_a_client_gone_mid_command_is_forgotten() -> None:
    loop = Loop()
    try:
        with socket.create_connection(("127.0.0.1", loop.port), timeout=5) as sock:
            sock.sendall(b"*2\r\n$4\r\nINCR\r\n$1\r\na\r\n*2\r\n$4\r\nINC")
            loop.until(lambda: loop.door.door.commands_processed == 1, "the first command")
        loop.until(lambda: not loop.door.conns, "the connection to be forgotten")
        assert loop.core.keys.value("a", 0) == 1
        # EOF, or a reset if our reply to the INCR reached a closed socket.
        assert loop.door.disconnects in ({"closed": 1}, {"reset": 1})
    finally:
        loop.close()


def test_wrong_passwords_are_answered_ever_later_then_the_connection_closes(
        tmp_path: Path) -> None:
    """Guessing is slowed: after the Nth wrong password the connection is neither read nor
    written for RESP_AUTH_FAILURE_DELAY_S * 2**(N-1); the 4th is answered, then closed."""
    from zcounter.limits import RESP_AUTH_FAILURE_DELAY_S as delay

    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    loop = DoorLoop(config(password=secret))
    wrong = b"*2\r\n$4\r\nAUTH\r\n$5\r\nguess\r\n"
    try:
        with socket.create_connection(("127.0.0.1", loop.port), timeout=5) as sock:
            took = []
            for _ in range(3):
                started = time.monotonic()
                sock.sendall(wrong)
                assert recv_until(sock, loop, b"\r\n").startswith(b"-WRONGPASS")
                took.append(time.monotonic() - started)
            for n, seconds in enumerate(took):
                assert seconds >= delay * 2 ** n, took
            # The right password still works on this connection, once the delay is over.
            sock.sendall(b"*2\r\n$4\r\nAUTH\r\n$6\r\ns3cret\r\n")
            assert recv_until(sock, loop, b"+OK\r\n") == b"+OK\r\n"
        with socket.create_connection(("127.0.0.1", loop.port), timeout=5) as sock:
            started = time.monotonic()
            sock.sendall(wrong * 4)  # pipelined: all four answered, after the longest delay
            assert recv_until(sock, loop, b"\r\n" * 1).count(b"-WRONGPASS") >= 1
            loop.until(lambda: len(loop.door.conns) == 0, "the 4th failure to close it")
            assert time.monotonic() - started >= delay * 2 ** 3
    finally:
        loop.close()
