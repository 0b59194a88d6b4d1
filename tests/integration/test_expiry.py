"""Counters that expire, as users reach them, against real node processes: every expiry
command through redis-py and ``redis-cli`` (replies compared with a real
``redis-server`` 7 on a free port), ``bin/client``'s expire/ttl/persist/--ttl, the Python
client, and the rate limiter of README.md in both clients.  Short TTLs, polled with
deadlines (never fixed sleeps)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from harness import LocalCluster, running_cluster, wait_for

from zcounter.errors import RequestRefused
from zcounter.procs import free_port
from zcounter.protocol.messages import ErrorCode

pytestmark = pytest.mark.integration

DEADLINE_S = 30.0


@pytest.fixture(scope="module")
def ec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three nodes with a RESP door each; the module's tests use distinct keys."""
    with running_cluster(tmp_path_factory.mktemp("expiry") / "cluster", resp=True) as c:
        yield c


def door(c: LocalCluster, node: int = 1) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=c.resp_port(node), protocol=2,
                       socket_timeout=DEADLINE_S)


@pytest.fixture(scope="module")
def real_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis.Redis]:
    """A real redis-server 7 on a free port, nothing saved: the replies to compare with."""
    if not os.access("/usr/bin/redis-server", os.X_OK) and not any(
            os.access(os.path.join(p, "redis-server"), os.X_OK)
            for p in os.environ.get("PATH", "").split(os.pathsep)):
        pytest.skip("needs redis-server on PATH (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--save", "",
                             "--appendonly", "no", "--dir",
                             str(tmp_path_factory.mktemp("redis"))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = redis.Redis(host="127.0.0.1", port=port, protocol=2, socket_timeout=DEADLINE_S)
    try:
        wait_for(lambda: _pings(r), DEADLINE_S, what="redis-server to answer")
        yield r
    finally:
        r.close()
        proc.terminate()
        proc.wait(timeout=DEADLINE_S)


def _pings(r: redis.Redis) -> bool:
    try:
        return bool(r.ping())
    except redis.ConnectionError:
        return False


def reply(r: redis.Redis, *words: Any) -> Any:
    """The raw reply, an error as ``("error", text)``."""
    try:
        return r.execute_command(*words)
    except redis.ResponseError as exc:
        return ("error", str(exc))


# --------------------------------------------------------------------------- vs Redis

#: Commands whose replies are the same whatever the clock: run on redis-server and on a
#: node's door, reply by reply.  ``{p}`` is a per-run key prefix.
SCRIPT: list[tuple[Any, ...]] = [
    ("INCR", "{p}a"), ("EXPIRE", "{p}a", 100), ("TTL", "{p}a"), ("EXPIRE", "{p}a", 100, "NX"),
    ("EXPIRE", "{p}a", 200, "XX"), ("TTL", "{p}a"), ("EXPIRE", "{p}a", 50, "GT"),
    ("EXPIRE", "{p}a", 300, "gt"), ("EXPIRE", "{p}a", 50, "LT"), ("TTL", "{p}a"),
    ("PEXPIRE", "{p}a", 40_000, "XX", "LT"), ("TTL", "{p}a"), ("INCR", "{p}a"),
    ("TTL", "{p}a"), ("INCRBY", "{p}a", 5), ("DECR", "{p}a"), ("DECRBY", "{p}a", 2),
    ("TTL", "{p}a"), ("PERSIST", "{p}a"), ("PERSIST", "{p}a"), ("TTL", "{p}a"),
    ("PTTL", "{p}a"), ("EXPIRETIME", "{p}a"), ("PEXPIRETIME", "{p}a"),
    ("EXPIRE", "{p}a", 10, "XX", "LT"), ("EXPIRE", "{p}a", 10, "XX", "GT"),
    ("EXPIRE", "{p}a", 10, "LT"), ("EXPIRE", "{p}a", 10, "nx", "nx"), ("TTL", "{p}a"),
    ("TTL", "{p}none"), ("PTTL", "{p}none"), ("EXPIRETIME", "{p}none"),
    ("PEXPIRETIME", "{p}none"), ("PERSIST", "{p}none"), ("EXPIRE", "{p}none", 10),
    ("PEXPIREAT", "{p}none", 1), ("EXISTS", "{p}none"),
    ("EXPIRE", "{p}a", 10, "NX", "XX"), ("EXPIRE", "{p}a", 10, "GT", "LT"),
    ("EXPIRE", "{p}a", 10, "NX", "GT"), ("EXPIRE", "{p}a", 10, "FOO"),
    ("EXPIRE", "{p}a", "abc", "FOO"), ("EXPIRE", "{p}a", "1.5"), ("EXPIRE", "{p}a", "+5"),
    ("EXPIRE", "{p}a", " 5"), ("EXPIRE", "{p}a", "05"),
    ("EXPIRE", "{p}a", 2**63 // 1000 + 1), ("EXPIRE", "{p}a", -(2**63 // 1000) - 1),
    ("PEXPIRE", "{p}a", 2**63 - 1), ("EXPIRE", "{p}a"), ("TTL",), ("TTL", "{p}a", "b"),
    ("PERSIST", "{p}a", "b"), ("PEXPIRE", "{p}a", 1500), ("PTTL", "{p}a"),
    ("INCR", "{p}x"), ("PEXPIRE", "{p}x", 0), ("EXISTS", "{p}x"), ("GET", "{p}x"),
    ("INCR", "{p}x"), ("TTL", "{p}x"), ("INCR", "{p}y"), ("EXPIREAT", "{p}y", 1),
    ("GET", "{p}y"), ("INCR", "{p}z"), ("EXPIRE", "{p}z", -5), ("EXISTS", "{p}z"),
    ("INCR", "{p}w"), ("PEXPIREAT", "{p}w", -(2**63)), ("MGET", "{p}x", "{p}y", "{p}w"),
    ("DEL", "{p}y", "{p}x"), ("KEYS", "{p}*"),
]


@pytest.mark.tool("redis-server")
def test_every_expiry_reply_matches_redis_server(ec: LocalCluster,
                                                 real_redis: redis.Redis) -> None:
    prefix = f"cmp{time.monotonic_ns()}:"
    with door(ec, 2) as z:
        for words in SCRIPT:
            cmd = [w.format(p=prefix) if isinstance(w, str) else w for w in words]
            want, got = reply(real_redis, *cmd), reply(z, *cmd)
            if cmd[0] in ("PTTL", "EXPIRETIME", "PEXPIRETIME") and isinstance(want, int) \
                    and want > 0:
                # The clocks and the commands' moments differ by milliseconds.
                assert isinstance(got, int) and abs(got - want) <= (
                    1 if cmd[0] == "EXPIRETIME" else 1000), (cmd, want, got)
                continue
            assert got == want, (cmd, want, got)


def test_zcounter_refuses_a_deadline_past_ten_years_where_redis_takes_it(
        ec: LocalCluster) -> None:
    with door(ec) as z:
        z.incr("far")
        assert reply(z, "EXPIRE", "far", 315_360_001) == (
            "error", "invalid expire time in 'expire' command")
        error = reply(z, "EXPIREAT", "far", int(time.time()) + 315_400_000)
        assert error[0] == "error" and "invalid expire time" in error[1]
        assert z.ttl("far") == -1  # nothing changed
        assert z.expire("far", 315_359_000) is True


# --------------------------------------------------------------------------- redis-py


def test_redis_py_expiry_commands(ec: LocalCluster) -> None:
    with door(ec, 1) as r:
        assert r.incr("rp:a") == 1
        assert r.expire("rp:a", 100) is True
        assert r.expire("rp:a", 50, nx=True) is False
        assert r.expire("rp:a", 200, xx=True) is True
        assert r.expire("rp:a", 100, gt=True) is False
        assert r.expire("rp:a", 100, lt=True) is True
        assert r.ttl("rp:a") == 100 and 99_000 < r.pttl("rp:a") <= 100_000
        assert abs(r.expiretime("rp:a") - (time.time() + 100)) < 2
        assert r.pexpire("rp:a", 60_000) is True and 59_000 < r.pttl("rp:a") <= 60_000
        assert r.expireat("rp:a", int(time.time()) + 30) is True
        assert 28 <= r.ttl("rp:a") <= 30
        at_ms = int(time.time() * 1000) + 20_000
        assert r.pexpireat("rp:a", at_ms) is True
        assert r.execute_command("PEXPIRETIME", "rp:a") == at_ms
        # INCR and its kin keep the expiry (as in Redis).
        assert [r.incr("rp:a"), r.incrby("rp:a", 3), r.decr("rp:a"), r.decrby("rp:a", 2)] == [
            2, 5, 4, 2]
        assert r.execute_command("PEXPIRETIME", "rp:a") == at_ms
        assert r.persist("rp:a") is True and r.persist("rp:a") is False
        assert r.ttl("rp:a") == -1 and r.ttl("rp:none") == -2 and r.pttl("rp:none") == -2
        assert r.expire("rp:none", 10) is False
        # An expired key is never shown: GET, MGET, EXISTS, KEYS, SCAN.
        r.incr("rp:gone")
        assert r.pexpire("rp:gone", 300) is True
        wait_for(lambda: r.get("rp:gone") is None, DEADLINE_S, what="rp:gone to expire")
        assert r.mget("rp:gone", "rp:a") == [None, b"2"] and r.exists("rp:gone") == 0
        assert r.keys("rp:*") == [b"rp:a"]
        assert list(r.scan_iter(match="rp:*")) == [b"rp:a"]
        assert r.ttl("rp:gone") == -2 and r.delete("rp:gone") == 0
        # A new life: from zero, without expiry.
        assert r.incr("rp:gone") == 1 and r.ttl("rp:gone") == -1


def test_dbsize_and_info_keyspace_never_count_an_expired_key(ec: LocalCluster) -> None:
    with door(ec, 3) as r:
        before = r.dbsize()
        r.incr("db:v")
        r.pexpire("db:v", 400)
        keyspace = r.info("keyspace")["db0"]
        # Other keys of the module hold expiries too (replicated to this node): the
        # average is theirs as well.
        assert keyspace["expires"] >= 1 and keyspace["avg_ttl"] > 0
        assert r.dbsize() == before + 1
        wait_for(lambda: r.dbsize() == before, DEADLINE_S, what="DBSIZE without db:v")


def test_an_expiry_set_on_one_node_is_honoured_on_all_three(ec: LocalCluster) -> None:
    with door(ec, 1) as r:
        assert r.incrby("rep:k", 7) == 7
        assert r.pexpire("rep:k", 1500) is True
    for node in ec.ids:  # replicated: every node reads the same deadline
        with door(ec, node) as r:
            wait_for(lambda r=r: 0 < r.pttl("rep:k") <= 1500, DEADLINE_S,
                     what=f"node {node} to hold rep:k's expiry")
    for node in ec.ids:  # and every node's own clock expires it
        with door(ec, node) as r:
            wait_for(lambda r=r: r.get("rep:k") is None, DEADLINE_S,
                     what=f"rep:k to expire at node {node}")
            assert r.ttl("rep:k") == -2 and r.exists("rep:k") == 0


# --------------------------------------------------------------------------- redis-cli


def cli(c: LocalCluster, *args: str | int, node: int = 1) -> str:
    done = subprocess.run(["redis-cli", "-p", str(c.resp_port(node)), *map(str, args)],
                          capture_output=True, text=True, timeout=DEADLINE_S)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.tool("redis-cli")
def test_redis_cli_expiry_commands(ec: LocalCluster) -> None:
    assert cli(ec, "INCR", "rc:k") == "1"
    assert cli(ec, "EXPIRE", "rc:k", 100) == "1"
    assert cli(ec, "EXPIRE", "rc:k", 100, "NX") == "0"
    assert cli(ec, "TTL", "rc:k") == "100"
    assert 99_000 < int(cli(ec, "PTTL", "rc:k")) <= 100_000
    assert cli(ec, "PEXPIRE", "rc:k", 50_000, "LT") == "1"
    assert abs(int(cli(ec, "EXPIRETIME", "rc:k")) - (time.time() + 50)) < 2
    at = int(time.time()) + 40
    assert cli(ec, "EXPIREAT", "rc:k", at) == "1"
    assert cli(ec, "PEXPIRETIME", "rc:k") == str(at * 1000)
    assert cli(ec, "PEXPIREAT", "rc:k", at * 1000 + 500, "GT") == "1"
    assert cli(ec, "INCR", "rc:k") == "2" and cli(ec, "PEXPIRETIME", "rc:k") == str(
        at * 1000 + 500)
    assert cli(ec, "PERSIST", "rc:k") == "1" and cli(ec, "TTL", "rc:k") == "-1"
    assert cli(ec, "TTL", "rc:none") == "-2"
    assert cli(ec, "EXPIRE", "rc:k", 10, "NX", "XX") == (
        "ERR NX and XX, GT or LT options at the same time are not compatible")
    assert cli(ec, "PEXPIRE", "rc:k", 0) == "1" and cli(ec, "GET", "rc:k") == ""
    assert cli(ec, "INFO", "keyspace").startswith("# Keyspace")


# --------------------------------------------------------------------------- bin/client


def zc(c: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zcounter.cli", "client", "--config",
                           str(c.config_path), "--node", "1", *args], capture_output=True,
                          text=True, timeout=DEADLINE_S)


def test_client_commands_expire_ttl_persist_and_ttl_on_steps(ec: LocalCluster) -> None:
    def out(*args: str) -> str:
        done = zc(ec, *args)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert out("ttl", "--key", "cli:k") == "-2\n"
    assert out("expire", "--key", "cli:k", "--ttl", "10") == "0\n"  # no such key
    assert out("increment", "--key", "cli:k", "--by", "3", "--ttl", "100") == "3\n"
    left = float(out("ttl", "--key", "cli:k"))
    assert 99.0 < left <= 100.0 and len(out("ttl", "--key", "cli:k").split(".")[1]) == 4
    assert out("decrement", "--key", "cli:k", "--ttl", "5") == "2\n"  # keeps its expiry
    assert float(out("ttl", "--key", "cli:k")) > 90
    assert out("expire", "--key", "cli:k", "--ttl", "50", "--gt") == "0\n"
    assert out("expire", "--key", "cli:k", "--ttl", "50.5", "--lt") == "1\n"
    assert 49.0 < float(out("ttl", "--key", "cli:k", "--read", "majority")) <= 50.5
    assert out("expire", "--key", "cli:k", "--ttl", "70", "--nx") == "0\n"
    assert out("expire", "--key", "cli:k", "--ttl", "70", "--xx") == "1\n"
    assert out("persist", "--key", "cli:k") == "1\n"
    assert out("persist", "--key", "cli:k") == "0\n"
    assert out("ttl", "--key", "cli:k") == "-1\n"
    assert out("expire", "--key", "cli:k", "--ttl", "0.2") == "1\n"
    wait_for(lambda: out("ttl", "--key", "cli:k") == "-2\n", DEADLINE_S,
             what="cli:k to expire")
    assert out("getCount", "--key", "cli:k") == "0\n"
    for bad in (["expire", "--key", "cli:k", "--ttl", "0"],
                ["expire", "--key", "cli:k", "--ttl", "-1"],
                ["expire", "--key", "cli:k", "--ttl", "315360000.001"],
                ["increment", "--key", "cli:k", "--ttl", "inf"],
                ["decrement", "--key", "cli:k", "--ttl", "nan"]):
        done = zc(ec, *bad)
        assert done.returncode == 1 and done.stdout == "", bad
        assert done.stderr.startswith("error: ttl must be") or done.stderr.startswith(
            "error: seconds must be"), done.stderr
    assert out("getCount", "--key", "cli:k") == "0\n"  # none of them changed anything
    usage = zc(ec, "expire", "--key", "cli:k")  # --ttl is required: a usage error
    assert usage.returncode == 2


# --------------------------------------------------------------------------- zcounter.Client


def test_python_client_expire_ttl_persist(ec: LocalCluster) -> None:
    with ec.client(node=2) as c:
        assert c.ttl("py:k") is None and c.pttl("py:k") == -2
        assert c.expire("py:k", 10) is False
        assert c.increment(key="py:k", ttl=60) == 1
        assert 59.0 < (c.ttl("py:k") or 0) <= 60.0
        assert c.increment(2, key="py:k", ttl=5) == 3  # keeps the first expiry
        assert (c.ttl("py:k") or 0) > 50
        assert c.decrement(key="py:k", ttl=1) == 2
        assert c.expire("py:k", 30, mode="gt") is False
        assert c.expire("py:k", 30.25, mode="lt") is True
        assert 29.0 < (c.ttl("py:k", read="all") or 0) <= 30.25
        assert c.persist("py:k") is True and c.persist("py:k") is False
        assert c.ttl("py:k") is None and c.pttl("py:k") == -1
        for bad in (0, -1, 10 * 365 * 86400 + 1, float("nan"), float("inf"), "5", True):
            with pytest.raises(RequestRefused) as info:
                c.expire("py:k", bad)  # type: ignore[arg-type]
            assert info.value.code is ErrorCode.BAD_REQUEST
            with pytest.raises(RequestRefused):
                c.increment(key="py:k", ttl=bad)  # type: ignore[arg-type]
        with pytest.raises(RequestRefused):
            c.expire("py:k", 5, mode="soon")
        assert c.get_count("py:k") == 2 and c.pttl("py:k") == -1  # nothing changed
        assert c.expire("py:k", 0.2, mode="NX") is True
        wait_for(lambda: c.pttl("py:k") == -2, DEADLINE_S, what="py:k to expire")
        assert c.get_count("py:k") == 0
        assert c.increment(key="py:k") == 1 and c.ttl("py:k") is None  # a new life


# --------------------------------------------------------------------------- rate limiter


def allow_redis(r: redis.Redis, client: str, limit: int, window_s: int) -> bool:
    """README's rate limiter with redis-py: INCR + EXPIRE NX in one round trip."""
    key = f"rl:{client}"
    pipe = r.pipeline(transaction=False)
    pipe.incr(key)
    pipe.expire(key, window_s, nx=True)
    count, _ = pipe.execute()
    return int(count) <= limit


def test_rate_limiter_with_redis_py_and_with_the_python_client(ec: LocalCluster) -> None:
    with door(ec, 1) as r:
        assert [allow_redis(r, "alice", 3, 1) for _ in range(5)] == [True] * 3 + [False] * 2
        assert 0 < r.pttl("rl:alice") <= 1000
        wait_for(lambda: r.get("rl:alice") is None, DEADLINE_S, what="alice's window")
        assert allow_redis(r, "alice", 3, 1)  # a new window counts from zero
    with ec.client(node=3) as c:
        counts = [c.increment(key="rl:bob", ttl=1) for _ in range(5)]
        assert counts == [1, 2, 3, 4, 5]
        assert 0 < (c.ttl("rl:bob") or 0) <= 1.0
        wait_for(lambda: c.pttl("rl:bob") == -2, DEADLINE_S, what="bob's window")
        assert c.increment(key="rl:bob", ttl=1) == 1


def test_readme_documents_the_expiry_commands() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Counters that expire", 1)[1].split("\n## ", 1)[0]
    for word in ("EXPIRE", "PEXPIREAT", "PERSIST", "EXPIRETIME", "--ttl", "expire(",
                 "ttl(", "nx=True"):
        assert word in section, word
