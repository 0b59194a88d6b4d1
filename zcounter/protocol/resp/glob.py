"""Redis's glob patterns (``KEYS``, ``SCAN ... MATCH``), matched without backtracking.

The semantics are those of ``stringmatchlen`` in Redis's ``src/util.c``, on bytes:

* ``*`` any run of bytes, ``?`` one byte;
* ``[abc]`` one of, ``[^abc]`` none of, ``[a-z]`` a range (ends swapped when reversed),
  ``\\x`` inside a class the literal ``x``; a class left open at the end of the pattern
  ends there; ``[]`` matches nothing (and ``[^]`` any byte), as Redis's loop gives;
* ``\\x`` elsewhere the literal ``x``; a trailing lone backslash is a literal backslash.

Python's :mod:`fnmatch` differs on three of these (``[!...]`` instead of ``[^...]``, no
backslash escapes, whole code points instead of bytes), hence this module.  Keys are
matched as their UTF-8 bytes, so ``?`` is one byte, as in Redis.

How, and why so (issue 19): the first version translated the whole pattern into one
regular expression, ``*`` into ``.*``; Python's ``re`` backtracks, so seven ``*a`` against
a long key never returned (the loop thread stopped), and a 4 MB pattern took 9-38 s to
compile.  Here a pattern is cut at its stars into *segments*, each a fixed-length run of
one-byte atoms (a literal byte, ``?``, a class).  A key matches when the first segment
matches at its start, the last at its end, and the middle ones occur in order between
them; placing each middle segment at its leftmost occurrence is always right (a later
place only leaves less room for the rest), so nothing is ever retried.  A segment of
literal bytes is found with ``bytes.find``; one with ``?`` or classes with a regular
expression of single-byte atoms and no repetition or alternation, which cannot backtrack:
its search costs at most (key length x segment length) steps, in C.  Whole-key work is
so O(len(key) x len(pattern)) at worst, and a pattern whose fixed part is longer than
any key (256 bytes) matches nothing without looking.

:func:`literal_prefix` gives the part of a pattern before its first wildcard: the door
lists only keys under that prefix (the keyspace keeps keys sorted), so ``KEYS user:*``
walks the ``user:`` keys, not the whole keyspace.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

from ..messages import MAX_KEY_BYTES

Matcher = Callable[[str], bool]

_SPECIAL = b"*?[\\"
_STAR = ord("*")


class _Segment:
    """A fixed-length run of one-byte atoms: literal bytes, or a star-free regex."""

    __slots__ = ("find", "literal", "size", "starts")

    def __init__(self, atoms: list[bytes | None], literal: bytes) -> None:
        self.size = len(atoms)
        self.literal = all(a is None for a in atoms)
        if self.literal:
            lit = literal

            def find(key: bytes, start: int, end: int) -> int:
                return key.find(lit, start, end)

            def starts(key: bytes, at: int) -> bool:
                return key.startswith(lit, at)
        else:
            regex = re.compile(b"".join(re.escape(literal[i:i + 1]) if a is None else a
                                        for i, a in enumerate(atoms)), re.DOTALL)
            search, match = regex.search, regex.match

            def find(key: bytes, start: int, end: int) -> int:
                found = search(key, start, end)
                return -1 if found is None else found.start()

            def starts(key: bytes, at: int) -> bool:
                return match(key, at) is not None
        self.find = find
        self.starts = starts


@lru_cache(maxsize=256)
def is_slow(pattern: bytes) -> bool:
    """Whether ``pattern`` has a middle segment with ``?`` or a class: the only case
    where one key costs more than a ``bytes.find`` per segment.  Measured on the
    project's 2-core machine (10,000 matches of a 256-byte key of ``a``): ``*`` + 127
    ``?`` + ``b*`` costs 43 us a key, sre trying each start; every other shape tried
    stayed under 2.2 us (seven ``*a`` then ``b``: 1.0 us; 1 KiB of ``[^b]``: 2.2 us), so
    the door lists fewer keys per page for slow patterns (``RESP_MAX_SLOW_MATCH_PAGE``)."""
    segments, stars = _segments(pattern)
    return stars and any(not s.literal for s in segments[1:-1])


@lru_cache(maxsize=256)
def compile_glob(pattern: bytes) -> Matcher:
    """A predicate on keys (str): True when the key's UTF-8 matches ``pattern``."""
    segments, stars = _segments(pattern)
    if not stars:
        (only,) = segments
        if only.size > MAX_KEY_BYTES:
            return _never

        def exact(key: str) -> bool:
            raw = key.encode("utf-8")
            return len(raw) == only.size and only.starts(raw, 0)
        return exact
    first, middle, last = segments[0], segments[1:-1], segments[-1]
    fixed = sum(s.size for s in segments)
    if fixed > MAX_KEY_BYTES:
        return _never
    if fixed == 0:
        return _always

    def match(key: str) -> bool:
        raw = key.encode("utf-8")
        n = len(raw)
        if n < fixed:
            return False
        end = n - last.size
        if not first.starts(raw, 0) or not last.starts(raw, end):
            return False
        at = first.size
        for segment in middle:
            found = segment.find(raw, at, end)
            if found < 0:
                return False
            at = found + segment.size
        return True
    return match


def _always(key: str) -> bool:
    return True


def _never(key: str) -> bool:
    return False


def _segments(pattern: bytes) -> tuple[list[_Segment], bool]:
    """The pattern cut at its stars (runs of stars count as one), and whether it had any."""
    segments: list[_Segment] = []
    atoms: list[bytes | None] = []  # None: the literal byte at the same index
    literal = bytearray()
    stars = False
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == _STAR:
            stars = True
            segments.append(_Segment(atoms, bytes(literal)))
            atoms, literal = [], bytearray()
            while i + 1 < n and pattern[i + 1] == _STAR:
                i += 1
        elif c == ord("?"):
            atoms.append(b".")
            literal.append(0)
        elif c == ord("["):
            i, part = _class(pattern, i + 1)
            atoms.append(part)
            literal.append(0)
        else:
            if c == ord("\\") and i + 1 < n:
                i += 1
            atoms.append(None)
            literal.append(pattern[i])
        i += 1
    segments.append(_Segment(atoms, bytes(literal)))
    return segments, stars


def _class(pattern: bytes, i: int) -> tuple[int, bytes]:
    """Translate a class starting after its ``[``; returns the index of its last byte
    (the ``]``, or the pattern's last byte when it is left open) and a one-byte regex."""
    n = len(pattern)
    negate = i < n and pattern[i] == ord("^")
    if negate:
        i += 1
    items: list[bytes] = []
    while i < n and pattern[i] != ord("]"):
        c = pattern[i]
        if c == ord("\\") and i + 1 < n:
            i += 1
            items.append(re.escape(pattern[i:i + 1]))
        elif i + 2 < n and pattern[i + 1] == ord("-"):
            lo, hi = sorted((pattern[i], pattern[i + 2]))
            items.append(re.escape(bytes([lo])) + b"-" + re.escape(bytes([hi])))
            i += 2
        else:
            items.append(re.escape(pattern[i:i + 1]))
        i += 1
    end = i if i < n else n - 1
    if not items:
        return end, b"." if negate else b"(?!)"
    return end, b"[" + (b"^" if negate else b"") + b"".join(items) + b"]"


def literal_prefix(pattern: bytes) -> str:
    """The longest prefix every matching key starts with (as text; "" if none)."""
    cut = len(pattern)
    for special in _SPECIAL:
        at = pattern.find(bytes([special]))
        if at != -1:
            cut = min(cut, at)
    prefix = pattern[:cut]
    # Stop at a whole character: a key is text, its prefix must be too.
    while prefix:
        try:
            return prefix.decode("utf-8")
        except UnicodeDecodeError:
            prefix = prefix[:-1]
    return ""


__all__ = ["Matcher", "compile_glob", "is_slow", "literal_prefix"]
