"""Bugs the fuzzers found that are still open, each with a cheap check of whether it is.

Hypothesis tests skip an input that reaches a bug listed here *while it is present*
(``present()`` is measured, not declared), so the suite stays green on a branch without
the fix and starts testing those inputs the moment the fix lands; ``bin/fuzz`` still
reports every such crash, labelled with its finding.  Each is kept as a regression case
under ``tests/regressions/`` too.  A finding stays listed only while it is open:
``tests/fuzz/test_targets.py`` fails once a listed one is no longer present, so a fixed
bug cannot stay skipped and come back unnoticed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    name: str
    door: str
    what: str
    present: Callable[[], bool]
    matches: Callable[[bytes], bool]


#: Open findings.  Empty: the four the first runs found (a RESP array header allocated
#: before any bound, the backtracking MATCH glob, a Unicode-digit node id, a cluster file
#: that is not UTF-8) are fixed, and their inputs are tested in full
#: (tests/regressions/, and the Hypothesis targets no longer skip them).
FINDINGS: tuple[Finding, ...] = ()


def open_finding(door: str, data: bytes) -> Finding | None:
    """The open finding ``data`` reaches on ``door``, if any is present."""
    for finding in FINDINGS:
        if finding.door == door and finding.matches(data):
            with contextlib.suppress(Exception):
                if finding.present():
                    return finding
    return None


__all__ = ["FINDINGS", "Finding", "open_finding"]
