"""Durable node state in SQLite (standard library), one database per node.

Layout: ``<data dir>/zcounter.sqlite3`` in WAL mode.  A batch that acknowledges
something only this node vouches for is committed with ``synchronous=FULL`` (fsync
before any reply leaves); a batch that only merges what peers hold durably is committed
with ``synchronous=NORMAL`` (survives a process crash; after a power loss it is pulled
back from the peers).  One transaction per poll cycle serves every request of that
cycle (group commit).

Schema 2 (zcounter 0.2):

* ``meta(key, value)``: ``schema``, ``node_id``, ``incarnation``;
* ``slot_names(idx, name)``: the node's slot table (states refer to slots by ``idx``);
* ``counters(key, state)``: one row per key, the packed records of
  :mod:`zcounter.model.keyspace` (36 bytes per slot), ``WITHOUT ROWID`` so the table is
  the key index (~100 bytes per key on disk at a million keys, WRITEUP.md section 2.4);
* ``request_ids(rid, key, target)``: the exactly-once window in insertion (rowid) order;
  ``target`` is JSON ``{slot: [p, n, bp, bn]}``.

A database of an older schema is upgraded in place at open (:mod:`.migrations`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import orjson

from ..errors import ConfigError
from ..model.pncounter import Record
from ..protocol.messages import RidEntry
from ..protocol.outputs import Persist
from .migrations import SCHEMA_VERSION, create_schema, migrate

DB_NAME = "zcounter.sqlite3"


class Storage:
    """The node's database.  Use :meth:`open`; one instance per process."""

    def __init__(self, conn: sqlite3.Connection, path: Path, incarnation: str, created: bool):
        self._conn = conn
        self.path = path
        self.incarnation = incarnation
        #: True when this run created the database (first start, or a wiped directory).
        self.created = created
        self._synced = True  # the connection starts with synchronous=FULL
        self._barriers = 0

    @classmethod
    def open(cls, data_dir: Path, node_id: int) -> Storage:
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"data directory {data_dir}: cannot create ({exc.strerror})") from None
        if not os.access(data_dir, os.W_OK):
            raise ConfigError(f"data directory {data_dir}: not writable")
        path = data_dir / DB_NAME
        created = not path.exists()
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            # Checkpoints stay SQLite's automatic ones, inside the committing thread.  A
            # background checkpointer was tried in 0.1 and removed: under sustained load it
            # never caught up with the writer, so the WAL never restarted (196 MB in 6 s at
            # 2,500 commits/s) and commits paid for growing the file (p50 0.28 vs 0.16 ms).
            conn.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{path}: not a usable zcounter database ({exc})") from None
        if not meta:
            # A new incarnation for every new database: a node whose data was wiped must
            # never continue its old slot, or peers' larger values for it would swallow
            # its new updates (max merge) - the Riak actor-reuse bug (riak_kv#679).
            incarnation = secrets.token_hex(6)
            conn.execute("BEGIN IMMEDIATE")
            create_schema(conn)
            conn.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("schema", str(SCHEMA_VERSION)), ("node_id", str(node_id)),
                ("incarnation", incarnation)])
            conn.execute("COMMIT")
            return cls(conn, path, incarnation, created=True)
        if meta.get("node_id") != str(node_id):
            raise ConfigError(
                f"{path}: this data directory belongs to node {meta.get('node_id')}, "
                f"not node {node_id}")
        try:
            migrate(conn, path, meta.get("schema"))
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{path}: upgrade failed ({exc})") from None
        return cls(conn, path, meta["incarnation"], created=created)

    def load_slot_names(self) -> list[str]:
        rows = self._conn.execute("SELECT idx, name FROM slot_names ORDER BY idx").fetchall()
        for expected, (idx, _) in enumerate(rows):
            if idx != expected:
                raise ConfigError(f"{self.path}: slot table has a hole at index {expected}")
        return [name for _, name in rows]

    def load_states(self) -> Iterator[tuple[str, bytes]]:
        return iter(self._conn.execute("SELECT key, state FROM counters"))

    def load_rids(self) -> list[RidEntry]:
        out: list[RidEntry] = []
        for rid, key, target in self._conn.execute(
                "SELECT rid, key, target FROM request_ids ORDER BY rowid"):
            out.append((rid, key, _target(orjson.loads(target))))
        return out

    def commit(self, persist: Persist) -> None:
        """Write one batch atomically; durably (fsync) when ``persist.sync`` asks for it.

        In WAL mode ``synchronous=NORMAL`` commits survive a process crash but not a power
        loss; the next ``FULL`` commit's fsync makes every earlier frame durable too.
        Raises sqlite3.Error on failure.
        """
        conn = self._conn
        if persist.sync != self._synced:
            conn.execute("PRAGMA synchronous=FULL" if persist.sync else "PRAGMA synchronous=NORMAL")
            self._synced = persist.sync
        conn.execute("BEGIN IMMEDIATE")
        try:
            wrote = False
            if persist.slots:
                conn.executemany("INSERT OR IGNORE INTO slot_names VALUES (?, ?)", persist.slots)
                wrote = True
            if persist.states:
                # A key's packed state only ever grows (merge by max), so the newest write
                # wins: a plain upsert.
                conn.executemany("INSERT OR REPLACE INTO counters VALUES (?, ?)",
                                 persist.states.items())
                wrote = True
            if persist.rids:
                conn.executemany(
                    "INSERT OR IGNORE INTO request_ids VALUES (?, ?, ?)",
                    ((rid, key, orjson.dumps({s: list(r) for s, r in target.items()}))
                     for rid, key, target in persist.rids))
                wrote = True
            if persist.forget:
                conn.executemany("DELETE FROM request_ids WHERE rid = ?",
                                 ((rid,) for rid in persist.forget))
                wrote = True
            if persist.sync and not wrote:
                # Nothing new to write, but earlier unsynced commits must become durable:
                # a one-row write makes this commit (and its fsync) happen.
                self._barriers += 1
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('sync_barrier', ?)",
                             (str(self._barriers),))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def size_bytes(self) -> int:
        """Bytes on disk: the database file and its WAL."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                total += os.path.getsize(f"{self.path}{suffix}")
        return total

    def close(self) -> None:
        self._conn.close()


def _target(obj: object) -> dict[str, Record]:
    assert isinstance(obj, dict)
    return {s: (r[0], r[1], r[2], r[3]) for s, r in obj.items()}
