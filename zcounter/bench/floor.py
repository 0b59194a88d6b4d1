"""The commit floor: what one durable write costs on the data directory's file system.

At window 1 every acknowledged increment pays one durable commit, so this bounds what
any design can reach there: the node's own storage commit of one key (``sync``, what an
acknowledged increment pays, and without ``sync``, what merged peer state pays), through
:class:`zcounter.runtime.storage.Storage` whatever engine is behind it, against a raw
append + ``fdatasync`` (what Redis ``appendfsync always`` pays) and a write into a
preallocated file (no metadata to flush).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from ..model.keyspace import pack
from ..protocol.outputs import Persist
from ..runtime.storage import Storage

RECORD_BYTES = 48


def commit_costs(root: Path, n: int = 300) -> dict[str, float]:
    """Mean seconds per durable write, ``n`` writes each, in a scratch directory."""
    where = root / "commit-floor"
    out: dict[str, float] = {}
    store = Storage.open(where, 1)
    try:
        store.commit(Persist(slots=[(0, f"1.{store.incarnation}")], sync=True))
        for label, sync in (("storage_sync_s", True), ("storage_nosync_s", False)):
            base = 0 if sync else n
            t0 = time.perf_counter()
            for i in range(n):
                # One key's state, as an increment of one key writes it.
                store.commit(Persist(states={"k0": pack({0: (base + i + 1, 0, 0, 0)})},
                                     sync=sync))
            out[label] = (time.perf_counter() - t0) / n
    finally:
        store.close()
    record = b"x" * RECORD_BYTES
    fd = os.open(where / "append.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            os.write(fd, record)
            os.fdatasync(fd)
        out["append_fdatasync_s"] = (time.perf_counter() - t0) / n
    finally:
        os.close(fd)
    fd = os.open(where / "prealloc.log", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, b"\0" * 64 * n, 0)
        os.fsync(fd)
        t0 = time.perf_counter()
        for i in range(n):
            os.pwrite(fd, record, i * 64)
            os.fdatasync(fd)
        out["prealloc_fdatasync_s"] = (time.perf_counter() - t0) / n
    finally:
        os.close(fd)
    shutil.rmtree(where, ignore_errors=True)
    return out
