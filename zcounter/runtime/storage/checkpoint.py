"""The checkpoint: the keyspace as of one log position, in SQLite.

The log (:mod:`.log`) makes each batch durable cheaply; the checkpoint lets a restart
avoid replaying all of history, and lets old log segments be deleted.  A background
thread (:class:`~.Storage`) writes into it every key changed since the previous
checkpoint, in one transaction that also records the LSN it reaches, with
``synchronous=FULL`` - so after a crash at any moment the checkpoint is either the old
one or the new one, and replaying the log after its LSN restores the rest.

Schema 2 (zcounter 0.2): ``meta(key, value)`` (``schema``, ``node_id``, ``incarnation``,
``checkpoint_lsn``), ``slot_names(idx, name)``, ``counters(key, state)`` (``WITHOUT ROWID``:
the table is the key index), ``request_ids(rid, key, target)`` in insertion (rowid) order.
Schema 3 (issue 21): the same tables, states in the packed form with births and meta, and
``high_water`` in ``meta``.  A database of schema 1 (zcounter 0.1) or 2 (0.2) is upgraded
in place when opened (:mod:`.migrations`).
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

import orjson

from ...errors import ConfigError
from ...model.pncounter import Record
from ...protocol.messages import RidEntry
from .migrations import SCHEMA_VERSION, create_schema, migrate

DB_NAME = "zcounter.sqlite3"
#: Page cache of the checkpoint connection.  Keys are written sorted, so neighbouring
#: keys share pages and a small cache suffices; it counts in the node's memory (the
#: million-key target is 400 MB).
_CACHE_KIB = 8 * 1024
#: Rows per INSERT statement in a checkpoint (800 variables: under the 999 of SQLite
#: builds before 3.32).  Python's sqlite3 releases the GIL around every statement step
#: and takes it back after: one row per step made a checkpoint thread hand the GIL back
#: and forth with the node's busy loop once per row.  300,000 rows took 26.3 s beside a
#: thread running Python (switch interval 0.2 ms, as in the node; 167 s at 5 ms) and
#: 2.2 s with 400 rows per statement (docs/measurements/checkpoint_gil-results.txt);
#: meanwhile the states it writes stay in memory (WRITEUP.md section 4.3).
ROWS_PER_STATEMENT = 400


class Checkpoint:
    """The SQLite database of one node.  Opened by the main thread, then written only by
    the checkpointer thread (``check_same_thread=False``)."""

    def __init__(self, conn: sqlite3.Connection, path: Path, incarnation: str, created: bool,
                 lsn: int) -> None:
        self._conn = conn
        self.path = path
        self.incarnation = incarnation
        self.created = created
        #: Every log record up to this LSN is in the checkpoint.
        self.lsn = lsn

    @classmethod
    def open(cls, data_dir: Path, node_id: int) -> Checkpoint:
        path = data_dir / DB_NAME
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{path}: not a usable zcounter database ({exc})") from None
        return cls.attach(conn, path, node_id)

    @classmethod
    def attach(cls, conn: sqlite3.Connection, path: Path, node_id: int,
               incarnation: str | None = None) -> Checkpoint:
        """The checkpoint in ``conn`` (autocommit), created, checked or upgraded.  The
        simulator attaches in-memory databases; ``incarnation``, for a new database, is
        then drawn from its seed instead of at random."""
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{path}: not a usable zcounter database ({exc})") from None
        if not meta:
            # A new incarnation for every new database: a node whose data was wiped must
            # never continue its old slot, or peers' larger values for it would swallow
            # its new updates (max merge) - the Riak actor-reuse bug (riak_kv#679).
            incarnation = incarnation or secrets.token_hex(6)
            conn.execute("BEGIN IMMEDIATE")
            create_schema(conn)
            conn.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("schema", str(SCHEMA_VERSION)), ("node_id", str(node_id)),
                ("incarnation", incarnation)])
            conn.execute("COMMIT")
            return cls(conn, path, incarnation, True, 0)
        if meta.get("node_id") != str(node_id):
            raise ConfigError(
                f"{path}: this data directory belongs to node {meta.get('node_id')}, "
                f"not node {node_id}")
        try:
            migrate(conn, path, meta.get("schema"))
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{path}: upgrade failed ({exc})") from None
        lsn = conn.execute("SELECT value FROM meta WHERE key = 'checkpoint_lsn'").fetchone()
        # An existing database: ``created`` is false (the file existed, or it would hold
        # no meta).
        return cls(conn, path, meta["incarnation"], False, int(lsn[0]) if lsn else 0)

    def slot_names(self) -> list[str]:
        rows = self._conn.execute("SELECT idx, name FROM slot_names ORDER BY idx").fetchall()
        for expected, (idx, _) in enumerate(rows):
            if idx != expected:
                raise ConfigError(f"{self.path}: slot table has a hole at index {expected}")
        return [name for _, name in rows]

    def states(self) -> Iterator[tuple[str, bytes]]:
        return iter(self._conn.execute("SELECT key, state FROM counters"))

    def high_water(self) -> tuple[int, int]:
        """The node's high-water (issue 21; (0, 0) until a collection raised it)."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'high_water'").fetchone()
        if row is None:
            return 0, 0
        gp, gn = row[0].split()
        return int(gp), int(gn)

    def rids(self) -> list[RidEntry]:
        return [(rid, key, _target(orjson.loads(target))) for rid, key, target in
                self._conn.execute("SELECT rid, key, target FROM request_ids ORDER BY rowid")]

    def write(self, lsn: int, slots: list[tuple[int, str]], states: dict[str, bytes | None],
              rid_ops: dict[str, RidEntry | None],
              high_water: tuple[int, int] | None = None) -> None:
        """One checkpoint, atomically and durably.  ``states``: a key's packed state, or
        None for a key collected (deleted); ``rid_ops``: per request id, in log order,
        its last change: the entry learned, or None if forgotten; ``high_water``: the
        node's, when it moved."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("INSERT OR IGNORE INTO slot_names VALUES (?, ?)", slots)
            # Sorted: neighbouring keys share B-tree pages, so a big checkpoint writes
            # each page once instead of once per key.
            # A generator, not a list of a million tuples (a bootstrap's checkpoint).
            _insert_rows(conn, "INSERT OR REPLACE INTO counters VALUES ", 2,
                         ((key, states[key]) for key in sorted(states)
                          if states[key] is not None))
            removed = [key for key, state in states.items() if state is None]
            for i in range(0, len(removed), ROWS_PER_STATEMENT):
                chunk = removed[i:i + ROWS_PER_STATEMENT]
                conn.execute("DELETE FROM counters WHERE key IN ("
                             + ",".join("?" * len(chunk)) + ")", chunk)
            if high_water is not None:
                conn.execute("UPDATE meta SET value = ? WHERE key = 'high_water'",
                             (f"{high_water[0]} {high_water[1]}",))
            forgotten = [rid for rid, entry in rid_ops.items() if entry is None]
            for i in range(0, len(forgotten), ROWS_PER_STATEMENT):
                chunk = forgotten[i:i + ROWS_PER_STATEMENT]
                conn.execute("DELETE FROM request_ids WHERE rid IN ("
                             + ",".join("?" * len(chunk)) + ")", chunk)
            # REPLACE: an id written again is one whose target a collection cleared
            # (protocol/rids.py); it must not keep the old target (a new id is new).
            _insert_rows(conn, "INSERT OR REPLACE INTO request_ids VALUES ", 3, (
                (rid, entry[1], orjson.dumps({s: list(r) for s, r in entry[2].items()}))
                for rid, entry in rid_ops.items() if entry is not None))
            conn.execute("UPDATE meta SET value = ? WHERE key = 'checkpoint_lsn'", (str(lsn),))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self.lsn = lsn
        # Keep the database's own WAL from growing with every big checkpoint.
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        self._conn.close()


def _insert_rows(conn: sqlite3.Connection, insert: str, width: int,
                 rows: Iterable[tuple[object, ...]]) -> None:
    """``insert`` (ending in ``VALUES``) of every row of ``width`` values, in order,
    :data:`ROWS_PER_STATEMENT` rows per statement."""
    one = "(" + ",".join("?" * width) + ")"
    full = insert + ",".join([one] * ROWS_PER_STATEMENT)
    rows = iter(rows)
    while chunk := list(islice(rows, ROWS_PER_STATEMENT)):
        sql = full if len(chunk) == ROWS_PER_STATEMENT else insert + ",".join([one] * len(chunk))
        conn.execute(sql, [value for row in chunk for value in row])


def _target(obj: object) -> dict[str, Record]:
    assert isinstance(obj, dict)
    return {s: tuple(r) for s, r in obj.items()}  # 4 or 5 integers, or a meta's 3
