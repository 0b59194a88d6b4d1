"""A zcounter 0.2 data directory (schema 2, states in 0.2's packed form, in the
checkpoint and in the log's tail) opens, converts in place (schema 3, issue 21) and reads
the same counts; and what issue 21 adds to the storage: collected keys deleted, the
high-water kept.

The 0.2 directory is built here with 0.2's packing written out by hand (a 9-byte header
``<QB`` - key hash, live flag - then ``<IQQQQ`` records), through the storage itself (its
log framing and SQLite tables are unchanged since 0.2), then marked schema 2.
"""

from __future__ import annotations

import sqlite3
import struct
from pathlib import Path

from zcounter.model.hashtree import key_digest, record_hash
from zcounter.model.keyspace import Keyspace
from zcounter.model.records import FORMAT, HEAD_SIZE, pack_state
from zcounter.protocol.outputs import Persist
from zcounter.runtime.storage import DB_NAME, Storage

OWN, PEER = "1.5f0c1a9e3b7d", "2.77aa88bb99cc"
#: key -> {slot index: (p, n, bp, bn)}
STATES = {
    "a": {0: (5, 1, 0, 0), 1: (7, 0, 0, 0)},
    "reset": {0: (3, 0, 3, 0)},
    "tail": {0: (9, 2, 1, 0), 1: (4, 4, 0, 0)},  # only in the log (replayed)
}


def old_blob(key: str, records: dict[int, tuple[int, int, int, int]]) -> bytes:
    """0.2's packed state, by hand."""
    digest = key_digest(key.encode())
    names = [OWN.encode(), PEER.encode()]
    h = 0
    for s, rec in records.items():
        h ^= record_hash(digest, names[s], rec)
    live = any(p > bp or n > bn for p, n, bp, bn in records.values())
    return (struct.pack("<QB", h, 1 if live else 0)
            + b"".join(struct.pack("<IQQQQ", s, *rec) for s, rec in sorted(records.items())))


def write_0_2(data_dir: Path) -> None:
    storage = Storage.open(data_dir, 1, background=False)
    storage.commit(Persist({k: old_blob(k, STATES[k]) for k in ("a", "reset")},
                           [(0, OWN), (1, PEER)], sync=True))
    storage.close()  # checkpointed
    storage = Storage.open(data_dir, 1, background=False)
    storage.commit(Persist({"tail": old_blob("tail", STATES["tail"])}, sync=True))
    storage._log.close()  # a crash: the tail stays in the log only
    storage._checkpoint.close()
    conn = sqlite3.connect(data_dir / DB_NAME)
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema'")
    conn.execute("DELETE FROM meta WHERE key = 'high_water'")
    conn.commit()
    conn.close()


def test_a_0_2_directory_opens_converts_and_reads_the_same_counts(tmp_path: Path):
    write_0_2(tmp_path)
    conn = sqlite3.connect(tmp_path / DB_NAME)
    assert all(not blob[8] & FORMAT for _, blob in conn.execute(
        "SELECT key, state FROM counters"))  # 0.2's form before the upgrade
    conn.close()
    storage = Storage.open(tmp_path, 1, background=False)
    assert storage.recovered_records == 1 and storage.load_high_water() == (0, 0)
    rows = dict(storage.load_states())
    assert set(rows) == set(STATES) and all(blob[8] & FORMAT for blob in rows.values())
    ks = Keyspace()
    ks.load(storage.load_slot_names(), rows.items(), storage.load_high_water())
    now = 1_700_000_000_000
    assert {k: ks.value(k, now) for k in STATES} == {"a": 11, "reset": 0, "tail": 6}
    assert ks.exists("a", now) and not ks.exists("reset", now) and ks.live == 2
    # Hashes unchanged: the tree is the one the same states packed afresh make.
    fresh = Keyspace()
    fresh.load([OWN, PEER], [(k, pack_state(k, recs, [OWN.encode(), PEER.encode()]))
                             for k, recs in STATES.items()])
    assert fresh.tree == ks.tree and fresh.state("tail") == ks.state("tail")
    storage.close()
    conn = sqlite3.connect(tmp_path / DB_NAME)
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    conn.close()
    assert meta["schema"] == "3" and meta["high_water"] == "0 0"


def test_collected_keys_and_the_high_water_are_persisted(tmp_path: Path):
    storage = Storage.open(tmp_path, 1, background=False)
    ks = Keyspace()
    own = ks.own_slot = ks.slots.intern(OWN)
    ks.add("gone", own, 5, 1000, ttl_ms=10)
    ks.add("kept", own, 2, 1000)
    out = ks.flush()
    storage.commit(Persist(out.changed, out.new_slots, sync=True))
    assert ks.dead(2000, 10) == ["gone"]
    ks.collect(["gone"])
    out = ks.flush()
    assert out.removed == ["gone"] and out.high_water == (5, 0)
    storage.commit(Persist(out.changed, out.new_slots, removed=out.removed,
                           high_water=out.high_water, sync=True))
    storage._log.close()  # a crash: recovered from the log
    storage._checkpoint.close()
    for _ in range(2):  # replayed from the log, then from the checkpoint
        storage = Storage.open(tmp_path, 1, background=False)
        assert dict(storage.load_states()).keys() == {"kept"}
        assert storage.load_high_water() == (5, 0)
        storage.close()
    loaded = Keyspace()
    storage = Storage.open(tmp_path, 1, background=False)
    loaded.load(storage.load_slot_names(), storage.load_states(), storage.load_high_water())
    storage.close()
    assert loaded.high_water == (5, 0) and loaded.tree == ks.tree
    assert len(next(iter(dict(loaded._packed).values()))) == HEAD_SIZE + 44
