"""A node's storage in the simulator: the real :class:`~zcounter.runtime.storage.Storage`
- its log (:mod:`zcounter.runtime.storage.log`), checkpoints and recovery - over
simulated files (:mod:`.files`) and an in-memory SQLite checkpoint, beside the oracle's
model of what that storage must hold.

The storage is the production write path: each commit appends one record to the log,
``fdatasync``ed when ``persist.sync`` asks for it and only written (page cache)
otherwise; segments rotate (small ones here, so rotations, checkpoints and segment reuse
happen within a run) and checkpoints trail the log by a few commits, as the background
checkpointer may.  What a crash leaves is what the simulated files hold - a process crash
keeps their page cache, a power loss (:meth:`~.files.SimFiles.power_loss`) keeps only
what was flushed, a crash inside a commit tears its write (see :mod:`.cluster`) - and
what a restart loads is what the real recovery reads back from them.  The checkpoint's
transactions are atomic and durable (SQLite ``synchronous=FULL``): the in-memory
database survives every crash.

The model, an :class:`Image` (the slot table in index order, one packed state per key,
the request-id window in insertion order, and its hash-tree root), is what the oracle
judges against:

* ``current``: every committed batch - what a restart after a process crash must load;
* ``durable``: every batch up to the last one committed with ``sync``, at least what a
  restart after a power loss must load (an fsync makes every earlier write of the log
  durable too; a checkpoint may have made more durable).

After every crash the recovery is run at once (nothing touches a down node's disk until
it starts, so it reads exactly what the restart would) and must load the model's state
after some prefix of the commits: all of them after a process crash (perhaps with the
one the crash interrupted), at least the fsynced ones after a power loss.  The model then
becomes what was loaded.

A *wipe* replaces the whole disk by a new one with a new incarnation (see
:meth:`Disk.__init__`): the next start finds fresh storage.

A batch that acknowledged nothing (``sync`` false) reaches the disk later, as the commit
policy (:mod:`zcounter.protocol.commit`) defers it: a crash of any kind loses it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from ..model.expiry import DEFAULT_META, META
from ..model.hashtree import key_digest, meta_hash, record_hash
from ..model.keyspace import unpack
from ..model.pncounter import Record, normal
from ..model.records import meta_of
from ..protocol.messages import RidEntry
from ..protocol.outputs import Persist
from ..runtime.storage import Storage
from ..runtime.storage.checkpoint import DB_NAME, Checkpoint
from ..runtime.storage.log import SegmentLog
from .files import SimFiles
from .oracle import SimFailure

State = dict[str, dict[str, Record]]

#: Log segments of the simulated nodes: small, so that a run rotates, checkpoints and
#: reuses segments (a commit here is one record of ~100-500 bytes).
SEGMENT_SIZE = 16 * 1024
FIRST_SEGMENT_SIZE = 4 * 1024


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
    #: Each key's share of ``root`` (the XOR of its records' hashes), so that a commit
    #: hashes only the states it writes, not the ones they replace.  None: no root is
    #: kept (a disk's ``durable`` image: only its states are ever read).
    hashes: dict[str, int] | None = field(default_factory=dict)

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
        hashes = self.hashes
        for key in persist.removed:  # a key collected: the checkpoint's DELETE
            self.states.pop(key, None)
            if hashes is not None:
                self.root ^= hashes.pop(key, 0)
        if hashes is None:
            self.states.update(persist.states)
        else:
            root = self.root
            for key, packed in persist.states.items():
                self.states[key] = packed
                h = self._hash(key, packed)
                root ^= hashes.get(key, 0) ^ h
                hashes[key] = h
            self.root = root
        rids = self.rids
        for rid, key, target in persist.rids:
            rids[rid] = (key, target)  # an id again: its target cleared by a collection
        for rid in persist.forget:
            rids.pop(rid, None)

    def key_hash(self, key: str) -> int:
        """``key``'s share of the root (0 if it holds no state)."""
        assert self.hashes is not None, "an image without a root"
        return self.hashes.get(key, 0)

    def _hash(self, key: str, packed: bytes | None) -> int:
        if not packed:
            return 0
        digest = key_digest(key.encode())
        names = self.slot_names
        h = meta_hash(digest, meta_of(packed))
        for s, rec in unpack(packed).items():
            h ^= record_hash(digest, names[s].encode(), rec)
        return h

    @classmethod
    def of(cls, storage: Storage, rooted: bool = True) -> Image:
        """What ``storage`` loads (right after its recovery: all of it is checkpointed);
        without its root if not ``rooted`` (:meth:`Disk.crash` takes the root of the
        model's image it equals instead)."""
        image = cls(hashes={} if rooted else None)
        image.slot_names = storage.load_slot_names()
        image.slot_index = {name: idx for idx, name in enumerate(image.slot_names)}
        image.states = dict(storage.load_states())
        image.rids = {rid: (key, target) for rid, key, target in storage.load_rids()}
        if image.hashes is not None:
            for key, packed in image.states.items():
                h = image.hashes[key] = image._hash(key, packed)
                image.root ^= h
        return image

    def same(self, other: Image) -> bool:
        """Same slot table, states and request ids (the window's order aside)."""
        return (self.slot_names == other.slot_names and self.states == other.states
                and self.rids == other.rids)

    def copy(self, rooted: bool = True) -> Image:
        """A copy (without a root if not ``rooted``, or if this image has none)."""
        hashes = dict(self.hashes) if rooted and self.hashes is not None else None
        return Image(list(self.slot_names), dict(self.slot_index), dict(self.states),
                     dict(self.rids), self.root if hashes is not None else 0, hashes)

    def state(self, key: str) -> dict[str, Record]:
        """The stored state of ``key`` by slot name ({} if none)."""
        packed = self.states.get(key)
        if packed is None:
            return {}
        names = self.slot_names
        out = {names[s]: normal(*r) for s, r in unpack(packed).items()}
        meta = meta_of(packed)
        if meta != DEFAULT_META:
            out[META] = meta
        return out

    def all_states(self) -> State:
        return {key: self.state(key) for key in sorted(self.states)}

    def rid_entries(self) -> list[RidEntry]:
        return [(rid, key, target) for rid, (key, target) in self.rids.items()]


class Disk:
    """One node's storage over its lifetime (until a wipe replaces it)."""

    def __init__(self, node_id: int, incarnation: str, lag: int) -> None:
        self.node_id = node_id
        #: Drawn for the database when it is created: a wiped node's new slot.
        self.incarnation = incarnation
        #: Commits a due checkpoint trails the log by.
        self.lag = lag
        self.files = SimFiles()
        self._where = Path(f"/sim/node{node_id}")
        self._dir, self._db_path = str(self._where), self._where / DB_NAME
        self._db = sqlite3.connect(":memory:", isolation_level=None)
        self.current = Image()
        self.durable = Image(hashes=None)
        self._tail: list[Persist] = []
        self.commits = 0
        #: Open (recovered) storage: what the next start loads and commits to.
        self.storage = self._recover()

    @property
    def fresh(self) -> bool:
        """True until the first crash: this storage was created by its open."""
        return self.storage.created

    def _recover(self) -> Storage:
        """What the runtime's ``Storage.open`` does after checking the directory."""
        where = self._where
        checkpoint = Checkpoint.attach(self._db, self._db_path, self.node_id,
                                       self.incarnation)
        log = SegmentLog(self._dir, self.files, SEGMENT_SIZE, background=False,
                         first_segment_size=FIRST_SEGMENT_SIZE)
        return Storage.recover(checkpoint, log, where, background=False, lag=self.lag)

    def commit(self, persist: Persist) -> None:
        """Commit through the real storage (raises :class:`~.files.Crash` if the files
        were told to crash in it), then the model."""
        self.storage.commit(persist)
        self.commits += 1
        self.current.apply(persist)
        if persist.sync:
            for earlier in self._tail:
                self.durable.apply(earlier)
            self._tail.clear()
            self.durable.apply(persist)
        else:
            self._tail.append(persist)

    def crash(self, power: bool, in_flight: Persist | None = None) -> bool:
        """The process died (with a power loss if ``power``), perhaps inside the commit
        of ``in_flight``: recover now (module docstring).  Whether ``in_flight`` was
        recovered.  Raises SimFailure if what was recovered is no prefix of the
        commits."""
        if power:
            self.files.power_loss()
        self.files.restart()
        self.storage = self._recover()
        # Only a power loss can roll back to the durable image, which keeps no root: then
        # what was loaded is hashed; otherwise it takes the root of the model's image it
        # equals (same slot table and states: the same root).
        got = Image.of(self.storage, rooted=power)
        steps = (self._tail if power else []) + ([in_flight] if in_flight else [])
        image = self.durable if power else self.current
        if steps:
            image = image.copy(rooted=not power)  # the steps are applied to it
        matched, rooted = -1, None
        for n in range(len(steps) + 1):
            if n:
                image.apply(steps[n - 1])
            if got.same(image):
                matched = n
                if image.hashes is not None:
                    rooted = (image.root, dict(image.hashes))
        if matched < 0:
            raise SimFailure(
                f"node {self.node_id}: the storage recovered a state no prefix of its "
                f"commits explains ({'power loss' if power else 'process crash'}, "
                f"{len(steps)} commits in doubt; keys {sorted(got.states)[:8]})")
        if got.hashes is None:
            assert rooted is not None
            got.root, got.hashes = rooted
        self.current, self.durable, self._tail = got, got.copy(rooted=False), []
        return in_flight is not None and matched == len(steps)

    def close(self) -> None:
        """The disk is thrown away (a wipe)."""
        self._db.close()
