"""The Redis-protocol door with real Redis clients nobody here wrote: redis-py (its own
suite: commands, pipelines, WAIT, errors as ``redis.ResponseError``), ``redis-cli``
(interactive, through a pseudo-terminal, and ``--pipe``) and ``redis-benchmark``, all
against real node processes on loopback.

The door speaks RESP2.  The clients here say ``protocol=2``, as README.md advises (it
saves redis-py 8.2+ a refused ``HELLO 3`` and a warning per connection, and redis-py 8.0
and 8.1 need it); one test uses a default ``redis.Redis()`` as a user would."""

from __future__ import annotations

import os
import re
import select
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from harness import FAST_SETTINGS, LocalCluster, running_cluster, wait_for

pytestmark = pytest.mark.integration

#: Every wait on a client, a process or a condition is bounded by this.
DEADLINE_S = 30.0


@pytest.fixture(scope="module")
def rc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three nodes with a RESP door each (shared by the module's tests: they use
    distinct keys)."""
    with running_cluster(tmp_path_factory.mktemp("resp") / "cluster", resp=True) as c:
        yield c


def client(c: LocalCluster, node: int = 1, **kw: Any) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=c.resp_port(node), protocol=2,
                       socket_timeout=DEADLINE_S, **kw)


def converged(c: LocalCluster, keys: list[str], want: dict[str, int | None]) -> None:
    """Wait until every node reads ``want`` for ``keys`` through its own door."""
    def same() -> bool:
        for node in c.ids:
            with client(c, node) as r:
                got = [None if v is None else int(v) for v in r.mget(keys)]
            if got != [want[k] for k in keys]:
                return False
        return True
    wait_for(same, DEADLINE_S, interval=0.05, what=f"{keys} to converge on {want}")


# --------------------------------------------------------------------------- redis-py


def test_redis_py_counters_and_keyspace(rc: LocalCluster) -> None:
    with client(rc, 1) as r:
        assert r.ping() is True
        assert r.incr("py:a") == 1
        assert r.incrby("py:a", 41) == 42
        assert r.decr("py:a") == 41
        assert r.decrby("py:a", 1) == 40
        assert r.incr("py:b", -3) == -3
        assert r.get("py:a") == b"40" and r.get("py:none") is None
        assert r.mget("py:a", "py:none", "py:b") == [b"40", None, b"-3"]
        assert r.exists("py:a", "py:b", "py:none") == 2
        assert r.echo("hi") == b"hi"
        assert r.execute_command("SELECT", 0) in (b"OK", True)
        r.client_setname("suite")
        assert r.client_getname() in ("suite", b"suite")  # decoded by redis-py 5+
        assert r.dbsize() >= 2
        assert sorted(r.keys("py:*")) == [b"py:a", b"py:b"]
        assert sorted(r.scan_iter(match="py:*", count=1)) == [b"py:a", b"py:b"]
        # Right after start a peer may not have been heard yet.
        info = wait_for(lambda: (i if (i := r.info())["connected_slaves"] == 2 else None),
                        DEADLINE_S, what="both peers heard")
        assert info["role"] == "master"
        assert info["redis_version"] == "7.0.0" and info["zcounter_node"] == 1
        assert info["db0"]["keys"] >= 2
        assert r.delete("py:a", "py:none") == 1
        assert r.get("py:a") is None and r.exists("py:a") == 0
        assert r.incr("py:a") == 1  # usable again at once
    converged(rc, ["py:a", "py:b"], {"py:a": 1, "py:b": -3})


def test_redis_py_pipelines_keep_order_and_count_once(rc: LocalCluster) -> None:
    keys = [f"pipe:{i % 50}" for i in range(2000)]
    with client(rc, 2) as r:
        pipe = r.pipeline(transaction=False)
        for key in keys:
            pipe.incr(key)
        pipe.get("pipe:0")
        pipe.incrby("pipe:0", "x")  # an error in the middle does not stop the rest
        pipe.ping()
        results = pipe.execute(raise_on_error=False)
    seen: dict[str, int] = {}
    for key, value in zip(keys, results, strict=False):
        seen[key] = seen.get(key, 0) + 1
        assert value == seen[key]
    assert results[2000] == b"40"
    assert isinstance(results[2001], redis.ResponseError)
    assert results[2002] is True
    converged(rc, sorted(seen), dict.fromkeys(seen, 40))


def test_redis_py_errors_are_response_errors_with_redis_texts(rc: LocalCluster) -> None:
    with client(rc, 1) as r:
        cases = [
            (lambda: r.incrby("err:k", "abc"), "value is not an integer or out of range"),
            (lambda: r.incrby("err:k", 2**40), "value is not an integer or out of range"),
            (lambda: r.execute_command("DECRBY", "err:k", -(2**63)),
             "decrement would overflow"),
            (lambda: r.execute_command("NOSUCH", "a"),
             "unknown command 'NOSUCH', with args beginning with: 'a' "),
            (lambda: r.execute_command("GET"), "wrong number of arguments for 'get' command"),
            (lambda: r.execute_command("SELECT", 3), "DB index is out of range"),
            (lambda: r.execute_command("SCAN", "nope"), "invalid cursor"),
            (lambda: r.execute_command("WAIT", 1, -5), "timeout is negative"),
            (lambda: r.incr("x" * 300), "invalid key"),
        ]
        for call, text in cases:
            with pytest.raises(redis.ResponseError) as err:
                call()
            assert text in str(err.value)
        assert r.get("err:k") is None  # nothing was applied
        with pytest.raises(redis.ResponseError, match="NOPROTO"):
            r.execute_command("HELLO", 3)


def test_hello_3_is_refused_with_noproto_on_the_wire(rc: LocalCluster) -> None:
    """The door speaks RESP2: ``HELLO 3`` gets Redis's own answer for a version it does not
    speak, on which clients fall back to RESP2.  Sent as raw bytes, so what is checked is
    the door's answer, not what any client library does with it."""
    with socket.create_connection(("127.0.0.1", rc.resp_port(1)), timeout=DEADLINE_S) as s:
        s.sendall(b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n*1\r\n$4\r\nPING\r\n")
        got = b""
        while not got.endswith(b"+PONG\r\n"):
            chunk = s.recv(4096)
            assert chunk, f"connection closed after {got!r}"
            got += chunk
    assert got == b"-NOPROTO unsupported protocol version\r\n+PONG\r\n"


def test_a_default_redis_py_client_works(rc: LocalCluster) -> None:
    """``redis.Redis(port=...)`` as a user writes it, without ``protocol=2``: whatever
    version CI pins (requirements/ci.txt), counters, pipelines and errors work."""
    r = redis.Redis(host="127.0.0.1", port=rc.resp_port(1), socket_timeout=DEADLINE_S)
    try:
        assert r.ping() is True
        assert r.incr("default-client:k") == 1
        assert r.incrby("default-client:k", 4) == 5
        pipe = r.pipeline(transaction=False)
        for _ in range(16):
            pipe.incr("default-client:p")
        assert pipe.execute() == list(range(1, 17))
        assert r.get("default-client:k") == b"5"
        with pytest.raises(redis.ResponseError, match="not an integer"):
            r.incrby("default-client:k", "x")  # type: ignore[arg-type]
    finally:
        r.close()


def test_wait_counts_the_peers_that_hold_this_connections_writes(rc: LocalCluster) -> None:
    with client(rc, 1) as r:
        r.incr("wait:a")
        r.incrby("wait:b", 5)
        started = time.monotonic()
        assert r.wait(2, 5000) == 2
        assert time.monotonic() - started < 5.0
        assert r.wait(2, 100) == 2  # nothing new: answered at once
        # Pipelined: the write and its WAIT in one round trip.
        pipe = r.pipeline(transaction=False)
        pipe.incr("wait:a")
        pipe.execute_command("WAIT", 1, 5000)
        # At least the one asked for (WAIT answers what it knows, as Redis's does).
        written, peers = pipe.execute()
        assert written == 2 and peers >= 1
    for node in (2, 3):  # WAIT 2 said so: both peers hold it already
        with client(rc, node) as other:
            assert other.get("wait:b") == b"5"


def test_wait_times_out_with_the_count_reached_when_a_peer_is_paused(tmp_path: Path) -> None:
    with running_cluster(tmp_path / "c", resp=True) as c, client(c, 1) as r:
        c.pause(3)
        try:
            r.incr("k")
            started = time.monotonic()
            assert r.wait(2, 500) == 1  # node 2 holds it; node 3 cannot answer
            assert 0.45 <= time.monotonic() - started < 5.0
            assert r.wait(1, 500) == 1
        finally:
            c.resume(3)
        assert r.wait(2, 10_000) == 2  # and once it is back


def test_zc_incrby_is_exactly_once_across_nodes(rc: LocalCluster) -> None:
    with client(rc, 1) as one, client(rc, 3) as three:
        assert one.execute_command("ZC.INCRBY", "once:k", 7, "order-17") == 7
        # The client's retry goes to another node (the first answer was lost, say).
        wait_for(lambda: three.get("once:k") == b"7", DEADLINE_S, what="replication")
        assert three.execute_command("ZC.INCRBY", "once:k", 7, "order-17") == 7
        assert one.incr("once:k") == 8
        with pytest.raises(redis.ResponseError, match="already used for key 'once:k'"):
            three.execute_command("ZC.INCRBY", "once:other", 1, "order-17")
        assert one.execute_command("ZC.DEL", "once:k", "del-1") == 1
        # A retry elsewhere counts once when replication has carried the id there first
        # (the limit of --request-id, WRITEUP.md section 5.4): the reset's delta does.
        wait_for(lambda: three.get("once:k") is None, DEADLINE_S, what="the reset at node 3")
        assert three.execute_command("ZC.DEL", "once:k", "del-1") == 0
    converged(rc, ["once:k"], {"once:k": None})


def test_del_at_one_node_and_an_increment_at_another_converge(rc: LocalCluster) -> None:
    """DEL at node 2, INCR at node 3 right after: whether or not node 3 had heard the
    reset, its increment was not observed by it, so it survives - every node ends at 1.
    (The sans-IO suite cuts a link to make the increment certainly concurrent.)"""
    with client(rc, 1) as one, client(rc, 2) as two, client(rc, 3) as three:
        one.incrby("d", 10)
        converged(rc, ["d"], {"d": 10})
        assert two.delete("d") == 1
        assert three.incr("d") in (1, 11)
    converged(rc, ["d"], {"d": 1})


# --------------------------------------------------------------------------- connections


def test_a_client_that_stops_reading_is_disconnected(tmp_path: Path) -> None:
    settings = {**FAST_SETTINGS, "resp_stall_timeout_s": 1.0}
    with running_cluster(tmp_path / "c", settings=settings, resp=True) as c:
        sock = socket.create_connection(("127.0.0.1", c.resp_port(1)), timeout=DEADLINE_S)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # Whole commands only (sendall): a half-sent one would be a protocol error.
        sock.settimeout(1.0)
        payload = b"*2\r\n$4\r\nECHO\r\n$65536\r\n" + b"x" * 65536 + b"\r\n"
        sent = 0
        try:
            while sent < 1000:  # 64 MB at most; we never read a reply
                sock.sendall(payload)
                sent += 1
        except TimeoutError:
            pass  # the node stopped reading us: backpressure
        except (BrokenPipeError, ConnectionResetError):
            pass  # ... and then let us go
        assert sent < 1000, "the node kept reading a client that reads nothing"
        with client(c, 1) as r:
            wait_for(lambda: r.info("clients")["connected_clients"] == 1, DEADLINE_S,
                     what="the stalled client to be disconnected")
            assert r.ping()
        sock.close()
        log = c.log_path(1).read_text()
        assert "read nothing for" in log and "Protocol error" not in log


def test_a_client_gone_mid_command_is_forgotten(rc: LocalCluster) -> None:
    for partial in (b"*3\r\n$6\r\nINCRBY\r\n$3\r\nmid", b"*2\r\n$4\r\nIN",
                    b"*2\r\n$4\r\nINCR\r\n$3\r\nmid\r\n*2\r\n$3\r\nGET"):
        with socket.create_connection(("127.0.0.1", rc.resp_port(2)), timeout=5) as sock:
            sock.sendall(partial)
    with client(rc, 2) as r:
        wait_for(lambda: r.info("clients")["connected_clients"] == 1, DEADLINE_S,
                 what="the half-sent clients to be forgotten")
        # Only the one complete command counted (its answer went nowhere).
        assert r.get("mid") == b"1"


def test_replies_to_a_half_closed_client_are_still_sent(rc: LocalCluster) -> None:
    with socket.create_connection(("127.0.0.1", rc.resp_port(1)), timeout=DEADLINE_S) as sock:
        sock.sendall(b"*2\r\n$4\r\nINCR\r\n$4\r\nhalf\r\n*1\r\n$4\r\nPING\r\n")
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data == b":1\r\n+PONG\r\n"


# --------------------------------------------------------------------------- redis-cli


class Cli:
    """An interactive ``redis-cli`` on a pseudo-terminal (TERM=dumb: line mode, no
    cursor queries), read up to each prompt with a deadline.

    Started by subprocess on the pty's slave side, not by ``pty.fork()``: forking this
    multi-threaded test process (zmq's I/O threads) may deadlock the child before it
    execs (Python 3.13 warns of exactly that), which would hang CI by chance."""

    def __init__(self, port: int, *args: str) -> None:
        self.prompt = f"127.0.0.1:{port}> ".encode()
        master, slave = os.openpty()
        self.proc = subprocess.Popen(["redis-cli", "-p", str(port), *args], stdin=slave,
                                     stdout=slave, stderr=slave, start_new_session=True,
                                     env={**os.environ, "TERM": "dumb"})
        os.close(slave)
        self.fd = master
        self.read_prompt()

    def read_prompt(self) -> str:
        out, deadline = b"", time.monotonic() + DEADLINE_S
        while not out.endswith(self.prompt):
            assert time.monotonic() < deadline, f"no prompt from redis-cli; got {out!r}"
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                try:
                    out += os.read(self.fd, 65536)
                except OSError:
                    break
        return out[:-len(self.prompt)].decode().replace("\r\n", "\n")

    def run(self, line: str) -> str:
        os.write(self.fd, line.encode() + b"\r")
        text = self.read_prompt()
        echoed, _, rest = text.partition("\n")
        assert echoed == line
        return rest.rstrip("\n")

    def close(self) -> None:
        os.write(self.fd, b"quit\r")
        try:
            self.proc.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.fd)


@pytest.mark.tool("redis-cli")
def test_redis_cli_interactive_every_command(rc: LocalCluster) -> None:
    cli = Cli(rc.resp_port(3))
    try:
        expect = [
            ("PING", "PONG"), ("PING hello", '"hello"'), ("ECHO zc", '"zc"'),
            ("INCR cli:a", "(integer) 1"), ("INCRBY cli:a 9", "(integer) 10"),
            ("DECR cli:a", "(integer) 9"), ("DECRBY cli:a 4", "(integer) 5"),
            ("GET cli:a", '"5"'), ("GET cli:none", "(nil)"),
            ("MGET cli:a cli:none", '1) "5"\n2) (nil)'),
            ("EXISTS cli:a cli:none", "(integer) 1"),
            ("KEYS cli:*", '1) "cli:a"'), ("SCAN 0 MATCH cli:* COUNT 1000", None),
            ("DBSIZE", None), ("WAIT 2 5000", "(integer) 2"), ("SELECT 0", "OK"),
            ("SELECT 1", "(error) ERR DB index is out of range"),
            ("CLIENT SETNAME tester", "OK"), ("CLIENT GETNAME", '"tester"'),
            ("CLIENT SETINFO LIB-NAME cli-test", "OK"),
            ("HELLO 3", "(error) NOPROTO unsupported protocol version"),
            ("HELLO 2", None), ("COMMAND COUNT", None),
            ("ZC.INCRBY cli:once 3 rid-1", "(integer) 3"),
            ("ZC.INCRBY cli:once 3 rid-1", "(integer) 3"),
            ("DEL cli:a cli:once", "(integer) 2"), ("GET cli:a", "(nil)"),
            ("INCRBY cli:a x", "(error) ERR value is not an integer or out of range"),
            ("FLUSHALL", "(error) ERR unknown command 'FLUSHALL', with args beginning with: "),
            ("INFO keyspace", None), ("help ZC.INCRBY", None), ("help INCR", None),
        ]
        for line, want in expect:
            got = cli.run(line)
            if want is not None:
                assert got == want, f"{line}: {got!r}"
            elif line.startswith("SCAN"):
                assert got.splitlines()[:3] == ['1) "0"', '2) 1) "cli:a"'] or "cli:a" in got
            elif line == "DBSIZE":
                assert re.fullmatch(r"\(integer\) \d+", got)
            elif line == "HELLO 2":
                assert '"proto"' in got and "(integer) 2" in got
            elif line == "COMMAND COUNT":
                assert re.fullmatch(r"\(integer\) \d+", got)
            elif line == "INFO keyspace":
                assert got.startswith("# Keyspace")
            elif line.startswith("help"):
                # redis-cli built its help from our COMMAND DOCS at start-up.
                assert "summary:" in got and ("request id" in got or "Increments" in got)
    finally:
        cli.close()


@pytest.mark.tool("redis-cli")
def test_redis_cli_with_a_password(tmp_path: Path) -> None:
    secret = tmp_path / "resp.password"
    secret.write_text("hunter2\n")
    with running_cluster(tmp_path / "c", resp=True,
                         security={"resp_password_file": str(secret)}) as c:
        port = str(c.resp_port(1))
        denied = subprocess.run(["redis-cli", "-p", port, "INCR", "k"], capture_output=True,
                                text=True, timeout=DEADLINE_S, check=False)
        # (redis-cli prints "(error) " before errors only on a terminal)
        assert denied.stdout.strip() == "NOAUTH Authentication required."
        ok = subprocess.run(["redis-cli", "-p", port, "--no-auth-warning", "-a", "hunter2",
                             "INCR", "k"], capture_output=True, text=True, timeout=DEADLINE_S,
                            check=True)
        assert ok.stdout.strip() == "1"
        with client(c, 2, password="hunter2") as r:
            assert r.get("k") in (None, b"1")
        with pytest.raises(redis.AuthenticationError):
            client(c, 2, password="wrong").ping()


@pytest.mark.tool("redis-cli")
def test_redis_cli_pipe_mass_insert(rc: LocalCluster) -> None:
    n = 5000
    data = b"".join(b"*3\r\n$6\r\nINCRBY\r\n$%d\r\n%s\r\n$1\r\n2\r\n"
                    % (len(k), k) for k in (f"mass:{i % 100}".encode() for i in range(n)))
    data += b"*2\r\n$6\r\nINCRBY\r\n$6\r\nmass:0\r\n"  # wrong arity: one error
    done = subprocess.run(["redis-cli", "-p", str(rc.resp_port(2)), "--pipe"], input=data,
                          capture_output=True, timeout=120, check=False)
    out = done.stdout.decode()
    assert f"errors: 1, replies: {n + 1}" in out, out + done.stderr.decode()
    converged(rc, ["mass:0", "mass:99"], {"mass:0": 2 * n // 100, "mass:99": 2 * n // 100})


# --------------------------------------------------------------------------- redis-benchmark


@pytest.mark.tool("redis-benchmark")
@pytest.mark.parametrize("pipeline", [1, 16])
def test_redis_benchmark_incr_counts_every_increment_on_every_node(
        tmp_path: Path, pipeline: int) -> None:
    requests = 3000 if pipeline == 1 else 8000
    with running_cluster(tmp_path / "c", resp=True) as c:
        # -r: keys counter:000000000000 .. counter:000000000099; -e: print server errors.
        run = subprocess.run(
            ["redis-benchmark", "-p", str(c.resp_port(1)), "-t", "incr", "-n", str(requests),
             "-r", "100", "-c", "10", "-P", str(pipeline), "-e"],
            capture_output=True, text=True, timeout=300, check=True)
        assert "rror" not in run.stdout, run.stdout
        # What it reports (it rounds -n up to whole pipelines per client).
        match = re.search(r"^\s*(\d+) requests completed in", run.stdout, re.M)
        assert match, run.stdout
        reported = int(match.group(1))
        assert requests <= reported < requests + 10 * pipeline
        with client(c, 1) as r:
            keys = sorted(k.decode() for k in r.scan_iter(match="counter:*", count=1000))
            total = sum(int(v) for v in r.mget(keys))
        assert 0 < len(keys) <= 100 and total == reported, (total, reported)

        def everywhere() -> bool:
            for node in c.ids:
                with client(c, node) as r:
                    if sum(int(v or 0) for v in r.mget(keys)) != total:
                        return False
            return True
        wait_for(everywhere, DEADLINE_S, interval=0.1, what=f"a total of {total} everywhere")
