"""Durable node state in SQLite (standard library), one database per node.

Layout: ``<data dir>/zcounter.sqlite3`` in WAL mode with ``synchronous=FULL``, so a
commit has reached the disk (fsync) before the node acknowledges anything in it.  One
transaction per poll cycle serves every increment of that cycle (group commit): the fsync
cost is paid per batch, not per increment.

Tables: ``meta`` (node id, incarnation, schema version), ``slots`` (the G-Counter) and
``request_ids`` (the exactly-once window).  Slot writes are ``max`` upserts, so replaying
a commit is harmless.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from pathlib import Path

from .errors import ConfigError
from .node import Persist

SCHEMA_VERSION = 1
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
            # background checkpointer was tried and removed: under sustained load it never
            # caught up with the writer, so the WAL never restarted (196 MB in 6 s at
            # 2,500 commits/s) and commits paid for growing the file (p50 0.28 vs 0.16 ms).
            conn.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS slots (slot TEXT PRIMARY KEY, value INTEGER NOT NULL)")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS request_ids (rid TEXT PRIMARY KEY, slot TEXT NOT NULL,"
                " value INTEGER NOT NULL)")
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{path}: not a usable zcounter database ({exc})") from None
        if not meta:
            # A new incarnation for every new database: a node whose data was wiped must
            # never continue its old slot, or peers' larger values for it would swallow
            # its new increments (max merge) - the Riak actor-reuse bug.
            incarnation = secrets.token_hex(6)
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("schema", str(SCHEMA_VERSION)), ("node_id", str(node_id)),
                ("incarnation", incarnation)])
            conn.execute("COMMIT")
            return cls(conn, path, incarnation, created=True)
        if meta.get("schema") != str(SCHEMA_VERSION):
            raise ConfigError(
                f"{path}: schema version {meta.get('schema')}, expected {SCHEMA_VERSION}")
        if meta.get("node_id") != str(node_id):
            raise ConfigError(
                f"{path}: this data directory belongs to node {meta.get('node_id')}, "
                f"not node {node_id}")
        return cls(conn, path, meta["incarnation"], created=created)

    def load_slots(self) -> dict[str, int]:
        return dict(self._conn.execute("SELECT slot, value FROM slots").fetchall())

    def load_rids(self) -> list[tuple[str, str, int]]:
        return self._conn.execute(
            "SELECT rid, slot, value FROM request_ids ORDER BY rowid").fetchall()

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
            if persist.slots:
                conn.executemany(
                    "INSERT INTO slots (slot, value) VALUES (?, ?) ON CONFLICT(slot) DO UPDATE"
                    " SET value = max(value, excluded.value)", persist.slots.items())
            if persist.rids:
                conn.executemany("INSERT OR IGNORE INTO request_ids VALUES (?, ?, ?)", persist.rids)
            if persist.forget:
                conn.executemany("DELETE FROM request_ids WHERE rid = ?",
                                 ((rid,) for rid in persist.forget))
            if persist.sync and not (persist.slots or persist.rids or persist.forget):
                # Nothing new to write, but earlier unsynced commits must become durable:
                # a one-row write makes this commit (and its fsync) happen.
                self._barriers += 1
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('sync_barrier', ?)",
                             (str(self._barriers),))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._conn.close()
