"""A progress display on stderr while the benchmark runs (tqdm when installed)."""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Callable
from typing import Any

#: What load loops call with the number of operations done since their last call.
Tick = Callable[[int], None]


def no_progress(n: int) -> None:
    """A :data:`Tick` that shows nothing."""


class Progress:
    """One bar at a time: tqdm when installed, else one rewritten line; silent when
    disabled (stderr not a terminal, or ``--no-progress``)."""

    def __init__(self, enabled: bool, notes: bool | None = None) -> None:
        self.enabled = enabled
        #: Phase notes go to stderr also when it is not a terminal (a log file).
        self.notes = enabled if notes is None else notes
        self._bar: Any = None
        self._label = ""
        self._total = 0
        self._done = 0
        self._last = 0.0
        try:
            self._tqdm: Any = importlib.import_module("tqdm").tqdm
        except ImportError:
            self._tqdm = None

    def start(self, label: str, total: int) -> None:
        self.close()
        self._label, self._total, self._done = label, total, 0
        if self.enabled and self._tqdm is not None:
            self._bar = self._tqdm(total=total, desc=label, unit="op", unit_scale=True,
                                   leave=False, file=sys.stderr, mininterval=0.25)
        else:
            self._show(force=True)

    def update(self, n: int) -> None:
        self._done += n
        if self._bar is not None:
            self._bar.update(n)
        else:
            self._show()

    def _show(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < 0.25):
            return
        self._last = now
        sys.stderr.write(f"\r\033[K{self._label}: {self._done}/{self._total}")
        sys.stderr.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and self._label:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
        self._label = ""

    def note(self, text: str) -> None:
        """A line that stays (a phase starting, a figure worth seeing early)."""
        if self.notes:
            self.close()
            sys.stderr.write(f"[bench] {text}\n")
            sys.stderr.flush()
