"""The Redis-protocol door, sans I/O (zcounter.protocol.resp): sessions driven against
real node cores linked in memory (corelink), bytes in and RESP bytes out, parsed back
with hiredis's Reader as a client would.  No sockets, no clock: ``now`` is the link's."""

from __future__ import annotations

import re
from typing import Any

import hiredis
import pytest
from corelink import Link, slot
from hypothesis import given, settings
from hypothesis import strategies as st

from zcounter.model.pncounter import MAX_STEP, MAX_TOTAL
from zcounter.protocol.messages import ListKeys
from zcounter.protocol.resp import Door, RespClient, Session
from zcounter.protocol.resp import session as session_mod
from zcounter.protocol.resp.commands import SPECS
from zcounter.protocol.resp.glob import compile_glob, literal_prefix


def cmd(*args: Any) -> bytes:
    return hiredis.pack_command(tuple(args))


class Door3:
    """Sessions on the nodes of an in-memory three-node cluster (the runtime's part: hand
    requests to the core, deliver its answers after each batch)."""

    def __init__(self, n: int = 3, password: bytes | None = None) -> None:
        self.link = Link.of(n)
        self.doors = {i: Door(i, tuple(range(1, n + 1)), password) for i in self.link.cores}
        self.sessions: list[Session] = []
        self.cycle = 0
        self._seen = 0

    def session(self, node: int = 1) -> Session:
        s = Session(self.doors[node], len(self.sessions) + 1, self.link.now)
        s.node = node  # type: ignore[attr-defined]
        self.sessions.append(s)
        return s

    def pump(self, rounds: int = 30, until: float | None = None) -> None:
        """Cycles of every node: feed requests, end the batch, deliver answers."""
        for _ in range(rounds):
            self.cycle += 1
            for s in self.sessions:
                for request in s.take_requests(self.cycle):
                    self.link.cores[s.node].handle_request(  # type: ignore[attr-defined]
                        s.client, request, self.link.now)
            self.link.flush()
            self._deliver()
        while until is not None and self.link.now < until:
            self.link.run(self.link.now + 0.05)
            self._deliver()
            self.pump(rounds=2)

    def _deliver(self) -> None:
        replies = self.link.replies
        for client, reply in replies[self._seen:]:
            for s in self.sessions:
                if isinstance(client, RespClient) and client == s.client:
                    s.deliver(reply, self.link.now)
        self._seen = len(replies)

    def run(self, s: Session, data: bytes, **kw: Any) -> list[Any]:
        s.receive(data, self.link.now)
        self.pump(**kw)
        return parse(s.take_output(self.link.now))


def parse(data: bytes) -> list[Any]:
    reader = hiredis.Reader()
    reader.feed(data)
    out = []
    while (item := reader.gets()) is not False:
        out.append(item)
    return out


def errors(replies: list[Any]) -> list[str]:
    return [str(r) for r in replies if isinstance(r, hiredis.ReplyError)]


@pytest.fixture
def d() -> Door3:
    return Door3()


# --------------------------------------------------------------------------- counters


def test_counters_reply_like_redis(d: Door3) -> None:
    s = d.session()
    assert d.run(s, cmd("INCR", "a") + cmd("INCRBY", "a", 5) + cmd("DECR", "a")
                 + cmd("DECRBY", "a", -3) + cmd("INCRBY", "a", -10) + cmd("GET", "a")) == \
        [1, 6, 5, 8, -2, b"-2"]


def test_get_is_nil_unless_live_and_zero_is_a_value(d: Door3) -> None:
    s = d.session()
    # Never written: nil.  Written to 0 (one up, one down): live, "0".  Reset: nil.
    assert d.run(s, cmd("GET", "never") + cmd("INCR", "z") + cmd("DECR", "z") + cmd("GET", "z")
                 + cmd("DEL", "z") + cmd("GET", "z") + cmd("EXISTS", "z", "never")) == \
        [None, 1, 0, b"0", 1, None, 0]


def test_mget_exists_and_del_count_keys_as_redis_does(d: Door3) -> None:
    s = d.session()
    assert d.run(s, cmd("INCR", "a") + cmd("INCRBY", "b", 2) + cmd("MGET", "a", "nope", "b", "a")
                 + cmd("EXISTS", "a", "a", "nope") + cmd("DEL", "a", "a", "nope")
                 + cmd("DEL", "a")) == [1, 2, [b"1", None, b"2", b"1"], 2, 1, 0]


def test_del_is_an_observed_reset_and_the_key_is_usable_at_once(d: Door3) -> None:
    one, two = d.session(1), d.session(2)
    d.run(one, cmd("INCRBY", "k", 5))
    d.link.run(0.5)  # replicated everywhere
    # Node 2 counts 3 more that node 1 has not heard of when it resets.
    d.link.isolate(1)
    assert d.run(two, cmd("INCRBY", "k", 3)) == [8]
    assert d.run(one, cmd("DEL", "k") + cmd("GET", "k") + cmd("INCR", "k")) == [1, None, 1]
    d.link.heal()
    d.pump(until=d.link.now + 2.0)
    # The reset removed the 5 it saw; the unseen 3 survive, with the new 1.
    assert d.run(one, cmd("GET", "k")) == [b"4"]
    assert d.run(two, cmd("GET", "k")) == [b"4"]


def test_argument_errors_are_redis_texts_and_change_nothing(d: Door3) -> None:
    s = d.session()
    replies = d.run(s, cmd("INCRBY", "a", "x") + cmd("INCRBY", "a", "1.5")
                    + cmd("INCRBY", "a", "+1") + cmd("INCRBY", "a", " 1") + cmd("INCRBY", "a", "01")
                    + cmd("INCRBY", "a", 2**63) + cmd("INCRBY", "a", MAX_STEP + 1)
                    + cmd("DECRBY", "a", -(2**63)) + cmd("GET", "a"))
    assert errors(replies) == ["ERR value is not an integer or out of range"] * 7 + [
        "ERR decrement would overflow"]
    assert replies[-1] is None  # nothing was applied


def test_a_total_past_int64_is_refused_with_redis_overflow_text(d: Door3) -> None:
    core = d.link.cores[1]
    core.keys.merge("big", {slot(1): (MAX_TOTAL - 5, 0, 0, 0)})
    core.keys.flush()
    s = d.session()
    replies = d.run(s, cmd("INCRBY", "big", 10) + cmd("INCRBY", "big", 5) + cmd("DECR", "big"))
    assert errors(replies) == ["ERR increment or decrement would overflow"]
    assert replies[1:] == [MAX_TOTAL, MAX_TOTAL - 1]


def test_incrby_zero_answers_the_count_and_writes_nothing(d: Door3) -> None:
    s = d.session()
    assert d.run(s, cmd("INCRBY", "a", 0) + cmd("EXISTS", "a") + cmd("INCR", "a")
                 + cmd("INCRBY", "a", 0)) == [0, 0, 1, 1]


def test_bad_keys_are_refused(d: Door3) -> None:
    s = d.session()
    replies = d.run(s, cmd("INCR", b"") + cmd("INCR", b"x" * 257) + cmd("INCR", b"\xff")
                    + cmd("INCR", "é" * 128))
    assert [r.startswith("ERR invalid key") for r in errors(replies)] == [True] * 3
    assert replies[-1] == 1


def test_unknown_commands_and_arity_use_redis_texts(d: Door3) -> None:
    s = d.session()
    replies = d.run(s, cmd("FOO") + cmd("flushall", "async", "x") + cmd("GET")
                    + cmd("get", "a", "b") + cmd("PING", "a", "b") + cmd("MULTI")
                    + cmd("CLIENT", "KILL", "x") + cmd("CLIENT", "SETNAME"))
    assert errors(replies) == [
        "ERR unknown command 'FOO', with args beginning with: ",
        "ERR unknown command 'flushall', with args beginning with: 'async' 'x' ",
        "ERR wrong number of arguments for 'get' command",
        "ERR wrong number of arguments for 'get' command",
        "ERR wrong number of arguments for 'ping' command",
        "ERR unknown command 'MULTI', with args beginning with: ",
        "ERR unknown subcommand 'KILL'. Try CLIENT HELP.",
        "ERR wrong number of arguments for 'client|setname' command"]


def test_unknown_command_args_are_cut_at_128_characters(d: Door3) -> None:
    s = d.session()
    (reply,) = d.run(s, cmd("NOPE", "a" * 100, "b" * 100, "c"))
    assert str(reply) == f"ERR unknown command 'NOPE', with args beginning with: '{'a' * 100}' " \
        f"'{'b' * 25}' "


# --------------------------------------------------------------------------- the wire


def test_pipelined_commands_cut_anywhere_give_the_same_replies_in_order(d: Door3) -> None:
    data = (cmd("INCR", "p") + cmd("PING") + cmd("GET", "p") + cmd("ECHO", "x\r\ny")
            + cmd("INCRBY", "p", 2) + cmd("MGET", "p", "q") + cmd("DBSIZE"))
    whole = d.run(d.session(), data)
    assert whole == [1, b"PONG", b"1", b"x\r\ny", 3, [b"3", None], 1]
    s = d.session()
    got: list[Any] = []
    for i in range(len(data)):  # one byte per read
        s.receive(data[i:i + 1], d.link.now)
        d.pump(rounds=1)
        got += parse(s.take_output(d.link.now))
    d.pump()
    got += parse(s.take_output(d.link.now))
    assert got == [4, b"PONG", b"4", b"x\r\ny", 6, [b"6", None], 1]


def test_replies_wait_for_earlier_commands(d: Door3) -> None:
    s = d.session()
    s.receive(cmd("INCR", "a") + cmd("PING"), d.link.now)
    # PING's reply is known at once, but INCR's is not until its batch is committed.
    assert s.take_output(d.link.now) == b""
    d.pump()
    assert parse(s.take_output(d.link.now)) == [1, b"PONG"]


def test_listing_and_status_see_the_writes_pipelined_before_them(d: Door3) -> None:
    s = d.session()
    s.receive(cmd("INCR", "x:1") + cmd("KEYS", "*") + cmd("DBSIZE") + cmd("INCR", "x:2"),
              d.link.now)
    first = s.take_requests(1)
    assert [type(r).__name__ for r in first] == ["Add"]  # KEYS waits for a flushed batch
    assert [type(r) for r in s.take_requests(1)] == []
    assert [type(r) for r in s.take_requests(2)] == [ListKeys]
    # A barrier may start a cycle; what follows it goes along (it is not a barrier).
    assert [type(r).__name__ for r in s.take_requests(3)] == ["Status", "Add"]
    d2 = Door3()
    s2 = d2.session()
    assert d2.run(s2, cmd("INCR", "x:1") + cmd("KEYS", "*") + cmd("DBSIZE") + cmd("INCR", "x:2")
                  + cmd("KEYS", "*")) == [1, [b"x:1"], 1, 1, [b"x:1", b"x:2"]]


def test_inline_commands_are_a_protocol_error_that_closes(d: Door3) -> None:
    s = d.session()
    assert errors(d.run(s, b"PING\r\n"))[0].startswith("ERR Protocol error")
    assert s.done
    s.receive(cmd("PING"), d.link.now)  # nothing more is read
    assert s.take_output(d.link.now) == b""


def test_non_string_arguments_are_a_protocol_error(d: Door3) -> None:
    s = d.session()
    assert errors(d.run(s, b"*2\r\n$3\r\nGET\r\n:1\r\n")) == [
        "ERR Protocol error: expected '$', got ':'"]  # Redis's text
    assert s.done


@pytest.mark.parametrize("data", [b":0\r\n", b":5\r\n", b"+OK\r\n", b"$1\r\nx\r\n",
                                  b"*1\r\n*1\r\n$1\r\nx\r\n"])
def test_anything_but_an_array_of_bulk_strings_is_a_protocol_error(d: Door3,
                                                                   data: bytes) -> None:
    s = d.session()
    assert errors(d.run(s, data + cmd("PING")))[0].startswith("ERR Protocol error")
    assert s.done


def test_empty_arrays_are_ignored_as_redis_does(d: Door3) -> None:
    s = d.session()
    assert d.run(s, b"*0\r\n*-1\r\n" + cmd("PING")) == [b"PONG"]


def test_a_command_past_the_size_limit_closes_the_connection(d: Door3) -> None:
    s = d.session()
    # Arguments within their bound, the command past its own: refused at the header of
    # the argument that would pass it, before its bytes arrive.
    arg = 60_000
    n = session_mod.MAX_COMMAND_BYTES // arg + 2
    s.receive(b"*%d\r\n$4\r\nECHO\r\n" % (n + 1), d.link.now)
    for _ in range(n):
        s.receive(b"$%d\r\n%s\r\n" % (arg, b"x" * arg), d.link.now)
    assert errors(parse(s.take_output(d.link.now))) == ["ERR Protocol error: too big command"]
    assert s.done


def test_backlog_counts_unanswered_commands(d: Door3) -> None:
    s = d.session()
    s.receive(cmd("INCR", "a") * 5, d.link.now)
    assert s.backlog == 5
    d.pump()
    s.take_output(d.link.now)
    assert s.backlog == 0


def test_a_closed_session_drops_late_answers(d: Door3) -> None:
    s = d.session()
    s.receive(cmd("INCR", "a"), d.link.now)
    for request in s.take_requests(1):
        d.link.cores[1].handle_request(s.client, request, 0.0)
    s.close()
    d.link.flush()
    d._deliver()
    assert s.take_output(d.link.now) == b""
    assert d.link.cores[1].keys.value("a", 0) == 1  # applied: the client may not know


# --------------------------------------------------------------------------- keyspace


def test_scan_pages_with_integer_cursors_and_finds_every_key(d: Door3) -> None:
    s = d.session()
    keys = [f"k{i:03}" for i in range(57)]
    d.run(s, b"".join(cmd("INCR", k) for k in keys) + cmd("INCR", "other"))
    found, cursor, calls = [], b"0", 0
    while True:
        ((cursor, page),) = d.run(s, cmd("SCAN", cursor, "MATCH", "k*", "COUNT", 10))
        found += page
        calls += 1
        int(cursor)  # redis-py turns cursors into ints
        if cursor == b"0":
            break
    assert sorted(found) == [k.encode() for k in keys] and calls == 6


def test_scan_match_filters_after_count_like_redis(d: Door3) -> None:
    s = d.session()
    d.run(s, cmd("INCR", "a1") + cmd("INCR", "b1") + cmd("INCR", "b2") + cmd("INCR", "c1"))
    # COUNT is work per call: a page of 2 keys may match none of them.
    ((cursor, page),) = d.run(s, cmd("SCAN", 0, "MATCH", "*2", "COUNT", 2))
    assert page == [] and cursor != b"0"
    assert d.run(s, cmd("SCAN", cursor, "MATCH", "*2", "COUNT", 2))[0][1] == [b"b2"]
    assert d.run(s, cmd("SCAN", 0, "TYPE", "hash")) == [[b"0", []]]
    assert d.run(s, cmd("SCAN", 0, "TYPE", "string", "COUNT", 100)) == [
        [b"0", [b"a1", b"b1", b"b2", b"c1"]]]


def test_scan_argument_errors(d: Door3) -> None:
    s = d.session()
    assert errors(d.run(s, cmd("SCAN", "x") + cmd("SCAN", -1) + cmd("SCAN", 12345)
                        + cmd("SCAN", 0, "COUNT", 0) + cmd("SCAN", 0, "BOGUS", 1)
                        + cmd("SCAN", 0, "TYPE", "nope") + cmd("SCAN", 0, "COUNT"))) == [
        "ERR invalid cursor", "ERR invalid cursor", "ERR invalid cursor", "ERR syntax error",
        "ERR syntax error", "ERR unknown type name 'nope'", "ERR syntax error"]


def test_cursor_table_is_bounded_per_connection(d: Door3) -> None:
    s = d.session()
    d.run(s, b"".join(cmd("INCR", f"k{i}") for i in range(5)))
    cursors = [d.run(s, cmd("SCAN", 0, "COUNT", 1))[0][0]
               for _ in range(session_mod.MAX_CURSORS + 1)]
    assert len(s.cursors) == session_mod.MAX_CURSORS
    assert errors(d.run(s, cmd("SCAN", cursors[0]))) == ["ERR invalid cursor"]
    assert d.run(s, cmd("SCAN", cursors[-1], "COUNT", 1))[0][1] == [b"k1"]
    # A cursor is this connection's: another one does not know it.
    assert errors(d.run(d.session(), cmd("SCAN", cursors[-2]))) == ["ERR invalid cursor"]


def test_keys_pages_internally_past_one_listing_page(d: Door3) -> None:
    core = d.link.cores[1]
    n = 10_050  # more than a ListKeys page (codec.MAX_PAGE)
    for i in range(n):
        core.keys.add(f"user:{i:05}", core.slot, 1, 0)
    core.keys.add("other", core.slot, 1, 0)
    core.keys.flush()
    s = d.session()
    (found,) = d.run(s, cmd("KEYS", "user:*"))
    assert len(found) == n and found[0] == b"user:00000" and found[-1] == b"user:10049"
    assert d.run(s, cmd("KEYS", "user:0000?") + cmd("KEYS", "[o]th*") + cmd("DBSIZE")) == [
        [f"user:0000{i}".encode() for i in range(10)], [b"other"], n + 1]


@pytest.mark.parametrize(("pattern", "key", "matches"), [
    (b"h?llo", "hello", True), (b"h?llo", "hllo", False), (b"h*llo", "hllo", True),
    (b"h*llo", "heeeello", True), (b"h[ae]llo", "hallo", True), (b"h[ae]llo", "hillo", False),
    (b"h[^e]llo", "hallo", True), (b"h[^e]llo", "hello", False), (b"h[a-b]llo", "hbllo", True),
    (b"h[b-a]llo", "hallo", True), (b"h\\*llo", "h*llo", True), (b"h\\*llo", "hello", False),
    (b"[\\]]", "]", True), (b"a[]b", "ab", False), (b"a[", "a[", False), (b"a[b", "ab", True),
    (b"x\\", "x\\", True), (b"k?", "ké", False), (b"k??", "ké", True), (b"*", "k", True),
    (b"a**b", "ab", True), (b"A*", "a", False),
])
def test_glob_patterns_follow_redis_stringmatchlen(pattern: bytes, key: str,
                                                   matches: bool) -> None:
    assert compile_glob(pattern)(key) is matches


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab*?[]^-\\", max_size=8),
       st.text(alphabet="ab[]-\\*?", min_size=1, max_size=6))  # keys are never empty
def test_glob_agrees_with_a_direct_port_of_redis_matcher(pattern: str, key: str) -> None:
    assert compile_glob(pattern.encode())(key) is _redis_match(pattern.encode(), key.encode())


def _redis_match(p: bytes, s: bytes) -> bool:
    """stringmatchlen from Redis's src/util.c, transcribed loop for loop (no nocase), as
    the oracle for the regex translation."""
    pi = si = 0
    while pi < len(p) and si < len(s):
        c = p[pi]
        if c == ord("*"):
            while pi + 1 < len(p) and p[pi + 1] == ord("*"):
                pi += 1
            if pi + 1 == len(p):
                return True
            return any(_redis_match(p[pi + 1:], s[k:]) for k in range(si, len(s)))
        if c == ord("?"):
            si += 1
        elif c == ord("["):
            pi += 1
            negate = pi < len(p) and p[pi] == ord("^")
            if negate:
                pi += 1
            match = False
            while True:
                if pi < len(p) and p[pi] == ord("\\") and len(p) - pi >= 2:
                    pi += 1
                    match |= p[pi] == s[si]
                elif pi < len(p) and p[pi] == ord("]"):
                    break
                elif pi >= len(p):
                    pi -= 1
                    break
                elif len(p) - pi >= 3 and p[pi + 1] == ord("-"):
                    lo, hi = sorted((p[pi], p[pi + 2]))
                    pi += 2
                    match |= lo <= s[si] <= hi
                else:
                    match |= p[pi] == s[si]
                pi += 1
            if negate:
                match = not match
            if not match:
                return False
            si += 1
        else:
            if c == ord("\\") and len(p) - pi >= 2:
                pi += 1
            if p[pi] != s[si]:
                return False
            si += 1
        pi += 1
        if si == len(s):
            while pi < len(p) and p[pi] == ord("*"):
                pi += 1
            break
    return pi == len(p) and si == len(s)


def test_literal_prefix_stops_at_the_first_wildcard() -> None:
    assert literal_prefix(b"user:*") == "user:"
    assert literal_prefix(b"a?b") == "a" and literal_prefix(b"[a]") == ""
    assert literal_prefix(b"x\\*") == "x"
    assert literal_prefix("é".encode()[:1] + b"*") == ""  # never half a character


# --------------------------------------------------------------------------- WAIT


def test_wait_reports_peers_holding_this_connections_writes(d: Door3) -> None:
    s = d.session()
    assert d.run(s, cmd("WAIT", 0, 0)) == [2]  # nothing written: nothing to wait for
    assert d.run(s, cmd("INCR", "a") + cmd("INCR", "b") + cmd("WAIT", 2, 1000),
                 until=0.5) == [1, 1, 2]
    assert s.written == {}  # held everywhere: nothing left to confirm
    held = [d.link.cores[n].keys.value("a", 0) for n in (1, 2, 3)]
    assert held == [1, 1, 1]


def test_wait_times_out_with_the_count_reached(d: Door3) -> None:
    s = d.session()
    d.link.cut |= {(1, 3), (3, 1)}
    assert d.run(s, cmd("INCR", "a") + cmd("WAIT", 2, 300), until=1.0) == [1, 1]
    # The node known to hold it is remembered: WAIT 1 is now answered at once.
    s.receive(cmd("WAIT", 1, 300), d.link.now)
    assert parse(s.take_output(d.link.now)) == [1]


def test_wait_covers_writes_pipelined_before_it_only(d: Door3) -> None:
    s = d.session()
    # The second INCR comes after WAIT: WAIT's answer must not count it as held.
    d.link.cut |= {(1, 2), (2, 1), (1, 3), (3, 1)}
    assert d.run(s, cmd("INCR", "a") + cmd("WAIT", 1, 200) + cmd("INCR", "a"),
                 until=1.0) == [1, 0, 2]
    assert s.written["a"][1] == 0


def test_wait_argument_errors_and_timeout_cap(d: Door3) -> None:
    s = d.session()
    assert errors(d.run(s, cmd("WAIT", "x", 0) + cmd("WAIT", 1, "y") + cmd("WAIT", 1, -1))) == [
        "ERR value is not an integer or out of range",
        "ERR timeout is not an integer or out of range", "ERR timeout is negative"]
    d.link.isolate(1)
    s.receive(cmd("INCR", "a") + cmd("WAIT", 5, 0), d.link.now)
    d.pump()
    (request,) = [r for r in d.link.cores[1].pending.waits]
    # WAIT 0 ("forever") is capped; more replicas than exist waits the timeout out.
    assert request.deadline == pytest.approx(d.link.now + session_mod.MAX_WAIT_MS / 1000)
    assert request.needed == 4


def test_wait_refuses_after_too_many_keys_then_recovers(d: Door3) -> None:
    s = d.session()
    n = session_mod.MAX_WAIT_KEYS + 1
    d.run(s, b"".join(cmd("INCR", f"k{i}") for i in range(n)))
    assert s.written_overflow
    assert errors(d.run(s, cmd("WAIT", 1, 100)))[0].startswith("ERR WAIT cannot confirm")
    assert d.run(s, cmd("INCR", "late") + cmd("WAIT", 2, 1000), until=0.5) == [1, 2]


# --------------------------------------------------------------------------- exactly once


def test_zc_incrby_counts_a_retried_request_id_once_at_any_node(d: Door3) -> None:
    one, two = d.session(1), d.session(2)
    assert d.run(one, cmd("ZC.INCRBY", "k", 5, "req-1")) == [5]
    d.link.run(0.5)
    assert d.run(two, cmd("ZC.INCRBY", "k", 5, "req-1") + cmd("GET", "k")) == [5, b"5"]
    replies = d.run(two, cmd("ZC.INCRBY", "other", 5, "req-1") + cmd("ZC.INCRBY", "k", 0, "r2")
                    + cmd("ZC.INCRBY", "k", 1, "bad id!"))
    assert errors(replies)[0] == "ERR request id 'req-1' was already used for key 'k'"
    assert errors(replies)[1] == "ERR value is not an integer or out of range"
    assert errors(replies)[2].startswith("ERR invalid request id: request id must be 1-64")


def test_zc_incrby_retried_at_another_node_before_the_id_replicated_counts_twice(
        ) -> None:
    """What README's Redis section and WRITEUP 5.4 state: a request id is checked where
    the request lands, and another node knows it only once replication has carried it.
    A retry that reaches another node first is applied there too (issue 20 asked which
    of the two documents was right; this is the evidence)."""
    d = Door3(n=2)
    d.link.cut |= {(1, 2), (2, 1)}  # the first attempt's delta has not reached node 2
    one, two = d.session(1), d.session(2)
    assert d.run(one, cmd("ZC.INCRBY", "k", 5, "req-1")) == [5]
    assert d.run(two, cmd("ZC.INCRBY", "k", 5, "req-1")) == [5]  # applied again
    d.link.cut.clear()
    d.pump(until=d.link.now + 2.0)
    assert d.run(one, cmd("GET", "k")) == [b"10"]
    assert d.run(two, cmd("GET", "k") + cmd("ZC.INCRBY", "k", 5, "req-1")) == [b"10", 10]


def test_zc_del_resets_once(d: Door3) -> None:
    s = d.session()
    assert d.run(s, cmd("INCRBY", "k", 5) + cmd("ZC.DEL", "k", "r1") + cmd("INCR", "k")
                 + cmd("ZC.DEL", "k", "r1") + cmd("GET", "k")) == [5, 1, 1, 0, b"1"]


# --------------------------------------------------------------------------- connection


def test_auth_is_required_first_when_a_password_is_set() -> None:
    d = Door3(password=b"s3cret")
    s = d.session()
    assert errors(d.run(s, cmd("GET", "a") + cmd("PING") + cmd("AUTH", "nope")
                        + cmd("AUTH", "bob", "s3cret") + cmd("HELLO", 2))) == [
        "NOAUTH Authentication required.", "NOAUTH Authentication required.",
        "WRONGPASS invalid username-password pair or user is disabled.",
        "WRONGPASS invalid username-password pair or user is disabled.",
        "NOAUTH HELLO must be called with the client already authenticated, otherwise the "
        "HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and "
        "select the RESP protocol version at the same time"]
    assert d.run(s, cmd("AUTH", "s3cret") + cmd("INCR", "a")) == [b"OK", 1]
    s2 = d.session()
    assert d.run(s2, cmd("HELLO", 2, "AUTH", "default", "s3cret") + cmd("GET", "a"))[1] == b"1"


def test_an_unauthenticated_client_cannot_send_big_commands() -> None:
    d = Door3(password=b"pw")
    s = d.session()
    s.receive(b"*2\r\n$4\r\nAUTH\r\n$100000\r\n" + b"x" * 20000, 0.0)
    assert errors(parse(s.take_output(0.0))) == ["ERR Protocol error: invalid bulk length"]
    s2 = d.session()  # Redis's bound too: at most 10 words before AUTH
    s2.receive(b"*11\r\n", 0.0)
    assert errors(parse(s2.take_output(0.0))) == [
        "ERR Protocol error: invalid multibulk length"]


def test_auth_without_a_password_configured(d: Door3) -> None:
    s = d.session()
    assert errors(d.run(s, cmd("AUTH", "x"))) == [
        "ERR AUTH <password> called without any password configured for the default user. "
        "Are you sure your configuration is correct?"]
    assert d.run(s, cmd("AUTH", "default", "x")) == [b"OK"]


def test_hello_keeps_clients_on_resp2(d: Door3) -> None:
    s = d.session()
    replies = d.run(s, cmd("HELLO", 3) + cmd("HELLO", "x") + cmd("HELLO", 2, "BOGUS")
                    + cmd("HELLO", 2, "SETNAME", "app") + cmd("HELLO") + cmd("CLIENT", "GETNAME"))
    assert errors(replies) == ["NOPROTO unsupported protocol version",
                               "ERR Protocol version is not an integer or out of range",
                               "ERR Syntax error in HELLO option 'BOGUS'"]
    hello = dict(zip(replies[3][::2], replies[3][1::2], strict=True))
    assert hello[b"proto"] == 2 and hello[b"role"] == b"master" and hello[b"id"] == s.id
    assert replies[-1] == b"app"


def test_client_select_echo_ping_quit(d: Door3) -> None:
    s = d.session()
    replies = d.run(s, cmd("CLIENT", "SETNAME", "me") + cmd("CLIENT", "GETNAME")
                    + cmd("CLIENT", "SETNAME", "a b") + cmd("CLIENT", "SETINFO", "LIB-NAME", "x")
                    + cmd("CLIENT", "SETINFO", "LIB-VER", "1 2")
                    + cmd("CLIENT", "SETINFO", "COLOR", "red") + cmd("CLIENT", "ID")
                    + cmd("SELECT", 0) + cmd("SELECT", 1) + cmd("SELECT", "x")
                    + cmd("ECHO", "hi") + cmd("PING") + cmd("PING", "yo") + cmd("QUIT")
                    + cmd("PING"))
    assert replies[:2] == [b"OK", b"me"] and replies[3] == b"OK" and replies[6] == s.id
    assert errors(replies) == [
        "ERR Client names cannot contain spaces, newlines or special characters.",
        "ERR LIB-VER cannot contain spaces, newlines or special characters.",
        "ERR Unrecognized option 'COLOR'", "ERR DB index is out of range",
        "ERR value is not an integer or out of range"]
    assert replies[-4:] == [b"hi", b"PONG", b"yo", b"OK"]  # nothing after QUIT
    assert s.done


def test_command_and_command_docs_are_well_formed_for_redis_cli(d: Door3) -> None:
    s = d.session()
    info, count, docs, one, nope = d.run(s, cmd("COMMAND") + cmd("COMMAND", "COUNT")
                                         + cmd("COMMAND", "DOCS") + cmd("COMMAND", "INFO", "get")
                                         + cmd("COMMAND", "NOPE"))
    assert count == len(SPECS) == len(info)
    for entry in info:
        assert isinstance(entry[0], bytes) and isinstance(entry[1], int)
        assert isinstance(entry[3], int) and len(entry) == 10
    assert one[0][:2] == [b"get", 2]
    names = docs[::2]
    assert set(names) == {spec.name.encode() for spec in SPECS}
    for fields in docs[1::2]:
        doc = dict(zip(fields[::2], fields[1::2], strict=True))
        assert {b"summary", b"since", b"group"} <= set(doc)
    assert str(nope) == "ERR unknown subcommand 'NOPE'. Try COMMAND HELP."


def test_info_has_redis_sections_with_zcounter_figures(d: Door3) -> None:
    s = d.session()
    d.doors[1].version = "9.9"
    (text,) = d.run(s, cmd("INCR", "a") + cmd("INFO"), until=0.5)[1:]
    text = text.decode()
    sections = re.findall(r"^# (\w+)", text, re.M)
    assert sections == ["Server", "Clients", "Stats", "Replication", "Keyspace"]
    fields = dict(line.split(":", 1) for line in text.split("\r\n") if ":" in line)
    assert fields["redis_version"] == "7.0.0" and fields["zcounter_version"] == "9.9"
    assert fields["role"] == "master" and fields["connected_slaves"] == "2"
    assert fields["db0"] == "keys=1,expires=0,avg_ttl=0"
    assert fields["zcounter_increments"] == "1"
    assert fields["slave0"].startswith("ip=,port=0,state=online")
    (only,) = d.run(s, cmd("INFO", "keyspace"))
    assert only == b"# Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0\r\n"
    assert d.run(s, cmd("INFO", "nosuchsection")) == [b""]


def test_blank_lines_between_commands_are_skipped_as_redis_does(d: Door3) -> None:
    # redis-cli --pipe ends with "\r\n" and an ECHO (src/redis-cli.c, pipeMode).
    s = d.session()
    data = cmd("INCR", "a") + b"\r\n" + cmd("ECHO", "$0\r\n\r\n") + b"\r\n\n" + cmd("PING")
    assert d.run(s, data) == [1, b"$0\r\n\r\n", b"PONG"]
    for i in range(len(data)):  # and cut anywhere
        s2 = d.session()
        s2.receive(data[:i], 0.0)
        s2.receive(data[i:], 0.0)
        d.pump()
        assert parse(s2.take_output(0.0))[1:] == [b"$0\r\n\r\n", b"PONG"]
    assert d.run(s, b"\r\n") == [] and d.run(s, cmd("GET", "a")) == [b"%d" % (len(data) + 1)]


def test_non_canonical_lengths_are_a_protocol_error(d: Door3) -> None:
    # hiredis's rule (so the door's command sizes are exact).
    s = d.session()
    assert errors(d.run(s, b"*2\r\n$04\r\nECHO\r\n$1\r\nx\r\n"))[0].startswith(
        "ERR Protocol error")
