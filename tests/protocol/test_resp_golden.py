"""Golden replies of the RESP door: every command family's replies and errors, byte for
byte, recorded from the session before it was split by command family (issue 20) and
kept since, so that a change to any reply is a deliberate edit of
``resp_golden.json`` rather than an accident.

Each script runs on a fresh in-memory three-node cluster (``Door3`` of test_resp); each
step is received whole, the cluster pumped, and the bytes the session answers recorded.
INFO's ``os`` line names the machine and is masked; INFO's stats section lists the
core's counters, whose names are not the door's, and is left to test_resp.

To record again after a deliberate change: ``ZC_GOLDEN_WRITE=1 pytest
tests/protocol/test_resp_golden.py``, then read the diff of the JSON file.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from test_resp import Door3, cmd

GOLDEN = Path(__file__).with_name("resp_golden.json")
_OS = re.compile(rb"os:[^\r]*\r\n")
#: The nodes' wall clock (unix ms) in every step.
WALL = 1_700_000_000_000


def _c(*args: Any) -> bytes:
    return cmd(*args)


#: name -> (password, steps); a step is the bytes received at once.
SCRIPTS: dict[str, tuple[bytes | None, list[bytes]]] = {
    "counters": (None, [
        _c("INCR", "a") + _c("INCRBY", "a", 5) + _c("DECR", "a") + _c("DECRBY", "a", 3)
        + _c("INCRBY", "a", 0) + _c("GET", "a") + _c("GET", "never") + _c("MGET", "a", "x", "a")
        + _c("EXISTS", "a", "x", "a") + _c("DEL", "a", "a", "x") + _c("GET", "a"),
        _c("INCRBY", "a", "1.5") + _c("INCRBY", "a", "+1") + _c("INCRBY", "a", "01")
        + _c("INCRBY", "a", 2**32 + 1) + _c("DECRBY", "a", -(2**63))
        + _c("DECRBY", "a", 2**63) + _c("INCRBY", "a", -(2**32)) + _c("GET", "a"),
        _c("INCR", "") + _c("INCR", "k" * 257) + _c("INCR", b"\xff") + _c("GET", "k" * 256),
        _c("INCR") + _c("GET", "a", "b") + _c("MGET") + _c("DEL"),
    ]),
    "overflow": (None, [
        _c("INCRBY", "o", 2**32) * 3 + _c("GET", "o"),
    ]),
    "exactly_once": (None, [
        _c("ZC.INCRBY", "k", 5, "r1") + _c("ZC.INCRBY", "k", 5, "r1")
        + _c("ZC.INCRBY", "other", 5, "r1") + _c("ZC.INCRBY", "k", 0, "r2")
        + _c("ZC.INCRBY", "k", 1, "bad id!") + _c("ZC.INCRBY", "k", "x", "r3")
        + _c("ZC.DEL", "k", "d1") + _c("ZC.DEL", "k", "d1") + _c("ZC.DEL", "k", "bad id!")
        + _c("GET", "k"),
    ]),
    "keyspace": (None, [
        b"".join(_c("INCR", f"key:{i:02d}") for i in range(25)) + _c("INCR", "other"),
        _c("SCAN", 0) + _c("SCAN", 0, "COUNT", 5, "MATCH", "key:1*") + _c("SCAN", 0, "TYPE", "hash")
        + _c("SCAN", 0, "TYPE", "string", "COUNT", 100) + _c("SCAN", 0, "TYPE", "nope")
        + _c("SCAN", 0, "COUNT", 0) + _c("SCAN", 0, "COUNT", "x") + _c("SCAN", 0, "BOGUS", 1)
        + _c("SCAN", 0, "COUNT") + _c("SCAN", "x") + _c("SCAN", -1) + _c("SCAN", 12345)
        + _c("SCAN", 2**64 - 1) + _c("SCAN", 2**64) + _c("SCAN", 0, "MATCH", "*" * 1025),
        _c("SCAN", 1, "COUNT", 100),
        _c("KEYS", "*") + _c("KEYS", "key:?5") + _c("KEYS", "o[a-z]her") + _c("KEYS", "nothing*")
        + _c("KEYS", "x" * 1025) + _c("DBSIZE") + _c("DBSIZE", "x"),
    ]),
    "server": (None, [
        _c("INCR", "a") + _c("INFO", "server", "clients", "replication", "keyspace")
        + _c("INFO", "keyspace") + _c("INFO", "nothing"),
        _c("COMMAND", "COUNT") + _c("COMMAND", "INFO", "get", "nope", "zc.incrby")
        + _c("COMMAND", "DOCS", "incr", "client") + _c("COMMAND", "HELP")
        + _c("COMMAND", "BOGUS") + _c("COMMAND", "COUNT", "x"),
        _c("COMMAND") + _c("COMMAND", "DOCS"),
    ]),
    "wait": (None, [
        _c("WAIT", 0, 0) + _c("INCR", "w") + _c("WAIT", 2, 1000) + _c("WAIT", 5, 100)
        + _c("WAIT", "x", 0) + _c("WAIT", 1, "x") + _c("WAIT", 1, -1),
    ]),
    "connection": (None, [
        _c("PING") + _c("PING", "hi") + _c("PING", "a", "b") + _c("ECHO", "e")
        + _c("SELECT", 0) + _c("SELECT", 1) + _c("SELECT", "x"),
        _c("CLIENT", "ID") + _c("CLIENT", "GETNAME") + _c("CLIENT", "SETNAME", "me")
        + _c("CLIENT", "GETNAME") + _c("CLIENT", "SETNAME", "a b")
        + _c("CLIENT", "SETNAME", "n" * 257) + _c("CLIENT", "SETNAME", "")
        + _c("CLIENT", "GETNAME") + _c("CLIENT", "SETINFO", "LIB-NAME", "redis-py")
        + _c("CLIENT", "SETINFO", "lib-ver", "1 2") + _c("CLIENT", "SETINFO", "other", "x")
        + _c("CLIENT", "HELP") + _c("CLIENT", "KILL") + _c("CLIENT", "ID", "x"),
        _c("HELLO") + _c("HELLO", 2) + _c("HELLO", 3) + _c("HELLO", "x")
        + _c("HELLO", 2, "SETNAME", "hn") + _c("CLIENT", "GETNAME") + _c("HELLO", 2, "BOGUS")
        + _c("HELLO", 2, "AUTH", "default", "pw") + _c("AUTH", "pw")
        + _c("AUTH", "default", "pw") + _c("AUTH", "someone", "pw") + _c("AUTH", "a", "b", "c"),
        _c("FLUSHALL") + _c("SET", "k", "v", "EX", "x" * 200) + _c("get") + b"*0\r\n"
        + _c("QUIT") + _c("PING"),
    ]),
    "auth": (b"secret", [
        _c("PING") + _c("INCR", "a") + _c("HELLO", 2) + _c("AUTH", "wrong") + _c("PING"),
        _c("HELLO", 2, "AUTH", "default", "wrong") + _c("AUTH", "other", "secret")
        + _c("AUTH", "secret") + _c("PING") + _c("HELLO", 2, "AUTH", "default", "secret"),
    ]),
    "auth_failures": (b"secret", [
        _c("AUTH", "a") + _c("AUTH", "b") + _c("AUTH", "c") + _c("AUTH", "d") + _c("PING"),
    ]),
    "expiry": (None, [
        _c("INCR", "e") + _c("EXPIRE", "e", 100) + _c("TTL", "e") + _c("PTTL", "e")
        + _c("EXPIRETIME", "e") + _c("PEXPIRETIME", "e") + _c("EXPIRE", "e", 50, "NX")
        + _c("EXPIRE", "e", 200, "XX") + _c("EXPIRE", "e", 50, "GT")
        + _c("EXPIRE", "e", 300, "gt") + _c("EXPIRE", "e", 50, "LT")
        + _c("PEXPIRE", "e", 40_000, "XX", "LT") + _c("PTTL", "e") + _c("INCR", "e")
        + _c("PTTL", "e") + _c("INFO", "keyspace") + _c("PERSIST", "e") + _c("PERSIST", "e")
        + _c("TTL", "e") + _c("EXPIRETIME", "e") + _c("EXPIRE", "e", 10, "XX", "LT")
        + _c("EXPIRE", "e", 10, "XX", "GT") + _c("EXPIRE", "e", 10, "NX", "NX")
        + _c("TTL", "e"),
        _c("TTL", "nokey") + _c("PTTL", "nokey") + _c("EXPIRETIME", "nokey")
        + _c("PEXPIRETIME", "nokey") + _c("PERSIST", "nokey") + _c("EXPIRE", "nokey", 10)
        + _c("PEXPIREAT", "nokey", 1) + _c("EXISTS", "nokey"),
        _c("EXPIRE", "e", 10, "NX", "XX") + _c("EXPIRE", "e", 10, "GT", "LT")
        + _c("EXPIRE", "e", 10, "NX", "GT") + _c("EXPIRE", "e", 10, "FOO")
        + _c("EXPIRE", "e", "abc", "FOO") + _c("EXPIRE", "e", "1.5") + _c("EXPIRE", "e", "+5")
        + _c("EXPIRE", "e", 2**63 // 1000 + 1) + _c("EXPIRE", "e", -(2**63 // 1000) - 1)
        + _c("EXPIRE", "e", 315_360_001) + _c("PEXPIRE", "e", 2**63 - 1)
        + _c("EXPIREAT", "e", 99_999_999_999) + _c("PEXPIREAT", "e", 2**63 - 1)
        + _c("EXPIRE", "e") + _c("TTL") + _c("TTL", "a", "b") + _c("PERSIST", "a", "b")
        + _c("EXPIRE", "", 5) + _c("TTL", "e"),
        _c("INCR", "x") + _c("PEXPIRE", "x", 0) + _c("EXISTS", "x") + _c("GET", "x")
        + _c("INCR", "y") + _c("EXPIREAT", "y", 1) + _c("INCR", "z") + _c("EXPIRE", "z", -5)
        + _c("INCR", "w") + _c("PEXPIREAT", "w", -(2**63)) + _c("MGET", "x", "y", "z", "w", "e")
        + _c("DEL", "x", "y", "e") + _c("DBSIZE") + _c("SCAN", 0) + _c("KEYS", "*")
        + _c("INCR", "x") + _c("TTL", "x"),
        _c("COMMAND", "INFO", "expire", "ttl", "persist")
        + _c("COMMAND", "DOCS", "pexpireat", "expiretime"),
    ]),
    "protocol_errors": (None, [
        _c("PING") + b"PING\r\n" + _c("PING"),
    ]),
    "protocol_errors_2": (None, [
        _c("PING") + b"*2\r\n$4\r\nECHO\r\n:1\r\n",
    ]),
    "protocol_errors_3": (None, [
        b"*999999\r\n",
    ]),
    "protocol_errors_4": (None, [
        b"*2\r\n$4\r\nECHO\r\n$3\r\nabcde\r\n",
    ]),
}


def run(password: bytes | None, steps: list[bytes]) -> list[str]:
    d = Door3(password=password)
    s = d.session()
    out = []
    for step in steps:
        for core in d.link.cores.values():
            core.set_wall(WALL)  # expiry is measured against it: fixed, so replies are
        s.receive(step, d.link.now)
        d.pump(until=d.link.now + 1.5)
        out.append(_OS.sub(b"os:*\r\n", s.take_output(d.link.now)).decode("latin-1"))
    return out


def test_golden_replies() -> None:
    got = {name: run(password, steps) for name, (password, steps) in SCRIPTS.items()}
    if os.environ.get("ZC_GOLDEN_WRITE"):
        GOLDEN.write_text(json.dumps(got, indent=1, ensure_ascii=True) + "\n")
    want = json.loads(GOLDEN.read_text())
    for name in SCRIPTS:
        assert got[name] == want[name], name
    assert set(want) == set(SCRIPTS)


@pytest.mark.parametrize("name", ["counters", "keyspace", "server", "connection"])
def test_golden_scripts_are_not_empty(name: str) -> None:
    """The recording answers something for every step (a script that only timed out
    would pin nothing)."""
    want = json.loads(GOLDEN.read_text())
    assert all(want[name])
