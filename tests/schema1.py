"""A zcounter 0.1 data directory (schema 1), written exactly as 0.1 wrote it.

The statements are copied verbatim from 0.1's ``zcounter/storage.py`` (``git show
3c35108:zcounter/storage.py``): its connection set-up, CREATE TABLEs and meta rows
(:func:`open_schema_1`) and its per-batch commit (:func:`commit_schema_1`).  One
G-Counter in ``slots(slot, value)``, and the exactly-once window in ``request_ids(rid,
slot, value)``, where ``value`` is the slot's value right after the request was applied.
Used by the storage-level upgrade tests and by the real-node one.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from zcounter.runtime.storage import DB_NAME


def open_schema_1(data_dir: Path, node_id: int, incarnation: str) -> sqlite3.Connection:
    """0.1's ``Storage.open`` of a fresh directory, verbatim."""
    data_dir.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(data_dir / DB_NAME, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS slots (slot TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS request_ids (rid TEXT PRIMARY KEY, slot TEXT NOT NULL,"
        " value INTEGER NOT NULL)")
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO meta VALUES (?, ?)", [
        ("schema", str(1)), ("node_id", str(node_id)),
        ("incarnation", incarnation)])
    conn.execute("COMMIT")
    return conn


def commit_schema_1(conn: sqlite3.Connection, slots: dict[str, int],
                    rids: list[tuple[str, str, int]], forget: list[str], sync: bool,
                    barrier: int = 0) -> None:
    """0.1's ``Storage.commit`` of one batch, verbatim."""
    conn.execute("BEGIN IMMEDIATE")
    if slots:
        conn.executemany(
            "INSERT INTO slots (slot, value) VALUES (?, ?) ON CONFLICT(slot) DO UPDATE"
            " SET value = max(value, excluded.value)", slots.items())
    if rids:
        conn.executemany("INSERT OR IGNORE INTO request_ids VALUES (?, ?, ?)", rids)
    if forget:
        conn.executemany("DELETE FROM request_ids WHERE rid = ?",
                         ((rid,) for rid in forget))
    if sync and not (slots or rids or forget):
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('sync_barrier', ?)",
                     (str(barrier),))
    conn.execute("COMMIT")
