"""The in-place upgrade of a zcounter 0.1 data directory (schema 1) to schema 2
(zcounter.runtime.storage.migrations).

The schema-1 database is built exactly as zcounter 0.1 wrote it (``tests/schema1.py``:
0.1's statements, verbatim).
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from schema1 import commit_schema_1, open_schema_1

from zcounter.config import Settings
from zcounter.errors import ConfigError
from zcounter.model.keyspace import Keyspace
from zcounter.protocol.messages import Add
from zcounter.protocol.node import NodeCore
from zcounter.protocol.outputs import Persist, ToClient
from zcounter.runtime.storage import DB_NAME, Storage, migrations

INCARNATION = "5f0c1a9e3b7d"
OWN = f"1.{INCARNATION}"
OLD_OWN = "1.0a1b2c3d4e5f"  # node 1 before a wipe: another incarnation, same node
PEER = "2.77aa88bb99cc"
SLOTS = {OWN: 12, OLD_OWN: 40, PEER: 7}
#: Request ids in the order 0.1 inserted them (not alphabetical), and one it evicted.
RIDS = [("zz-1", OWN, 10), ("aa-2", OWN, 11), ("mm-3", OWN, 12)]
EVICTED = ("gone", OWN, 3)


def write_schema_1(data_dir: Path, node_id: int = 1) -> Path:
    """A data directory as zcounter 0.1's Storage left it after some batches."""
    conn = open_schema_1(data_dir, node_id, INCARNATION)
    commit_schema_1(conn, {OWN: 3, PEER: 7}, [EVICTED], [], True)
    commit_schema_1(conn, {OLD_OWN: 40}, [], [], False)  # learned from a peer
    commit_schema_1(conn, {OWN: 10}, RIDS[:1], [], True)
    commit_schema_1(conn, {}, [], [], True, barrier=1)
    commit_schema_1(conn, {OWN: 12, PEER: 5}, RIDS[1:], [EVICTED[0]], True)  # max keeps 7
    conn.close()
    return data_dir / DB_NAME


def schema_1_contents(path: Path) -> tuple[dict, dict, list]:
    conn = sqlite3.connect(path)
    try:
        return (dict(conn.execute("SELECT key, value FROM meta")),
                dict(conn.execute("SELECT slot, value FROM slots")),
                conn.execute("SELECT rid, slot, value FROM request_ids ORDER BY rowid").fetchall())
    finally:
        conn.close()


def check_upgraded(data_dir: Path) -> None:
    storage = Storage.open(data_dir, 1)
    try:
        assert not storage.created and storage.incarnation == INCARNATION
        names = storage.load_slot_names()
        assert sorted(names) == sorted(SLOTS)
        ks = Keyspace()
        ks.load(names, storage.load_states())
        assert ks.state("default") == {s: (v, 0, 0, 0) for s, v in SLOTS.items()}
        assert ks.value("default", 0) == sum(SLOTS.values()) and len(ks) == 1
        assert storage.load_rids() == [
            (rid, "default", {slot: (value, 0, 0, 0)}) for rid, slot, value in RIDS]
    finally:
        storage.close()
    conn = sqlite3.connect(data_dir / DB_NAME)
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        assert meta["schema"] == "3" and meta["node_id"] == "1"
        assert meta["incarnation"] == INCARNATION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"meta", "slot_names", "counters", "request_ids"}
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_a_0_1_directory_is_upgraded_in_place(tmp_path: Path):
    path = write_schema_1(tmp_path)
    meta, slots, rids = schema_1_contents(path)
    assert meta["schema"] == "1" and slots == SLOTS and rids == RIDS
    check_upgraded(tmp_path)
    check_upgraded(tmp_path)  # and opening it again changes nothing


def test_after_the_upgrade_a_retry_of_an_old_request_id_counts_once(tmp_path: Path):
    write_schema_1(tmp_path)
    storage = Storage.open(tmp_path, 1)
    ks = Keyspace()
    ks.load(storage.load_slot_names(), storage.load_states())
    node = NodeCore(1, [1, 2, 3], storage.incarnation, "e1", Settings(), 0.0, ks,
                    storage.load_rids())
    assert node.slot_name == OWN  # the node continues its slot of 0.1
    node.handle_request("cli", Add(1, rid="aa-2"), 0.0)  # applied by 0.1
    node.handle_request("cli", Add(2, rid="new"), 0.0)
    out = node.take_outputs()
    replies = [m.reply for m in out.messages if isinstance(m, ToClient)]
    total = sum(SLOTS.values())
    assert [r.counts for r in replies] == [(total,), (total + 1,)]
    assert replies[0].duplicate and not replies[1].duplicate
    assert node.keys.state("default")[OWN] == (13, 0, 0, 0)
    storage.commit(out.persist)
    storage.close()
    again = Storage.open(tmp_path, 1)
    try:
        assert [r for r, _, _ in again.load_rids()] == ["zz-1", "aa-2", "mm-3", "new"]
    finally:
        again.close()


def test_a_failure_inside_the_upgrade_leaves_schema_1_for_the_next_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = write_schema_1(tmp_path)
    before = schema_1_contents(path)

    def crash(*args: object) -> bytes:  # runs after both DROP TABLEs and the new tables
        raise RuntimeError("simulated failure inside the upgrade")

    monkeypatch.setattr(migrations, "pack_state", crash)
    with pytest.raises(RuntimeError, match="simulated failure"):
        Storage.open(tmp_path, 1)
    monkeypatch.undo()
    assert schema_1_contents(path) == before
    check_upgraded(tmp_path)


def test_a_process_killed_inside_the_upgrade_leaves_schema_1_for_the_next_start(
        tmp_path: Path):
    """The same with a real death: the process exits with the transaction open."""
    path = write_schema_1(tmp_path)
    before = schema_1_contents(path)
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from zcounter.runtime.storage import Storage, migrations
        def pack_state(*args):
            os._exit(17)  # after the DROP TABLEs: no rollback, no cleanup
        migrations.pack_state = pack_state
        Storage.open(Path({str(tmp_path)!r}), 1)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.returncode == 17, done.stderr.decode()
    assert schema_1_contents(path) == before
    check_upgraded(tmp_path)


def test_an_empty_0_1_database_is_upgraded(tmp_path: Path):
    open_schema_1(tmp_path, 1, INCARNATION).close()  # opened, never written
    storage = Storage.open(tmp_path, 1)
    try:
        assert storage.load_slot_names() == [] and dict(storage.load_states()) == {}
        assert storage.load_rids() == [] and storage.incarnation == INCARNATION
        storage.commit(Persist(slots=[(0, OWN)], sync=True))
    finally:
        storage.close()


def test_another_nodes_0_1_directory_is_refused_and_left_as_it_was(tmp_path: Path):
    path = write_schema_1(tmp_path, node_id=2)
    before = schema_1_contents(path)
    with pytest.raises(ConfigError, match="belongs to node 2, not node 1") as excinfo:
        Storage.open(tmp_path, 1)
    assert "\n" not in str(excinfo.value) and str(path) in str(excinfo.value)
    assert schema_1_contents(path) == before
