"""What the fuzzers send: one grammar per door, written once and driven by a chooser.

A :class:`Chooser` makes every choice.  :class:`RandomChooser` (a seeded
``random.Random``, never the global one) drives ``bin/fuzz``; the tests drive the same
grammar with Hypothesis (``st.data()``), so a failing input shrinks.  Each grammar mostly
writes *nearly valid* messages - the door's real shape with one or two fields wrong,
sizes at and past the limits, the values issue 19 found dangerous - because random bytes
rarely get past the first check.  :func:`mutate` then damages any input at the byte level
(flips, cuts, splices of "interesting" numbers), which is what reaches the framing code.

Every size a grammar can produce is bounded (:data:`MAX_ARG_BYTES`, :data:`MAX_ITEMS`):
the fuzzer looks for *bugs* that small inputs reach; the deliberately huge inputs of
issue 19 are :mod:`zcounter.fuzz.attacks`, sent under their own bounds.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from ..model.expiry import MAX_TTL_MS
from ..model.pncounter import MAX_STEP, MAX_TOTAL
from ..protocol.resp.commands import BY_NAME

T = TypeVar("T")

#: Longest argument / JSON string the grammar writes (bytes).
MAX_ARG_BYTES = 4096
#: Most commands in a pipeline, items in a list, fields in an object.
MAX_ITEMS = 8

#: Numbers that sit on a limit or an encoding boundary (int64, uint32, MAX_STEP,
#: hiredis's array-length overflow of issue 19).
INTERESTING_INTS: tuple[int, ...] = (
    0, 1, -1, 2, 7, 255, 256, 1023, 1024, 65535, 65536, 10_000, 10_001, 1_000_000,
    MAX_STEP - 1, MAX_STEP, MAX_STEP + 1, 2**31 - 1, 2**31, 2**32 - 1,
    MAX_TOTAL - 1, MAX_TOTAL, MAX_TOTAL + 1, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1,
)
#: Keys the fuzzers write.  None is a probe's key (``fuzz-probe-*``), so the probe's
#: count is changed by the probe alone.
KEYS: tuple[str, ...] = ("a", "b", "k:1", "fz", "\u00e9t\u00e9", "x" * 256, "x" * 257,
                         "", " ", "a*b", "[a]", "\\", "\x00", "default")
#: A slot name as peers write them: ``<node>.<12 hex digits>``.
SLOTS: tuple[str, ...] = ("3.0123456789ab", "2.000000000002", "1.000000000001",
                          "4.0123456789ab", "42.0123456789ab", "3.xyz", "", "3.")
#: Glob patterns: the backtracking shapes of issue 19 among ordinary ones.
PATTERNS: tuple[str, ...] = ("*", "a*", "*a*", "k:?", "[a-c]*", "[^a]", "\\*", "*a" * 7,
                             "*a*a*a*a*a*a*ab", "[", "[a-", "a[", "?" * 40, "**")


class Chooser(Protocol):
    """Every choice a grammar makes."""

    def pick(self, options: Sequence[T]) -> T: ...

    def integer(self, lo: int, hi: int) -> int: ...

    def raw(self, max_size: int) -> bytes: ...


class RandomChooser:
    """Choices from a seeded ``random.Random`` (``bin/fuzz``: one seed decides all)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def pick(self, options: Sequence[T]) -> T:
        return options[self.rng.randrange(len(options))]

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def raw(self, max_size: int) -> bytes:
        # Small sizes are far more likely: most bugs need few bytes, big ones are slow.
        size = min(max_size, int(self.rng.expovariate(1 / 24)))
        return self.rng.randbytes(size)


def number(c: Chooser) -> int:
    if c.integer(0, 3):
        return c.pick(INTERESTING_INTS)
    return c.integer(-(2**64), 2**64)


def text(c: Chooser) -> str:
    kind = c.integer(0, 5)
    if kind <= 2:
        return c.pick(KEYS)
    if kind == 3:
        return c.pick(PATTERNS)
    if kind == 4:
        return c.raw(64).decode("utf-8", "replace")
    return "k" * c.integer(0, MAX_ARG_BYTES)


# --------------------------------------------------------------------------- RESP

#: Command names: every one the door serves, plus some it does not.
RESP_COMMANDS: tuple[str, ...] = (*sorted(BY_NAME), "set", "flushall", "debug", "subscribe",
                                  "multi", "eval", "client", "")
RESP_WORDS: tuple[bytes, ...] = (b"MATCH", b"COUNT", b"TYPE", b"SETNAME", b"GETNAME", b"ID",
                                 b"INFO", b"LIST", b"SETINFO", b"LIB-NAME", b"LIB-VER",
                                 b"KILL", b"DOCS", b"NO-EVICT", b"AUTH", b"default", b"3", b"2",
                                 b"NX", b"XX", b"GT", b"LT", b"nx", b"gt")
#: RESP3 type bytes and other first bytes hiredis treats specially (issue 19: a RESP3
#: marker inside an argument desynchronised the door's parser).
RESP_MARKERS = b"*$+-:_,#!=%~>(|\r\n"


def resp_word(c: Chooser) -> bytes:
    kind = c.integer(0, 6)
    if kind == 0:
        return c.pick(RESP_WORDS)
    if kind == 1:
        return str(number(c)).encode()
    if kind == 2:
        return bytes([c.pick(RESP_MARKERS)]) + c.raw(16)
    if kind == 3:
        return c.raw(64)
    return text(c).encode("utf-8", "surrogatepass")


def resp_command(c: Chooser) -> list[bytes]:
    name = c.pick(RESP_COMMANDS)
    words = [name.encode() if c.integer(0, 3) else name.upper().encode()]
    words += [resp_word(c) for _ in range(c.integer(0, 5))]
    return words


def resp_frame(words: list[bytes], c: Chooser) -> bytes:
    """RESP's array of bulk strings, sometimes with its framing wrong."""
    damage = c.integer(0, 9)
    count = len(words)
    if damage == 0:
        count = c.pick((-1, -2, 0, count + 1, 2**31, 2**32 - 1, 2**63 - 1, 2**64))
    out = [b"*%d\r\n" % count]
    for word in words:
        size = len(word)
        if damage == 1 and c.integer(0, 2) == 0:
            size = c.pick((-1, -2, size + 1, max(0, size - 1), 2**31, 2**32 - 1, 2**63))
        marker = b"$" if damage != 2 else bytes([c.pick(RESP_MARKERS)])
        out.append(marker + b"%d\r\n" % size + word + b"\r\n")
    if damage == 3:  # an inline command (not supported: a protocol error)
        return b" ".join(words) + b"\r\n"
    if damage == 4:  # a nested aggregate inside the command
        out.insert(c.integer(1, len(out)), b"*1\r\n$1\r\nx\r\n")
    return b"".join(out)


def resp_input(c: Chooser) -> bytes:
    """A pipeline of 1..MAX_ITEMS commands (AUTH or HELLO first, sometimes)."""
    parts = []
    if c.integer(0, 4) == 0:
        parts.append(resp_frame([b"HELLO", c.pick((b"2", b"3", b"4", b"x"))], c))
    for _ in range(c.integer(1, MAX_ITEMS)):
        parts.append(resp_frame(resp_command(c), c))
    if c.integer(0, 5) == 0:
        parts.append(c.pick((b"\r\n", b"\n", b"*", b"*1\r\n$", b"$5\r\nhello\r\n")))
    return b"".join(parts)


# --------------------------------------------------------------------------- JSON


def json_value(c: Chooser, depth: int = 0) -> object:
    kind = c.integer(0, 9 if depth < 2 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return c.pick((True, False))
    if kind == 2:
        value = number(c)
        return value if -(2**63) <= value < 2**64 else float(value)
    if kind == 3:
        return c.pick((0.5, -0.0, 1e30, 1e308))
    if kind in (4, 5):
        return text(c)
    if kind in (6, 7):
        return [json_value(c, depth + 1) for _ in range(c.integer(0, MAX_ITEMS))]
    return {text(c): json_value(c, depth + 1) for _ in range(c.integer(0, MAX_ITEMS))}


def record(c: Chooser) -> object:
    """A slot's record: up to four totals (nearly always ints, sometimes not)."""
    if c.integer(0, 9) == 0:
        return json_value(c, 2)
    return [c.pick((0, 1, 5, MAX_TOTAL, MAX_TOTAL + 1, -1, number(c)))
            for _ in range(c.integer(0, 5))]


def states(c: Chooser) -> object:
    if c.integer(0, 9) == 0:
        return json_value(c, 1)
    return {c.pick(KEYS): {c.pick(SLOTS): record(c) for _ in range(c.integer(0, 3))}
            for _ in range(c.integer(0, 4))}


def rids(c: Chooser) -> object:
    return [[c.pick(("r-1", "r 2", "", "x" * 65)), c.pick(KEYS), states(c)]
            for _ in range(c.integer(0, 3))]


def _dump(obj: dict[str, object], c: Chooser) -> bytes:
    # Drop, or make wrong, one field now and then: the checks of each field in turn.
    if obj and c.integer(0, 3) == 0:
        field = c.pick(sorted(obj))
        if c.integer(0, 1):
            del obj[field]
        else:
            obj[field] = json_value(c, 1)
    if c.integer(0, 5) == 0:
        obj[text(c)] = json_value(c, 1)
    # json, not orjson: numbers past 64 bits are part of what the grammar writes.
    return json.dumps(obj, ensure_ascii=c.integer(0, 1) == 0).encode("utf-8", "surrogatepass")


NATIVE_OPS: tuple[str, ...] = ("increment", "decrement", "reset", "get", "getCount", "keys",
                               "status", "ping", "confirm", "expire", "ttl", "launch", "")
#: Expiry times: the 10-year bound (MAX_TTL_MS) and its neighbours among the usual.
TTLS: tuple[int, ...] = (0, 1, 1000, MAX_TTL_MS, MAX_TTL_MS + 1, -1, MAX_TOTAL, MAX_TOTAL + 1)


def native_input(c: Chooser) -> bytes:
    """One frame for the client door: a request with fields right and wrong."""
    if c.integer(0, 11) == 0:
        return c.raw(256)
    op = c.pick(NATIVE_OPS)
    obj: dict[str, object] = {"op": op, "id": c.pick((1, 2**53, -1, "t", None, number(c)))}
    if op in ("increment", "decrement", "reset", "confirm", "expire", "ttl") or c.integer(
            0, 3) == 0:
        obj["key"] = c.pick(KEYS)
    if op in ("increment", "decrement"):
        obj["by"] = c.pick((1, 2, MAX_STEP, MAX_STEP + 1, 0, number(c)))
    if op in ("increment", "decrement", "expire") and c.integer(0, 2) == 0:
        obj["ttl_ms"] = c.pick((*TTLS, number(c), None, True))
    if op == "expire":
        if c.integer(0, 2):
            obj["at"] = c.pick((*TTLS, number(c), None, 1.5))
        if c.integer(0, 1):
            obj["mode"] = c.pick(("nx", "xx", "gt", "lt", "NX", "", 1, None))
    if c.integer(0, 2) == 0:
        obj["read" if op in ("get", "ttl") else "wait"] = c.pick(
            ("local", "majority", "all", "x", 3))
    if c.integer(0, 3) == 0:
        obj["timeout_ms"] = c.pick((1, 2000, 600_000, 600_001, 0, number(c)))
    if c.integer(0, 4) == 0:
        obj["rid"] = c.pick(("r-1", "r-2", "has space", "x" * 65))
    if op == "get" and c.integer(0, 1):
        obj["keys"] = [c.pick(KEYS) for _ in range(c.integer(0, MAX_ITEMS))]
    if op == "keys":
        obj.update(prefix=text(c), limit=c.pick((1, 10_000, 10_001, 0)), after=c.pick(KEYS))
    if op == "confirm":
        obj["nodes"] = c.pick((1, 2, 3, 1_000_000, 1_000_001, 0))
    if c.integer(0, 5) == 0:
        obj["seen"] = states(c)
        obj["session"] = c.pick((True, False, 1))
    return _dump(obj, c)


PEER_REQUEST_OPS: tuple[str, ...] = ("fetch", "merge", "sb", "ss", "sk", "rp", "hold")
#: Values of ``at`` (states' read time) and ``w`` (a heartbeat's wall clock), unix ms.
WALL_MS: tuple[object, ...] = (0, 1, 1_700_000_000_000, MAX_TOTAL, MAX_TOTAL + 1, -1, "1",
                               None, 1.5)


def peer_request(c: Chooser) -> bytes:
    op = c.pick(PEER_REQUEST_OPS)
    obj: dict[str, object] = {"op": op, "id": c.pick((1, 0, -1, MAX_TOTAL, number(c))),
                              "n": c.pick((3, 2, 1, 4, 0, 999_999_999, 1_000_000_000))}
    if op == "fetch":
        obj["k"] = [c.pick(KEYS) for _ in range(c.integer(0, MAX_ITEMS))]
    elif op == "merge":
        obj["s"] = states(c)
        if c.integer(0, 2) == 0:
            obj["r"] = rids(c)
        if c.integer(0, 1):
            obj["at"] = c.pick(WALL_MS)
    elif op == "hold":
        obj["k"] = [c.pick(([c.pick(KEYS), c.pick((0, 1, 2**64 - 1, 2**64, -1))],
                            [c.pick(KEYS)], c.pick(KEYS)))
                    for _ in range(c.pick((0, 1, 3, MAX_ITEMS)))]
    elif op == "sb":
        obj["h"] = [c.integer(0, 2**64) for _ in range(c.pick((256, 255, 0, 1)))]
    elif op == "ss":
        buckets = [c.integer(0, 256) for _ in range(c.integer(0, 2))]
        obj["b"] = buckets
        obj["h"] = [c.integer(0, 2**64 - 1) for _ in range(256 * len(buckets)
                                                            + c.pick((0, 0, 1, -1)))]
    elif op == "sk":
        obj["g"] = [c.integer(0, 2**16) for _ in range(c.integer(0, 4))]
        obj["e"] = [[c.pick(KEYS), c.pick((0, 1, 2**64 - 1, 2**64, -1))]
                    for _ in range(c.integer(0, 4))]
    else:
        obj.update(e=c.pick(("e1", "", "x" * 65)), a=c.pick((0, 1, MAX_TOTAL, -1)))
    return _dump(obj, c)


def peer_reply(c: Chooser, req_id: int | None = None) -> bytes:
    kind = c.pick(("st", "sd", "ss", "rp", "hd", "zz"))
    obj: dict[str, object] = {"t": kind, "id": req_id if req_id is not None else
                              c.pick((1, 0, -1, number(c))), "n": c.pick((3, 4, 1, 0, 42))}
    if kind in ("st", "ss") and c.integer(0, 1):
        obj["at"] = c.pick(WALL_MS)
    if kind == "st":
        obj["s"] = states(c)
    elif kind == "hd":
        obj["ok"] = [c.pick((True, False, 1, None)) for _ in range(c.integer(0, 4))]
    elif kind == "sd":
        obj["i"] = [c.integer(0, 2**16) for _ in range(c.integer(0, 4))]
        if c.integer(0, 1):
            obj["a"] = {str(c.pick((1, 2, 3, 0))): ["e1", number(c)]}
    elif kind == "ss":
        obj.update(l=[c.pick(SLOTS) for _ in range(c.integer(0, 3))],
                   s=json_value(c, 1) if c.integer(0, 2) == 0 else
                   [[c.pick(KEYS), [number(c) for _ in range(c.integer(0, 8))]]],
                   d=[c.pick(KEYS)], c=c.pick((0, 1, 65536, 65537)))
    elif kind == "rp":
        obj.update(r=rids(c), e=c.pick(("e1", "")), c=c.pick((0, 1, -1)), m=c.pick((True, 1)))
    return _dump(obj, c)


def broadcast(c: Chooser, origin: int = 3) -> bytes:
    kind = c.pick(("d", "h", "u"))
    obj: dict[str, object] = {"t": kind, "n": c.pick((origin, origin, 1, 42, 0)),
                              "e": c.pick(("forged", "", "x" * 65)),
                              "q": c.pick((1, 2, 0, -1, MAX_TOTAL, number(c)))}
    if kind == "d":
        obj["s"] = states(c)
        if c.integer(0, 2) == 0:
            obj["r"] = rids(c)
        if c.integer(0, 1):
            obj["at"] = c.pick(WALL_MS)
    else:
        obj.update(h=c.pick((0, 2**64 - 1, -1)), k=c.pick((0, 5, -1)),
                   a={str(c.pick((1, 2, 3, 42))): [c.pick(("e1", "forged")), number(c)]},
                   re=c.pick(("", "e", 5)), rn=c.pick((0, 1, -1)))
        if c.integer(0, 1):
            obj["w"] = c.pick(WALL_MS)
    return _dump(obj, c)


def peer_input(c: Chooser) -> bytes:
    """A :func:`zcounter.fuzz.targets.peer_message` input: path byte, then the frame."""
    path = c.integer(0, 2)
    frame = (broadcast, peer_reply, peer_request)[path](c)
    return bytes([path]) + frame


# --------------------------------------------------------------------------- HTTP


def http_input(c: Chooser) -> bytes:
    """A request for the metrics endpoint: right, nearly right, or not HTTP."""
    if c.integer(0, 9) == 0:
        return c.raw(512)
    method = c.pick((b"GET", b"HEAD", b"POST", b"OPTIONS", b"PUT", b"G\x00T", b"CONNECT"))
    path = c.pick((b"/metrics", b"/", b"/metrics?name[]=zcounter_requests", b"*",
                   b"/" + b"a" * c.integer(0, MAX_ARG_BYTES), b"/%", b"/metrics?x=%ff",
                   b"http://127.0.0.1/metrics"))
    version = c.pick((b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1x", b""))
    lines = [method + b" " + path + (b" " + version if version else b"")]
    for _ in range(c.integer(0, 4)):
        lines.append(c.pick((b"Host: 127.0.0.1", b"Accept-Encoding: gzip",
                             b"Accept: application/openmetrics-text",
                             b"Content-Length: " + str(number(c)).encode(),
                             b"Transfer-Encoding: chunked", b"Connection: keep-alive",
                             b"X: " + b"y" * c.integer(0, MAX_ARG_BYTES), b": empty",
                             b"no colon")))
    end = c.pick((b"\r\n\r\n", b"\r\n\r\n", b"\n\n", b"\r\n", b""))
    body = c.raw(64) if c.integer(0, 3) == 0 else b""
    return b"\r\n".join(lines) + end + body


# --------------------------------------------------------------------------- config

SETTING_NAMES: tuple[str, ...] = ("heartbeat_interval_s", "peer_timeout_s", "max_batch",
                                  "request_id_window", "resp_stall_timeout_s", "nope")


def _toml_value(c: Chooser) -> str:
    return c.pick(("1", "0", "-1", "0.5", "1e400", "inf", "nan", "true", '"5"', "[]", "{}",
                   "2000000000000000000000", '"tcp://127.0.0.1:5551"', '"127.0.0.1:9571"',
                   f'"{text(c)}"'))


def config_input(c: Chooser) -> bytes:
    """A cluster file: node tables, settings, security, name - fields right and wrong."""
    lines: list[str] = []
    for _ in range(c.integer(0, 4)):
        node = c.pick(("1", "2", "0", "-1", '"\u00b2"', '"\u0661"', "1000000000", "a", '"1 "'))
        lines.append(f"[nodes.{node}]")
        port = c.integer(0, 70_000)
        for field in ("router", "pub", "resp", "metrics", "public_key", "extra"):
            if c.integer(0, 3):
                host = c.pick(("127.0.0.1", "[::1]", "localhost", "", "a b", "\u00e9"))
                value = (f'"{host}:{port}"' if field == "metrics" else
                         f'"tcp://{host}:{port + len(lines)}"' if field != "public_key" else
                         c.pick(('"keys/n.key"', '""', '"."', "5")))
                lines.append(f"{field} = {value if c.integer(0, 5) else _toml_value(c)}")
    if c.integer(0, 1):
        lines.append("[settings]")
        for _ in range(c.integer(0, 3)):
            lines.append(f"{c.pick(SETTING_NAMES)} = {_toml_value(c)}")
    if c.integer(0, 2) == 0:
        lines.append("[security]")
        lines.append("mode = " + c.pick(('"none"', '"curve"', '"x"', "1")))
        if c.integer(0, 1):
            lines.append("clients = " + c.pick(('"clients"', '""', "3")))
    if c.integer(0, 4) == 0:
        lines.insert(0, "name = " + c.pick(('"ok"', '""', '"a/b"', "5")))
    return "\n".join(lines).encode()


# --------------------------------------------------------------------------- mutation


def mutate(data: bytes, c: Chooser, rounds: int | None = None) -> bytes:
    """Byte-level damage: flips, cuts, duplications, splices of interesting numbers."""
    buf = bytearray(data)
    for _ in range(rounds if rounds is not None else c.integer(1, 4)):
        op = c.integer(0, 6)
        at = c.integer(0, len(buf)) if buf else 0
        if op == 0 and buf:
            buf[min(at, len(buf) - 1)] ^= 1 << c.integer(0, 7)
        elif op == 1:
            del buf[at:at + c.integer(1, 16)]
        elif op == 2:
            buf[at:at] = c.raw(16)
        elif op == 3:
            buf[at:at] = str(c.pick(INTERESTING_INTS)).encode()
        elif op == 4 and buf:
            end = min(len(buf), at + c.integer(1, 64))
            buf[at:at] = buf[at:end] * c.integer(1, 4)
        elif op == 5:
            buf[at:at] = bytes([c.pick(RESP_MARKERS + b'{}[]",:\\')])
        else:
            buf = buf[:at]
    return bytes(buf)


#: Each in-process door's grammar (the metrics door's is :func:`http_input`).
GRAMMARS: dict[str, Callable[[Chooser], bytes]] = {
    "resp": resp_input,
    "native": native_input,
    "peer": peer_input,
    "config": config_input,
    "metrics": http_input,
}

__all__ = ["GRAMMARS", "INTERESTING_INTS", "KEYS", "Chooser", "RandomChooser", "broadcast",
           "config_input", "http_input", "mutate", "native_input", "peer_input", "peer_reply",
           "peer_request", "resp_input"]
