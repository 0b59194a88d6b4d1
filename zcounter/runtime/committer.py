"""Group commit with the flush overlapped: batch k is made durable in a thread while the
node's loop reads and applies batch k+1.

The loop hands a batch's :class:`~zcounter.protocol.outputs.Persist` and its messages to
:class:`Pipeline`.  At most one commit is in flight.  Batches that arrive while it runs
are *merged* into the next group (their states by key, newest wins; everything else
appended), and their messages wait: nothing a batch sends may leave before that batch
and every earlier one are durable, because a reply or a delta reveals state.  When the
in-flight commit returns, its messages go out and the waiting group starts its commit
at once.  This is how PostgreSQL, etcd and Kafka get group commit under pipelined load.
Which batch is written when, and which messages may leave, is decided by the pure
:class:`~zcounter.protocol.commit.CommitPolicy` (the simulator drives the same one); this
module only runs its commits, in a thread or in the loop.

The thread spends its time in ``os.pwrite``/``os.fdatasync``, which release the GIL.
Coming back from them it needs the GIL again, which a busy loop thread holds for up to
``sys.getswitchinterval()`` (5 ms by default: measured here as ~5.8 ms added to every
commit while another thread ran Python, docs/measurements/storage_engines.py); the node lowers the
switch interval (:data:`SWITCH_INTERVAL_S`) so the flush's completion is noticed promptly.

Completion wakes the loop through a pipe whose read end is in the loop's poller.  When
nothing is in flight and no input is waiting, the loop commits the batch itself
(:meth:`Pipeline.commit_here`): with nothing to overlap, the hand-off only costs.

Batches that only hold what peers hold durably (merged deltas, repairs: ``sync`` is
false) are not written at once when nothing is ahead of them: their messages go out
immediately and their changes wait in :attr:`Pipeline.deferred` until the next commit
or ``DEFER_S``, whichever comes first.  A process crash may then lose up to ``DEFER_S``
of merged state, which the restarted node repairs from the peers that hold it durably
(exactly what a power loss may already lose of such writes).  Why: on this machine every
small write by a peer made the acknowledging node's fdatasync slower (p50 0.21 -> 0.42
ms, p90 0.97 -> 2.9 ms with two processes writing to the page cache of the same file
system; a one-off script), and at window 1 a peer writes once per acknowledged increment.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from ..protocol.commit import DEFER_S, CommitPolicy, Step
from ..protocol.outputs import Message, Persist
from .storage import Storage

__all__ = ["DEFER_S", "SWITCH_INTERVAL_S", "Pipeline"]

#: Switch interval while a committer thread runs (see the module docstring).
SWITCH_INTERVAL_S = 0.0002


class Pipeline:
    """Owns the committer thread.  Used by the loop thread only (except the thread)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._todo: Persist | None = None
        self._stop = False
        #: What is written when, and which messages may go (the pure rules).
        self.policy = CommitPolicy()
        self.error: BaseException | None = None
        self.commits = 0
        #: Called in the loop thread with each commit's duration in seconds, the flush
        #: included (metrics); measured by the committer thread around ``commit``.
        self.on_commit: Callable[[float], None] | None = None
        self._duration = 0.0
        self._thread = threading.Thread(target=self._run, name="zcounter-commit", daemon=True)
        self._thread.start()

    @property
    def wake_fd(self) -> int:
        """Readable when a commit has finished (register it with the poller)."""
        return self._read_fd

    @property
    def deferred(self) -> Persist | None:
        """Changes of batches that acknowledged nothing, not written yet."""
        return self.policy.deferred

    def _run(self) -> None:
        while True:
            with self._work:
                while self._todo is None and not self._stop:
                    self._work.wait()
                if self._todo is None:
                    return
                persist = self._todo
            started = time.perf_counter()
            try:
                self.storage.commit(persist)
            except BaseException as exc:  # reported to the loop: it stops the node
                self.error = exc
            # Read by the loop after the wake-up byte below (the pipe orders them).
            self._duration = time.perf_counter() - started
            with self._work:
                self._todo = None
            os.write(self._write_fd, b"x")
            if self.error is not None:
                return

    def submit(self, persist: Persist | None, messages: list[Message],
               now: float = 0.0) -> list[Message]:
        """One batch's outputs.  Returns the messages that may be sent now (none while a
        commit is in flight or this batch must be committed first)."""
        return self._start(self.policy.submit(persist, messages, now))

    @property
    def idle(self) -> bool:
        return self.policy.idle

    def commit_here(self, persist: Persist, messages: list[Message]) -> list[Message]:
        """Commit one batch in the calling (loop) thread and return its messages.

        For when nothing is in flight and no input waits to be read: there is then
        nothing to overlap the flush with, and handing it to the thread costs two thread
        wake-ups and a pipe round trip.  Measured on this machine (docs/measurements/load.py,
        3 nodes, quiet): window 1 went from 860 to 1,025 incr/s (node CPU 680 -> 480
        us/incr), window 16 from 5.7k to 11.1k (128 -> 58 us), window 256 from 33k to
        41k.  Deferred changes are written first, in the same commit."""
        policy = self.policy
        written = policy.commit_now(persist, messages)
        started = time.perf_counter()
        self.storage.commit(written)
        self._counted(time.perf_counter() - started)
        step = policy.completed()
        assert step.commit is None  # nothing was waiting: the policy was idle
        return step.send

    def _counted(self, seconds: float) -> None:
        """One commit done (in either thread), ``seconds`` long, flush included."""
        self.commits += 1
        if self.on_commit is not None:
            self.on_commit(seconds)

    def deadline(self) -> float:
        """When the deferred changes must be written (inf if there are none)."""
        return self.policy.deadline()

    def tick(self, now: float) -> None:
        """Write the deferred changes once they have waited ``DEFER_S``."""
        self._start(self.policy.tick(now))

    def _start(self, step: Step) -> list[Message]:
        """Hand ``step``'s commit (if any) to the thread; its messages to send now."""
        if step.commit is not None:
            with self._work:
                self._todo = step.commit
                self._work.notify()
        return step.send

    def completed(self) -> list[Message]:
        """Call when :attr:`wake_fd` is readable: the messages that may go out now.
        Raises the commit's error, if it failed."""
        try:
            os.read(self._read_fd, 64)
        except BlockingIOError:
            return []
        if self.error is not None:
            raise self.error
        self._counted(self._duration)
        return self._start(self.policy.completed())

    def drain(self) -> list[Message]:
        """At shutdown: write everything (deferred changes too), wait for every commit;
        the messages they release."""
        out: list[Message] = []
        policy = self.policy
        while policy.in_flight is not None or policy.deferred is not None:
            if policy.in_flight is None:
                out += self._start(policy.flush())
                continue
            os.set_blocking(self._read_fd, True)
            out += self.completed()
            os.set_blocking(self._read_fd, False)
        return out

    def close(self) -> None:
        with self._work:
            self._stop = True
            self._work.notify()
        self._thread.join()
        os.close(self._read_fd)
        os.close(self._write_fd)
