"""The storage model: what a node's storage (:mod:`zcounter.runtime.storage`) holds -
exactly the committed batches, nothing else.

An :class:`Image` is what a starting node loads: the slot table (index order), one
packed state per key, and the request-id window in insertion order.  The runtime
appends each batch to its log as one record, ``fdatasync``ed when ``persist.sync`` asks
for it and only written (page cache) otherwise; recovery replays every whole record and
ignores a torn tail.  So a :class:`Disk` keeps two images:

* ``current``: every committed batch.  It survives a process crash, which is what the
  ``clean``, ``torn`` and ``midbatch`` crash modes are (they differ in what the process
  did before dying, see :mod:`.cluster`);
* ``durable``: every batch up to the last one committed with ``sync``.  An fsync makes
  every earlier write of the log durable too, so ``durable`` is ``current`` minus the
  unsynced tail, and a ``power`` loss rolls ``current`` back to it.

A *wipe* replaces the whole disk by a new one with a new incarnation (see
:meth:`Disk.__init__`): the next start finds fresh storage.

A batch that acknowledged nothing (``sync`` false) reaches the disk later, like the
runtime's commit pipeline defers it (:mod:`zcounter.runtime.committer`): the cluster
(:mod:`.cluster`) holds it in ``SimNode.deferred`` until the next acknowledging batch or
``DEFER_S``, and a crash of any kind loses it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from ..model.hashtree import key_digest, record_hash
from ..model.keyspace import unpack
from ..model.pncounter import Record
from ..protocol.messages import RidEntry
from ..protocol.outputs import Persist
from .oracle import SimFailure

State = dict[str, dict[str, Record]]


@dataclass
class Image:
    slot_names: list[str] = field(default_factory=list)
    #: Reverse of ``slot_names`` (the table's UNIQUE constraint on names).
    slot_index: dict[str, int] = field(default_factory=dict)
    states: dict[str, bytes] = field(default_factory=dict)
    #: rid -> (key, target), in insertion (rowid) order.
    rids: dict[str, tuple[str, dict[str, Record]]] = field(default_factory=dict)
    #: XOR of every stored record's hash: the root of the hash tree a node loading this
    #: image builds (:mod:`zcounter.model.hashtree`), kept up to date per commit so that
    #: "memory equals disk" costs one comparison per batch.
    root: int = 0

    def apply(self, persist: Persist) -> None:
        """One committed batch, as recovery replays it into the checkpoint's tables."""
        names, index = self.slot_names, self.slot_index
        for idx, name in persist.slots:
            # The checkpoint's INSERT OR IGNORE on (idx PRIMARY KEY, name UNIQUE): a clash
            # would be ignored silently and leave states pointing at the wrong slot.
            if idx == len(names) and name not in index:
                names.append(name)
                index[name] = idx
            elif idx >= len(names) or names[idx] != name:
                raise SimFailure(f"slot table clash: ({idx}, {name!r}) against "
                                 f"{names[idx] if idx < len(names) else 'a hole'}")
        for key, packed in persist.states.items():
            old = self.states.get(key)
            self.states[key] = packed
            self.root ^= self._hash(key, old) ^ self._hash(key, packed)
        rids = self.rids
        for rid, key, target in persist.rids:
            if rid not in rids:
                rids[rid] = (key, target)
        for rid in persist.forget:
            rids.pop(rid, None)

    def _hash(self, key: str, packed: bytes | None) -> int:
        if not packed:
            return 0
        digest = key_digest(key.encode())
        names = self.slot_names
        h = 0
        for s, rec in unpack(packed).items():
            h ^= record_hash(digest, names[s].encode(), rec)
        return h

    def copy(self) -> Image:
        return Image(list(self.slot_names), dict(self.slot_index), dict(self.states),
                     dict(self.rids), self.root)

    def state(self, key: str) -> dict[str, Record]:
        """The stored state of ``key`` by slot name ({} if none)."""
        packed = self.states.get(key)
        if packed is None:
            return {}
        names = self.slot_names
        return {names[s]: (r[0], r[1], r[2], r[3]) for s, r in unpack(packed).items()}

    def all_states(self) -> State:
        return {key: self.state(key) for key in sorted(self.states)}

    def rid_entries(self) -> list[RidEntry]:
        return [(rid, key, target) for rid, (key, target) in self.rids.items()]


class Disk:
    """One node's database over its lifetime (until a wipe replaces it)."""

    def __init__(self, incarnation: str) -> None:
        #: Drawn when the storage is created (Storage.open): a wiped node's new slot.
        self.incarnation = incarnation
        #: True until the first start opens it (Storage.created).
        self.fresh = True
        self.current = Image()
        self.durable = Image()
        self._tail: list[Persist] = []
        self.commits = 0

    def commit(self, persist: Persist) -> None:
        self.commits += 1
        self.current.apply(persist)
        if persist.sync:
            for earlier in self._tail:
                self.durable.apply(earlier)
            self._tail.clear()
            self.durable.apply(persist)
        else:
            self._tail.append(persist)

    def power_loss(self) -> None:
        """Commits since the last fsync are gone."""
        if self._tail:
            self._tail.clear()
            self.current = self.durable.copy()

    def load(self) -> tuple[list[str], Iterator[tuple[str, bytes]], list[RidEntry]]:
        """What a starting node reads: slot names, (key, packed) rows, request ids."""
        image = self.current
        return list(image.slot_names), iter(list(image.states.items())), image.rid_entries()
