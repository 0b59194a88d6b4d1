"""The batch-and-commit policy, sans I/O: which batch's changes are written when, and
when each batch's messages may leave.

The runtime (:class:`zcounter.runtime.committer.Pipeline`, whose commits run in a
thread) and the simulator (:mod:`zcounter.sim.cluster`, whose commits return at once)
both drive one :class:`CommitPolicy`: they hand it every batch's outputs and the time,
do what each :class:`Step` says - send its messages, then start writing its commit -
and call :meth:`CommitPolicy.completed` when that commit has returned.  The policy
reads no clock and touches no disk; ``now`` comes in, :meth:`CommitPolicy.deadline`
goes out.

Rules (why: :mod:`zcounter.runtime.committer`):

1. Persist before send: a batch's messages leave only once its changes, and those of
   every batch before it, are written.
2. At most one commit is in flight.  Batches that arrive meanwhile form the *waiting*
   group: their changes merged into one commit (:meth:`Persist.merge`: newest state
   wins), their messages held until it returns.  When the commit in flight returns,
   its messages go and the waiting group's commit starts at once (group commit).
3. A batch that acknowledges nothing (``sync`` false) with nothing ahead of it is not
   written at once: its messages go now, its changes are *deferred* until the next
   commit or until they have waited :data:`DEFER_S`, whichever comes first.
4. Deferred changes are older than anything waiting: they are written first, in the
   same commit, so newer states win.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .outputs import Message, Persist

#: Longest a batch of merged (not acknowledged) changes waits to be written.
DEFER_S = 0.05


@dataclass(slots=True)
class Group:
    """Batches that share one commit, and the messages they may send after it."""

    persist: Persist | None = None
    messages: list[Message] = field(default_factory=list)
    batches: int = 0

    def add(self, persist: Persist | None, messages: list[Message]) -> None:
        self.batches += 1
        self.messages += messages
        if persist is None:
            return
        if self.persist is None:
            self.persist = persist
        else:
            self.persist.merge(persist)

    def __bool__(self) -> bool:
        return self.batches > 0


@dataclass(frozen=True, slots=True)
class Step:
    """What the driver must do now: send ``send``, then start writing ``commit`` (if
    any) and call :meth:`CommitPolicy.completed` once it has returned."""

    send: list[Message]
    commit: Persist | None = None


class CommitPolicy:
    """The sequencing of commits and messages of one process (module docstring)."""

    __slots__ = ("deferred", "deferred_since", "in_flight", "waiting")

    def __init__(self) -> None:
        #: The group being committed, and the one collecting batches meanwhile.
        self.in_flight: Group | None = None
        self.waiting = Group()
        #: Changes of batches that acknowledged nothing, not written yet, and since when.
        self.deferred: Persist | None = None
        self.deferred_since = 0.0

    @property
    def idle(self) -> bool:
        """No commit in flight and no batch waiting for one (deferred changes aside)."""
        return self.in_flight is None and not self.waiting

    def submit(self, persist: Persist | None, messages: list[Message], now: float) -> Step:
        """One batch's outputs (rules 1-3)."""
        if persist is not None and not persist.sync and self.idle:
            # Nothing durable is pending ahead of it and it acknowledges nothing: its
            # messages go now, its write waits (rule 3).
            if self.deferred is None:
                self.deferred, self.deferred_since = persist, now
            else:
                self.deferred.merge(persist)
            return Step(messages)
        self.waiting.add(persist, messages)
        return self._advance()

    def commit_now(self, persist: Persist, messages: list[Message]) -> Persist:
        """Commit one batch at once (only when :attr:`idle`): what to write, the
        deferred changes first (rule 4).  Call :meth:`completed` once it is written."""
        assert self.idle
        group = Group()
        group.add(persist, messages)
        group = self._after_deferred(group)
        assert group.persist is not None
        self.in_flight = group
        return group.persist

    def completed(self) -> Step:
        """The commit in flight has returned: its messages, and the next commit."""
        group, self.in_flight = self.in_flight, None
        step = self._advance()
        if group is None or not group.messages:
            return step
        return Step(group.messages + step.send, step.commit)

    def deadline(self) -> float:
        """When the deferred changes must be written (inf if there are none)."""
        return self.deferred_since + DEFER_S if self.deferred is not None else float("inf")

    def tick(self, now: float) -> Step:
        """Write the deferred changes once they have waited :data:`DEFER_S`."""
        if self.deferred is not None and now >= self.deadline() and self.in_flight is None:
            return self._advance(force=True)
        return Step([])

    def flush(self) -> Step:
        """Write what waits, deferred changes too, as soon as nothing is in flight (at
        shutdown)."""
        return self._advance(force=True)

    def _after_deferred(self, group: Group) -> Group:
        """``group`` with the deferred changes ahead of it in one commit (rule 4)."""
        if self.deferred is None:
            return group
        merged = Group(self.deferred, batches=1)
        merged.add(group.persist, group.messages)
        self.deferred = None
        return merged

    def _advance(self, force: bool = False) -> Step:
        if self.in_flight is not None or not (self.waiting or force):
            return Step([])
        group, self.waiting = self._after_deferred(self.waiting), Group()
        if group.persist is None:
            return Step(group.messages)  # nothing to make durable, nothing before it pending
        self.in_flight = group
        return Step([], group.persist)
