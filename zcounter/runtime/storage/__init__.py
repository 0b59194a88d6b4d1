"""Durable node state: an append-only log of batches plus a SQLite checkpoint.

The write path (every batch, on the request path): the batch's changes go to the log
(:mod:`.log`) as one record - ``fdatasync``ed when the batch acknowledges something only
this node vouches for (its own updates, or a merge it confirms as durable), only written
(page cache: survives a process crash) when it merely holds what peers hold durably.

Off the request path: when the log moves to a new segment, or once
:data:`HANDOVER_KEYS` keys changed, every key changed since the previous checkpoint is
handed to a checkpointer thread, which writes it into SQLite
(:mod:`.checkpoint`) in one durable transaction that records the LSN it reaches, then
deletes the segments it covers.  SQLite and ``os.fdatasync`` release the GIL, so this
overlaps with the node's loop.  Hand-overs that arrive while the previous one is still
being written are merged into one (newest state of each key wins), so a slow disk
delays checkpoints but never queues unbounded work.

Recovery (at open): load the checkpoint, replay every valid log record after its LSN
(a torn or unflushed tail is ignored: see :mod:`.log`), write the result as a new
checkpoint, delete the old segments, and start a fresh segment.

The on-disk layout of a data directory: ``zcounter.sqlite3`` (and its ``-wal``/``-shm``),
``wal-NNNNNNNN.log`` segments of ``SEGMENT_SIZE`` bytes (at most the current one, one
pre-created spare and those still being checkpointed) and ``wal-reuse.log``, a
checkpointed segment kept to become the next one (:mod:`.log`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import ConfigError, ZCounterError
from ...model.records import is_old_form, upgrade
from ...protocol.messages import RidEntry
from ...protocol.outputs import Persist
from . import records
from .checkpoint import DB_NAME, Checkpoint
from .fileio import Files, OsFiles
from .log import LogError, SegmentLog

#: Largest log segment.  Small enough that a data directory at a million keys stays far
#: under 300 MB (SQLite ~150 MB + at most ~3 segments), large enough that checkpoints
#: are rare (one per ~200,000 key changes).  Segments start at FIRST_SEGMENT_SIZE and
#: double at each rotation.
SEGMENT_SIZE = 32 * 1024 * 1024
FIRST_SEGMENT_SIZE = 1024 * 1024
#: Changes are also handed to the checkpointer once this many keys changed, not only
#: when the log moves to a new segment (a full one holds ~250,000 changed keys of three
#: slots).  What is handed over stays in memory until written, beside what accumulates
#: meanwhile: filling a million keys of three slots, the peak RSS (VmHWM) of a node was
#: 383-384 MiB with hand-overs per segment and 329-330 MiB with this bound
#: (docs/measurements/fill_rss.py, same hour; WRITEUP.md section 2.3), against a 400 MB
#: (381.5 MiB) target.
HANDOVER_KEYS = 65_536

__all__ = ["DB_NAME", "SEGMENT_SIZE", "LogError", "Storage", "StorageError"]


class StorageError(ZCounterError):
    """Durable storage failed; the node must stop without acknowledging anything more."""


@dataclass(slots=True)
class _Changes:
    """Everything changed since the last checkpoint hand-over (the next checkpoint)."""

    #: key -> packed state, or None: the key was collected (a DELETE).
    states: dict[str, bytes | None] = field(default_factory=dict)
    slots: list[tuple[int, str]] = field(default_factory=list)
    high_water: tuple[int, int] | None = None
    #: rid -> entry (learned) or None (forgotten), in log order.
    rids: dict[str, RidEntry | None] = field(default_factory=dict)
    lsn: int = 0
    #: Segments below this number are covered once this is checkpointed.
    segment: int = 0

    def add(self, persist: Persist) -> None:
        for key in persist.removed:
            self.states[key] = None
        self.states.update(persist.states)
        self.slots += persist.slots
        if persist.high_water is not None:
            self.high_water = persist.high_water
        rids = self.rids
        for entry in persist.rids:
            rids.pop(entry[0], None)  # re-inserted at the end: log order
            rids[entry[0]] = entry
        for rid in persist.forget:
            rids.pop(rid, None)
            rids[rid] = None

    def absorb(self, later: _Changes) -> None:
        self.states.update(later.states)
        self.slots += later.slots
        if later.high_water is not None:
            self.high_water = later.high_water
        for rid, entry in later.rids.items():
            self.rids.pop(rid, None)
            self.rids[rid] = entry
        self.lsn, self.segment = later.lsn, later.segment

    def __bool__(self) -> bool:
        return bool(self.states or self.slots or self.rids or self.high_water is not None)


class _Checkpointer:
    """The background thread that writes checkpoints and deletes covered segments."""

    def __init__(self, checkpoint: Checkpoint, log: SegmentLog, background: bool,
                 lag: int = 0) -> None:
        self._checkpoint = checkpoint
        self._log = log
        self._cond = threading.Condition()
        self._pending: _Changes | None = None
        self._busy = False
        self._stop = False
        self.error: BaseException | None = None
        self.written = 0
        #: Without a thread (the crash tests: every step at a known point), a checkpoint
        #: is written by :meth:`step` once ``lag`` more commits have started, which is
        #: how far a background checkpoint may trail the log.
        self._lag = lag
        self._countdown = 0
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name="zcounter-checkpoint",
                                            daemon=True)
            self._thread.start()

    def _write(self, changes: _Changes) -> None:
        self._checkpoint.write(changes.lsn, changes.slots, changes.states, changes.rids,
                               changes.high_water)
        self._log.delete_before(changes.segment)
        self.written += 1

    def step(self) -> None:
        """Without a thread: write the pending checkpoint once its lag has passed."""
        if self._thread is None and self._pending is not None:
            if self._countdown <= 0:
                changes, self._pending = self._pending, None
                self._write(changes)
            else:
                self._countdown -= 1

    def submit(self, changes: _Changes) -> None:
        if self._thread is None:
            if self._pending is None:
                self._pending, self._countdown = changes, self._lag
            else:
                self._pending.absorb(changes)
            self.step()
            return
        with self._cond:
            if self._pending is None:
                self._pending = changes
            else:
                self._pending.absorb(changes)
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stop:
                    self._cond.wait()
                if self._pending is None:
                    return
                changes, self._pending = self._pending, None
                self._busy = True
            try:
                self._write(changes)
            except BaseException as exc:  # reported to the main thread at its next commit
                self.error = exc
                return
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def drain(self, timeout_s: float) -> bool:
        """Wait until nothing is pending or being written; False on timeout."""
        if self._thread is None:
            self._countdown = 0
            self.step()
            return True
        with self._cond:
            return self._cond.wait_for(
                lambda: (self._pending is None and not self._busy) or self.error is not None,
                timeout_s)

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()


class Storage:
    """One node's durable state.  Use :meth:`open`; one instance per process."""

    def __init__(self, checkpoint: Checkpoint, log: SegmentLog, data_dir: Path,
                 recovered: int, background: bool, lag: int,
                 recovered_keys: list[str], handover_keys: int = HANDOVER_KEYS) -> None:
        self._checkpoint = checkpoint
        self._log = log
        self.data_dir = data_dir
        self.path = checkpoint.path
        self.incarnation = checkpoint.incarnation
        #: True when this run created the database (first start, or a wiped directory).
        self.created = checkpoint.created
        self._changes = _Changes()
        self._segment = log.current_number
        self._handover_keys = handover_keys
        self._checkpointer = _Checkpointer(checkpoint, log, background, lag)
        #: Log records replayed at open (what the last run wrote after its checkpoint),
        #: and the keys they changed (to publish again: see NodeCore's ``republish``).
        self.recovered_records = recovered
        self.recovered_keys = recovered_keys

    @classmethod
    def open(cls, data_dir: Path, node_id: int, files: Files | None = None,
             segment_size: int = SEGMENT_SIZE, background: bool = True,
             lag: int = 0, handover_keys: int = HANDOVER_KEYS) -> Storage:
        """Open (creating, upgrading or recovering) the storage under ``data_dir``.

        ``files``, ``background``, ``lag`` and ``handover_keys`` are for the crash
        tests: a simulated disk, no threads, checkpoints written ``lag`` commits after
        they are due, and hand-overs after fewer keys."""
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"data directory {data_dir}: cannot create ({exc.strerror})") from None
        if not os.access(data_dir, os.W_OK):
            raise ConfigError(f"data directory {data_dir}: not writable")
        checkpoint = Checkpoint.open(data_dir, node_id)
        log = SegmentLog(str(data_dir), files or OsFiles(), segment_size, background,
                         min(FIRST_SEGMENT_SIZE, segment_size))
        return cls.recover(checkpoint, log, data_dir, background, lag, handover_keys)

    @classmethod
    def recover(cls, checkpoint: Checkpoint, log: SegmentLog, data_dir: Path,
                background: bool = True, lag: int = 0,
                handover_keys: int = HANDOVER_KEYS) -> Storage:
        """Recovery (module docstring) from an open checkpoint and a log not yet started:
        what :meth:`open` does once the directory is checked, and what the simulator
        (:mod:`zcounter.sim.disk`) runs over its in-memory database and simulated files."""
        replayed = _Changes()
        count = 0
        for lsn, payload in log.recover(checkpoint.lsn):
            replayed.add(records.decode(payload))
            replayed.lsn = lsn
            count += 1
        if replayed:
            # Fold the replayed tail into the checkpoint now: from here on the log
            # starts empty, and the checkpoint holds everything recovered.  A 0.2 log's
            # states are converted on the way (issue 21's packed form).
            states = {k: upgrade(v) if v is not None and is_old_form(v) else v
                      for k, v in replayed.states.items()}
            checkpoint.write(replayed.lsn, replayed.slots, states, replayed.rids,
                             replayed.high_water)
        log.start()
        log.delete_before(log.current_number)
        return cls(checkpoint, log, data_dir, count, background, lag,
                   [k for k, v in replayed.states.items() if v is not None], handover_keys)

    # ------------------------------------------------------------------ loading

    def load_slot_names(self) -> list[str]:
        return self._checkpoint.slot_names()

    def load_states(self) -> Iterator[tuple[str, bytes]]:
        return self._checkpoint.states()

    def load_high_water(self) -> tuple[int, int]:
        return self._checkpoint.high_water()

    def load_rids(self) -> list[RidEntry]:
        return self._checkpoint.rids()

    # ------------------------------------------------------------------ writing

    def commit(self, persist: Persist) -> None:
        """Make one batch's changes durable (``persist.sync``) or at least written.

        Raises :class:`StorageError` if the log cannot be written or a checkpoint failed;
        the caller must stop without sending anything of the batch.
        """
        checkpointer = self._checkpointer
        if checkpointer.error is not None:
            raise StorageError(f"checkpoint into {self.path} failed: {checkpointer.error}")
        checkpointer.step()
        log = self._log
        try:
            if (persist.states or persist.slots or persist.rids or persist.forget
                    or persist.removed or persist.high_water is not None):
                self._changes.lsn = log.append(records.encode(persist), persist.sync)
                self._changes.add(persist)
            elif persist.sync:
                log.flush()
        except LogError as exc:
            raise StorageError(str(exc)) from exc
        if (log.current_number != self._segment
                or len(self._changes.states) >= self._handover_keys):
            # The log moved on, or enough changed: checkpoint everything up to here, off
            # the request path.  (Segments below the current one are covered either way.)
            self._segment = log.current_number
            changes, self._changes = self._changes, _Changes()
            changes.segment = self._segment
            self._checkpointer.submit(changes)

    def size_bytes(self) -> int:
        """Bytes on disk under the data directory."""
        total = 0
        for entry in os.scandir(self.data_dir):
            # A file may go between the listing and its stat: the log's next segment is
            # written as ``.tmp`` and renamed by a background thread, and old segments
            # are deleted after a checkpoint (a CI run failed on exactly that:
            # FileNotFoundError for wal-00000014.log.tmp).
            try:
                if entry.is_file():
                    total += entry.stat().st_size
            except FileNotFoundError:
                continue
        return total

    def close(self, checkpoint_timeout_s: float = 10.0) -> None:
        """Stop; the last batch is already in the log.  A final checkpoint (bounded in
        time) makes the next start quicker; without it the log is replayed."""
        if self._changes and self._checkpointer.error is None:
            changes, self._changes = self._changes, _Changes()
            changes.segment = self._log.current_number
            self._checkpointer.submit(changes)
        self._checkpointer.drain(checkpoint_timeout_s)
        self._checkpointer.stop()
        self._log.close()
        self._checkpoint.close()
