"""Redis's glob patterns (``KEYS``, ``SCAN ... MATCH``), compiled to a regular expression.

The semantics are those of ``stringmatchlen`` in Redis's ``src/util.c``, on bytes:

* ``*`` any run of bytes, ``?`` one byte;
* ``[abc]`` one of, ``[^abc]`` none of, ``[a-z]`` a range (ends swapped when reversed),
  ``\\x`` inside a class the literal ``x``; a class left open at the end of the pattern
  ends there; ``[]`` matches nothing (and ``[^]`` any byte), as Redis's loop gives;
* ``\\x`` elsewhere the literal ``x``; a trailing lone backslash is a literal backslash.

Python's :mod:`fnmatch` differs on three of these (``[!...]`` instead of ``[^...]``, no
backslash escapes, whole code points instead of bytes), hence this translation.  Keys are
matched as their UTF-8 bytes, so ``?`` is one byte, as in Redis.

:func:`literal_prefix` gives the part of a pattern before its first wildcard: the door
lists only keys under that prefix (the keyspace keeps keys sorted), so ``KEYS user:*``
walks the ``user:`` keys, not the whole keyspace.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

Matcher = Callable[[str], bool]

_SPECIAL = b"*?[\\"


@lru_cache(maxsize=256)
def compile_glob(pattern: bytes) -> Matcher:
    """A predicate on keys (str): True when the key's UTF-8 matches ``pattern``."""
    if pattern == b"*":
        return _always
    regex = re.compile(_translate(pattern), re.DOTALL)
    fullmatch = regex.fullmatch

    def match(key: str) -> bool:
        return fullmatch(key.encode("utf-8")) is not None
    return match


def _always(key: str) -> bool:
    return True


def _translate(pattern: bytes) -> bytes:
    out: list[bytes] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == ord("*"):
            while i + 1 < n and pattern[i + 1] == ord("*"):
                i += 1
            out.append(b".*")
        elif c == ord("?"):
            out.append(b".")
        elif c == ord("["):
            i, part = _class(pattern, i + 1)
            out.append(part)
        elif c == ord("\\") and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i:i + 1]))
        else:
            out.append(re.escape(pattern[i:i + 1]))
        i += 1
    return b"".join(out)


def _class(pattern: bytes, i: int) -> tuple[int, bytes]:
    """Translate a class starting after its ``[``; returns the index of its last byte
    (the ``]``, or the pattern's last byte when it is left open) and the regex."""
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


__all__ = ["Matcher", "compile_glob", "literal_prefix"]
