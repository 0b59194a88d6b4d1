"""Bugs the fuzzers found that are still open, each with a cheap check of whether it is.

Hypothesis tests skip an input that reaches a bug listed here *while it is present*
(``present()`` is measured, not declared), so the suite stays green on a branch without
the fix and starts testing those inputs the moment the fix lands; ``bin/fuzz`` still
reports every such crash, labelled with its finding.  Each is kept as a regression case
under ``tests/regressions/`` too.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class Finding:
    name: str
    door: str
    what: str
    present: Callable[[], bool]
    matches: Callable[[bytes], bool]


@cache
def _resp_array_alloc() -> bool:
    from ..protocol.resp.session import Door, Session

    session = Session(Door(1, (1, 2, 3)), 1, 0.0)
    try:
        session.receive(b"*4294967295\r\n", 0.0)  # 32 GiB of pointers: malloc refuses
    except MemoryError:
        return True
    return False


_BIG_LENGTH = re.compile(rb"[*$%~>=|](\d{7,})")


def _announces_big(data: bytes) -> bool:
    return any(int(n) > 1 << 20 for n in _BIG_LENGTH.findall(data))


@cache
def _glob_backtracks() -> bool:
    from ..protocol.resp.glob import compile_glob

    match = compile_glob(b"*a*a*a*a*a*b")
    started = time.perf_counter()
    match("a" * 60)
    # A linear matcher takes microseconds; the backtracking regex takes 0.07 s on 50
    # bytes and grows as n**5 (165 s on 200 bytes).  20 ms sits between.
    return time.perf_counter() - started > 0.02


_STARS = re.compile(rb"(\*[^*\r\n]*){3,}")


def _many_stars(data: bytes) -> bool:
    return _STARS.search(data) is not None


@cache
def _config_unicode_digit() -> bool:
    from ..config import parse_config

    node = {"router": "tcp://127.0.0.1:1", "pub": "tcp://127.0.0.1:2"}
    try:
        parse_config({"nodes": {"\u00b2": node}}, "probe")
    except ValueError:
        return True
    except Exception:
        return False
    return False


def _non_ascii_digit(data: bytes) -> bool:
    if _not_utf8(data):
        return False  # that file fails earlier, as config-not-utf8
    return any(ch.isdigit() and not ch.isascii() for ch in data.decode("utf-8"))


@cache
def _config_not_utf8() -> bool:
    import tempfile
    from pathlib import Path

    from ..config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.toml"
        path.write_bytes(b'name = "\xff"\n')
        try:
            load_config(path)
        except UnicodeDecodeError:
            return True
        except Exception:
            return False
    return False


def _not_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


FINDINGS: tuple[Finding, ...] = (
    Finding("resp-array-alloc", "resp",
            "an array or bulk length is allocated by hiredis before any bound: "
            "*4294967295 raises MemoryError out of Session.receive (the node exits), "
            "*2147483648 takes 16 GiB of address space and ~4 s", _resp_array_alloc,
            _announces_big),
    Finding("resp-glob-backtrack", "resp",
            "a SCAN/KEYS MATCH glob with several '*' is a backtracking regex: '*a*a*a*a*a*b' "
            "against one 200-byte key took 165 s", _glob_backtracks, _many_stars),
    Finding("config-unicode-digit", "config",
            "a node id of Unicode digits ([nodes.\"\u00b2\"]) passes str.isdigit and int() "
            "raises ValueError out of load_config", _config_unicode_digit, _non_ascii_digit),
    Finding("config-not-utf8", "config",
            "a cluster file that is not UTF-8 raises UnicodeDecodeError out of load_config "
            "(tomllib's decode error is not a TOMLDecodeError)", _config_not_utf8, _not_utf8),
)


def open_finding(door: str, data: bytes) -> Finding | None:
    """The open finding ``data`` reaches on ``door``, if any is present."""
    for finding in FINDINGS:
        if finding.door == door and finding.matches(data):
            with contextlib.suppress(Exception):
                if finding.present():
                    return finding
    return None


__all__ = ["FINDINGS", "Finding", "open_finding"]
