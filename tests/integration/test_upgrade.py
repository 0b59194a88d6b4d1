"""A data directory written by zcounter 0.1 (schema 1) is upgraded in place by a real node.

The database is built exactly as zcounter 0.1 wrote it (``tests/schema1.py``: 0.1's
statements, verbatim): the node's own slot and one of another node, and two request ids.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from harness import LocalCluster, wait_for
from schema1 import commit_schema_1, open_schema_1

pytestmark = pytest.mark.integration

INCARNATION = "0123456789ab"
OWN_SLOT = f"1.{INCARNATION}"
OTHER_SLOT = "2.00000000beef"  # an earlier incarnation of node 2


def write_schema_1(data_dir: Path, node_id: int, slots: dict[str, int],
                   rids: list[tuple[str, str, int]]) -> Path:
    """What zcounter 0.1's ``Storage.open`` and ``commit`` left on disk."""
    conn = open_schema_1(data_dir, node_id, INCARNATION)
    commit_schema_1(conn, slots, rids, [], True)
    commit_schema_1(conn, {}, [], [], True, barrier=1)
    conn.close()
    return data_dir / "zcounter.sqlite3"


def test_a_0_1_data_directory_is_upgraded_and_its_request_ids_still_count_once(
        tmp_path: Path):
    with LocalCluster(tmp_path / "c") as cluster:
        # Node 1 applied "old-1" (its slot went 4 -> 5) and "old-2" (11 -> 12); node 2's
        # earlier incarnation had counted 30.
        db = write_schema_1(cluster.data_dir(1), 1, {OWN_SLOT: 12, OTHER_SLOT: 30},
                            [("old-1", OWN_SLOT, 5), ("old-2", OWN_SLOT, 12)])
        cluster.start(1)
        assert cluster.count(1) == 42
        status = cluster.status(1)
        assert status["slot"] == OWN_SLOT  # the incarnation is kept: the same slot goes on
        assert status["request_ids_remembered"] == 2
        with sqlite3.connect(db) as conn:
            meta = dict(conn.execute("SELECT key, value FROM meta"))
        assert meta["schema"] == "3" and meta["node_id"] == "1"  # 0.1 -> 2 -> 3 (issue 21)
        # A retry of a request id applied before the upgrade counts once.
        again = cluster.cli("--node", "1", "increment", "--request-id", "old-1")
        assert (again.returncode, again.stdout) == (0, "42\n"), again.stderr
        assert cluster.stat(1, "duplicates") == 1
        # The seed's form reads the single counter as before.
        seed = cluster.cli("--nodeId", "1", "--action=getCount")
        assert (seed.returncode, seed.stdout) == (0, "42\n"), seed.stderr
        # New nodes join; the counter and its request ids reach them.
        cluster.start(2)
        cluster.start(3)
        cluster.wait_converged(42, nodes=cluster.ids)
        wait_for(lambda: cluster.status(3)["request_ids_remembered"] >= 2, 10.0,
                 what="node 3 to learn the upgraded request ids")
        retry = cluster.cli("--node", "3", "increment", "--request-id", "old-2",
                            "--wait", "all")
        assert (retry.returncode, retry.stdout) == (0, "42\n"), retry.stderr
        fresh = cluster.cli("--node", "1", "increment", "--request-id", "new-1")
        assert (fresh.returncode, fresh.stdout) == (0, "43\n"), fresh.stderr
        cluster.wait_converged(43, nodes=cluster.ids)
        # A restart opens the upgraded database as it is (no second upgrade).
        cluster.kill(1)
        cluster.start(1)
        assert cluster.count(1) == 43
        assert cluster.status(1)["slot"] == OWN_SLOT
        again = cluster.cli("--node", "1", "increment", "--request-id", "old-1")
        assert (again.returncode, again.stdout) == (0, "43\n"), again.stderr
        with cluster.client(2) as c:
            states = c.get_counts(["default"])
            assert states == {"default": 43}
            assert c.seen["default"][OTHER_SLOT] == (30, 0, 0, 0)
