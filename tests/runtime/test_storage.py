"""Durable node state (zcounter.runtime.storage) on a real directory: what a node
commits comes back when it opens its data again, and a directory that is not this
node's is refused with a one-line ConfigError naming the file.  (Crashes, torn writes
and power loss: test_storage_crash.py.)"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from zcounter.errors import ConfigError
from zcounter.model.keyspace import Keyspace, pack
from zcounter.protocol.outputs import Persist
from zcounter.runtime import storage as storage_module
from zcounter.runtime.storage import DB_NAME, Storage
from zcounter.sim.files import SimFiles

A, B = "1.0123456789ab", "2.0123456789ab"


def reload(path: Path, node: int = 1, **kw) -> tuple[Storage, Keyspace, list]:
    storage = Storage.open(path, node, **kw)
    ks = Keyspace()
    ks.load(storage.load_slot_names(), storage.load_states())
    return storage, ks, storage.load_rids()


def one_line_config_error(excinfo: pytest.ExceptionInfo, path: Path) -> str:
    text = str(excinfo.value)
    assert "\n" not in text and str(path) in text, text
    return text


def test_commit_and_reload_round_trip(tmp_path: Path):
    storage = Storage.open(tmp_path, 1)
    assert storage.created and len(storage.incarnation) == 12
    key = "ключ \x00 🔑"  # any UTF-8, NUL included
    storage.commit(Persist(
        states={"k": pack({0: (5, 1, 0, 0)}), key: pack({0: (1, 0, 0, 0), 1: (7, 7, 7, 7)})},
        slots=[(0, A), (1, B)],
        rids=[("r1", "k", {A: (5, 0, 0, 0)}), ("r2", key, {B: (7, 7, 7, 7)})],
        sync=True))
    storage.commit(Persist(states={"k": pack({0: (6, 1, 0, 0)})},  # the newest state wins
                           rids=[("r3", "k", {A: (6, 0, 0, 0)})], forget=["r1"]))
    storage.close()
    again, ks, rids = reload(tmp_path)
    try:
        assert not again.created and again.incarnation == storage.incarnation
        assert again.load_slot_names() == [A, B]
        assert ks.state("k") == {A: (6, 1, 0, 0)} and ks.value("k", 0) == 5
        assert ks.state(key) == {A: (1, 0, 0, 0), B: (7, 7, 7, 7)}
        assert rids == [("r2", key, {B: (7, 7, 7, 7)}), ("r3", "k", {A: (6, 0, 0, 0)})]
    finally:
        again.close()


def test_an_id_whose_target_a_collection_cleared_keeps_it_cleared_across_checkpoints(
        tmp_path: Path):
    """A collection persists its keys' ids again with target {} (protocol/rids.py): after
    the checkpoint that folds both commits in (a close), and a second one (the reload's
    close), the id loads cleared - not with the old target an INSERT OR IGNORE kept."""
    storage = Storage.open(tmp_path, 1)
    storage.commit(Persist(states={"k": pack({0: (5, 0, 0, 0)})}, slots=[(0, A)],
                           rids=[("r1", "k", {A: (5, 0, 0, 0)})], sync=True))
    storage.close()  # the id is in the checkpoint's table
    again, _, rids = reload(tmp_path)
    assert rids == [("r1", "k", {A: (5, 0, 0, 0)})]
    again.commit(Persist(removed=["k"], rids=[("r1", "k", {})], sync=True))
    again.close()
    third, ks, rids = reload(tmp_path)
    try:
        assert rids == [("r1", "k", {})] and "k" not in ks
    finally:
        third.close()


def test_many_batches_across_log_segments_and_checkpoints_reload(tmp_path: Path):
    """Tiny segments: the real checkpointer thread runs many times."""
    expected: dict[str, bytes] = {}
    storage = Storage.open(tmp_path, 1, segment_size=4096)
    storage.commit(Persist(slots=[(0, A)], sync=True))
    for i in range(300):
        key = f"k{i % 37}"
        expected[key] = pack({0: (i + 1, 0, 0, 0)})
        storage.commit(Persist(states={key: expected[key]},
                               rids=[(f"r{i}", key, {A: (i + 1, 0, 0, 0)})],
                               forget=[f"r{i - 50}"] if i >= 50 else [], sync=i % 3 == 0))
    storage.close()
    again = Storage.open(tmp_path, 1, segment_size=4096)
    try:
        assert dict(again.load_states()) == expected
        assert [r for r, _, _ in again.load_rids()] == [f"r{i}" for i in range(250, 300)]
        assert again.size_bytes() > 0
    finally:
        again.close()


def test_size_counts_what_is_there_when_a_file_goes_while_listed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The log's spare segment is written as ``.tmp`` and renamed by another thread: a
    listing can name a file that is gone by the time it is measured (CI once failed on
    wal-00000014.log.tmp in the test above)."""
    storage = Storage.open(tmp_path, 1)
    try:
        gone = tmp_path / "wal-00000099.log.tmp"
        gone.write_bytes(b"x" * 100)
        with os.scandir(tmp_path) as it:
            listed = list(it)
        gone.unlink()
        expected = sum(e.stat().st_size for e in listed if e.path != str(gone))
        with monkeypatch.context() as m:
            m.setattr(storage_module.os, "scandir", lambda path: iter(listed))
            assert storage.size_bytes() == expected > 0
    finally:
        storage.close()


def test_a_sync_barrier_with_nothing_to_write_still_makes_earlier_commits_durable(
        tmp_path: Path):
    for barrier in (True, False):
        disk = SimFiles()
        where = tmp_path / str(barrier)
        storage = Storage.open(where, 1, files=disk, background=False)
        storage.commit(Persist(slots=[(0, A)], states={"k": pack({0: (1, 0, 0, 0)})}))
        if barrier:
            storage.commit(Persist(sync=True))  # nothing new: still a flush
        disk.power_loss()  # the process and its page cache are gone
        disk.restart()
        storage._checkpoint.close()
        again = Storage.open(where, 1, files=disk, background=False)
        try:
            assert dict(again.load_states()) == ({"k": pack({0: (1, 0, 0, 0)})}
                                                 if barrier else {})
        finally:
            again.close()


def test_a_wiped_directory_gets_a_new_incarnation(tmp_path: Path):
    first = Storage.open(tmp_path / "d", 1)
    first.commit(Persist(slots=[(0, A)], states={"k": pack({0: (1, 0, 0, 0)})}, sync=True))
    first.close()
    for f in (tmp_path / "d").iterdir():
        f.unlink()
    second = Storage.open(tmp_path / "d", 1)
    try:
        assert second.created and second.incarnation != first.incarnation
        assert dict(second.load_states()) == {} and second.load_slot_names() == []
    finally:
        second.close()


def test_another_nodes_directory_is_refused(tmp_path: Path):
    Storage.open(tmp_path, 1).close()
    with pytest.raises(ConfigError) as excinfo:
        Storage.open(tmp_path, 2)
    text = one_line_config_error(excinfo, tmp_path / DB_NAME)
    assert "belongs to node 1, not node 2" in text
    Storage.open(tmp_path, 1).close()  # and it is untouched


@pytest.mark.parametrize("garbage", [b"this is not a database" * 100, b"\x00" * 4096,
                                     b"SQLite format 3\x00" + b"\xff" * 200])
def test_a_garbage_database_file_is_refused(tmp_path: Path, garbage: bytes):
    (tmp_path / DB_NAME).write_bytes(garbage)
    with pytest.raises(ConfigError) as excinfo:
        Storage.open(tmp_path, 1)
    assert "not a usable zcounter database" in one_line_config_error(
        excinfo, tmp_path / DB_NAME)


def test_a_database_of_an_unknown_schema_is_refused(tmp_path: Path):
    Storage.open(tmp_path, 1).close()
    conn = sqlite3.connect(tmp_path / DB_NAME)
    conn.execute("UPDATE meta SET value = '4' WHERE key = 'schema'")
    conn.commit()
    conn.close()
    with pytest.raises(ConfigError) as excinfo:
        Storage.open(tmp_path, 1)
    assert "schema version 4" in one_line_config_error(excinfo, tmp_path / DB_NAME)


def test_an_unusable_directory_is_refused(tmp_path: Path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot create"):
        Storage.open(tmp_path / "file" / "sub", 1)


def test_the_database_is_in_wal_mode(tmp_path: Path):
    Storage.open(tmp_path, 1).close()
    conn = sqlite3.connect(tmp_path / DB_NAME)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        assert meta["schema"] == "3" and meta["node_id"] == "1"
    finally:
        conn.close()
