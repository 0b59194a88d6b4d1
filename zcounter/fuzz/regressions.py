"""Crashing inputs kept as regression cases: ``tests/regressions/<door>/<sha>.bin``.

Each input is stored as the bytes the door received, named by the first 16 hex digits of
their SHA-256 (the same input found twice is kept once), with ``<sha>.txt`` beside it:
what it did, when, the seed, and the open finding it reaches if one is known.
``tests/fuzz/test_regressions.py`` replays every saved input against a fresh node.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

#: Where the cases live, relative to the repository root.
REGRESSIONS = Path(__file__).resolve().parents[2] / "tests" / "regressions"


def save(door: str, data: bytes, note: str, root: Path = REGRESSIONS) -> Path:
    """Keep ``data`` as a regression case of ``door``; returns its path."""
    from .known import open_finding

    sha = hashlib.sha256(data).hexdigest()[:16]
    directory = root / door
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{sha}.bin"
    if not path.exists():
        path.write_bytes(data)
        finding = open_finding(door, data)
        lines = [note, f"found: {time.strftime('%Y-%m-%d %H:%M:%S')}"]
        if finding is not None:
            lines.append(f"open finding: {finding.name} ({finding.what})")
        (directory / f"{sha}.txt").write_text("\n".join(lines) + "\n")
    return path


def cases(root: Path = REGRESSIONS) -> list[tuple[str, Path]]:
    """Every saved case: (door, path of its .bin)."""
    if not root.is_dir():
        return []
    return sorted((path.parent.name, path) for path in root.glob("*/*.bin"))


__all__ = ["REGRESSIONS", "cases", "save"]
