"""The log's reuse of checkpointed segments (zcounter.runtime.storage.log), on the real
file system: a reused file becomes the next segment, its old records are never read
back, and a reused spare left unwritten by a restart loses nothing.  (Every crash,
torn write and power loss around a reuse: test_storage_crash.py, whose tiny segments
reuse a file every few batches.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from zcounter.runtime.storage.fileio import OsFiles
from zcounter.runtime.storage.log import REUSE_NAME, SegmentLog

SIZE = 4096


def fill(log: SegmentLog, records: dict[int, bytes], segments: int) -> int:
    """Append records until ``segments`` rotations happened; returns the last LSN
    written before the current segment (what a checkpoint of the older ones covers)."""
    covered = 0
    start = log.current_number
    i = len(records)
    while log.current_number < start + segments:
        before = log.current_number
        payload = f"record {i} ".encode() * 20
        lsn = log.append(payload, sync=i % 2 == 0)
        if log.current_number != before:
            covered = lsn - 1
        records[lsn] = payload
        i += 1
    return covered


def segment_inode(tmp_path: Path, number: int) -> int:
    return os.stat(tmp_path / f"wal-{number:08d}.log").st_ino


@pytest.mark.parametrize("background", [False, True])
def test_a_checkpointed_segment_is_reused_and_its_old_records_are_never_read(
        tmp_path: Path, background: bool):
    log = SegmentLog(str(tmp_path), OsFiles(), SIZE, background=background)
    log.start()
    records: dict[int, bytes] = {}
    covered = fill(log, records, 3)
    retired = {segment_inode(tmp_path, n) for n in log.segment_numbers()
               if n < log.current_number}
    log.delete_before(log.current_number)
    reuse = tmp_path / REUSE_NAME
    assert min(log.segment_numbers()) == log.current_number
    kept = os.stat(reuse).st_ino
    assert kept in retired
    # The next segment that needs a file gets this one.  With a background thread that
    # is a spare: the one prepared after the next rotation, or - if the thread preparing
    # the current spare was still running when the file was kept - that spare, now the
    # current segment.
    fill(log, records, 1)
    candidates = [log.current_number, log.current_number + 1] if background else [
        log.current_number]
    if background:
        log.close()  # joins the spare thread
    assert not reuse.exists()
    inodes = {n: segment_inode(tmp_path, n) for n in candidates
              if (tmp_path / f"wal-{n:08d}.log").exists()}
    assert kept in inodes.values()
    reused = next(n for n, inode in inodes.items() if inode == kept)
    if not background:  # a few records in the reused file, old ones behind them
        for i in range(3):
            records[log.append(b"tail %d" % i, sync=True)] = b"tail %d" % i
        assert os.path.getsize(tmp_path / f"wal-{reused:08d}.log") == SIZE
        log.close()
    again = SegmentLog(str(tmp_path), OsFiles(), SIZE, background=False)
    got = dict(again.recover(covered))
    assert got == {lsn: p for lsn, p in records.items() if lsn > covered}
    assert again.next_lsn == max(records) + 1


def test_a_kept_file_of_another_size_is_dropped_at_start(tmp_path: Path):
    (tmp_path / REUSE_NAME).write_bytes(bytes(100))
    log = SegmentLog(str(tmp_path), OsFiles(), SIZE, background=False)
    log.start()
    assert not (tmp_path / REUSE_NAME).exists()
    log.close()
    (tmp_path / REUSE_NAME).write_bytes(bytes(SIZE))
    log = SegmentLog(str(tmp_path), OsFiles(), SIZE, background=False)
    inode = os.stat(tmp_path / REUSE_NAME).st_ino
    log.start()  # a file of the right size is the first segment's
    assert not (tmp_path / REUSE_NAME).exists()
    assert segment_inode(tmp_path, log.current_number) == inode
    log.close()
