"""Stand-ins for ttl-gc's names until that branch is merged (issue 21): this module goes
with that merge.  Without the collection protocol nothing sends ``Hold``, so the
oracle's collection checks simply see no collections."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

from ..config import Settings
from ..protocol import messages

#: ttl-spec 5's defaults, for the settings this main does not have yet.
DEFAULTS = {"gc_interval_s": 0.5, "gc_grace_s": 10.0, "max_message_age_s": 5.0,
            "max_clock_skew_s": 1.0}


class _Hold(NamedTuple):
    id: Any
    origin: int
    keys: tuple[tuple[str, int], ...]


class _Holding(NamedTuple):
    id: Any
    node: int
    ok: tuple[bool, ...]


#: Whether the nodes collect dead keys at all (the final checks expect it then).
COLLECTION = hasattr(messages, "Hold")
Hold: Any = getattr(messages, "Hold", _Hold)
Holding: Any = getattr(messages, "Holding", _Holding)


def setting(settings: Settings, name: str) -> float:
    return float(getattr(settings, name, DEFAULTS[name]))


def with_gc(settings: Settings, **changes: float) -> Settings:
    known = {k: v for k, v in changes.items() if hasattr(settings, k)}
    return dataclasses.replace(settings, **known)  # type: ignore[arg-type]
