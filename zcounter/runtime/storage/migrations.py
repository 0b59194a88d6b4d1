"""Schema creation and in-place upgrades of a node's SQLite database.

Every upgrade runs in one transaction (SQLite's DDL is transactional): a crash in the
middle leaves the old schema, which the next start upgrades again.

* Schema 1 (zcounter 0.1): one counter.  ``slots(slot, value)`` held a G-Counter,
  ``request_ids(rid, slot, value)`` the exactly-once window.
* Schema 2 (zcounter 0.2): a keyspace of PN-counters with observed reset
  (:mod:`.storage` describes the tables).  The upgrade makes the single counter the key
  ``default``, each slot (incarnations included) a record ``(p=value, 0, 0, 0)``, and each
  request id an entry of key ``default`` whose target is ``{slot: (value, 0, 0, 0)}``,
  in the same order - so a retry of an id applied before the upgrade still counts once.
* Schema 3 (issue 21: expiry): the same tables; every state packed in the form with births
  and meta (:mod:`zcounter.model.records`, flag 0x80), and a ``high_water`` row in
  ``meta``.  The upgrade converts every blob (their hashes do not change: births 0,
  default meta), in one transaction.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson

from ...errors import ConfigError
from ...model.keyspace import pack_state
from ...model.records import is_old_form, upgrade
from ...protocol.messages import DEFAULT_KEY

SCHEMA_VERSION = 3
#: Rows converted per statement by the upgrade to schema 3.
_UPGRADE_ROWS = 1000

_SCHEMA = (
    "CREATE TABLE slot_names (idx INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
    "CREATE TABLE counters (key TEXT PRIMARY KEY, state BLOB NOT NULL) WITHOUT ROWID",
    "CREATE TABLE request_ids (rid TEXT PRIMARY KEY, key TEXT NOT NULL, target TEXT NOT NULL)",
)
#: Rows of ``meta`` a database has beside schema, node_id and incarnation (high_water:
#: "Gp Gn", the node's high-water, issue 21).
_META_DEFAULTS = (("checkpoint_lsn", "0"), ("high_water", "0 0"))


def create_schema(conn: sqlite3.Connection) -> None:
    """The current schema's tables (inside the caller's transaction)."""
    for statement in _SCHEMA:
        conn.execute(statement)
    conn.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)", _META_DEFAULTS)


def migrate(conn: sqlite3.Connection, path: Path, schema: str | None) -> None:
    """Bring the database at ``path`` to :data:`SCHEMA_VERSION`."""
    if schema == str(SCHEMA_VERSION):
        return
    if schema == "1":
        _upgrade_1_to_2(conn)
        schema = "2"
    if schema == "2":
        _upgrade_2_to_3(conn)
        return
    raise ConfigError(f"{path}: schema version {schema}, this zcounter reads "
                      f"{SCHEMA_VERSION} and upgrades 1 and 2")


def _upgrade_1_to_2(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        slots = conn.execute("SELECT slot, value FROM slots ORDER BY slot").fetchall()
        rids = conn.execute("SELECT rid, slot, value FROM request_ids ORDER BY rowid").fetchall()
        conn.execute("DROP TABLE slots")
        conn.execute("DROP TABLE request_ids")
        create_schema(conn)
        conn.executemany("INSERT INTO slot_names VALUES (?, ?)",
                         [(i, name) for i, (name, _) in enumerate(slots)])
        if slots:
            conn.execute("INSERT INTO counters VALUES (?, ?)", (DEFAULT_KEY, pack_state(
                DEFAULT_KEY, {i: (value, 0, 0, 0) for i, (_, value) in enumerate(slots)},
                [name.encode() for name, _ in slots])))
        conn.executemany("INSERT INTO request_ids VALUES (?, ?, ?)", [
            (rid, DEFAULT_KEY, orjson.dumps({slot: [value, 0, 0, 0]}))
            for rid, slot, value in rids])
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema'")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _upgrade_2_to_3(conn: sqlite3.Connection) -> None:
    """Every 0.2 state blob in the form with births and meta, and the high-water row."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        after = ""
        while True:
            rows = conn.execute("SELECT key, state FROM counters WHERE key > ? ORDER BY key "
                                "LIMIT ?", (after, _UPGRADE_ROWS)).fetchall()
            if not rows:
                break
            conn.executemany("UPDATE counters SET state = ? WHERE key = ?",
                             [(upgrade(bytes(state)), key) for key, state in rows
                              if is_old_form(bytes(state))])
            after = rows[-1][0]
        conn.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)", _META_DEFAULTS)
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
