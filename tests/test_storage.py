from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from zcounter.errors import ConfigError
from zcounter.node import Persist
from zcounter.storage import DB_NAME, Storage


def test_commit_and_reload(tmp_path: Path):
    st = Storage.open(tmp_path, 1)
    assert st.created and len(st.incarnation) == 12
    slot = f"1.{st.incarnation}"
    st.commit(Persist(slots={slot: 5}, rids=[("r1", slot, 5)], sync=True))
    st.commit(Persist(slots={slot: 3}))  # max upsert: never lowers a slot
    st.commit(Persist(rids=[("r2", slot, 5)], forget=["r1"]))
    st.close()
    again = Storage.open(tmp_path, 1)
    assert not again.created and again.incarnation == st.incarnation
    assert again.load_slots() == {slot: 5}
    assert again.load_rids() == [("r2", slot, 5)]


def test_a_sync_barrier_with_nothing_to_write_still_commits(tmp_path: Path):
    st = Storage.open(tmp_path, 1)
    st.commit(Persist(slots={"2.0123456789ab": 1}))  # unsynced
    wal = tmp_path / f"{DB_NAME}-wal"
    before = wal.stat().st_size
    st.commit(Persist(sync=True))
    assert wal.stat().st_size > before


def test_wiped_directory_gets_a_new_incarnation(tmp_path: Path):
    first = Storage.open(tmp_path / "a", 1).incarnation
    second = Storage.open(tmp_path / "b", 1).incarnation
    assert first != second


def test_refuses_another_nodes_directory_and_garbage(tmp_path: Path):
    Storage.open(tmp_path / "n1", 1).close()
    with pytest.raises(ConfigError, match="belongs to node 1"):
        Storage.open(tmp_path / "n1", 2)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / DB_NAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError, match="not a usable zcounter database"):
        Storage.open(tmp_path / "junk", 1)


def test_wal_mode(tmp_path: Path):
    Storage.open(tmp_path, 1).close()
    conn = sqlite3.connect(tmp_path / DB_NAME)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
