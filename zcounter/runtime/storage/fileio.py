"""The file operations the log uses, behind one small interface.

Production uses :class:`OsFiles` (the ``os`` module).  The storage crash tests and the
simulator replace it with simulated files (:mod:`zcounter.sim.files`) that can fail at
any step, tear a write, or lose every write that was not yet flushed: the log's code
path is the same in all of them.
"""

from __future__ import annotations

import os
from typing import Protocol

#: Zero-filling writes this much at a time.
_ZERO_CHUNK = 1 << 20


class Files(Protocol):
    def listdir(self, path: str) -> list[str]: ...
    def exists(self, path: str) -> bool: ...
    def read(self, path: str) -> bytes: ...
    def create_zeroed(self, path: str, size: int) -> None:
        """Create ``path`` holding ``size`` zero bytes, durably (file and directory
        entry), atomically: a crash leaves either no file or the whole file."""
    def size(self, path: str) -> int: ...
    def rename(self, src: str, dst: str) -> None:
        """Rename ``src`` to ``dst`` (replacing it), durably (the directory entry)."""
    def open_rw(self, path: str) -> int: ...
    def pwrite(self, fd: int, data: bytes, offset: int) -> None: ...
    def fdatasync(self, fd: int) -> None: ...
    def close(self, fd: int) -> None: ...
    def unlink(self, path: str) -> None: ...


class OsFiles:
    """The real file system."""

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def read(self, path: str) -> bytes:
        with open(path, "rb") as fh:
            return fh.read()

    def create_zeroed(self, path: str, size: int) -> None:
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            # Written, not just fallocate()d: overwriting allocated-but-unwritten
            # extents makes every later fdatasync also commit an extent conversion to
            # the journal (measured here: 0.29 vs 0.21 ms per 16-record commit).
            zeros = bytes(_ZERO_CHUNK)
            done = 0
            while done < size:
                n = os.write(fd, zeros[:min(_ZERO_CHUNK, size - done)])
                done += n
            os.fdatasync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        _fsync_dir(os.path.dirname(path))

    def size(self, path: str) -> int:
        return os.path.getsize(path)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)
        _fsync_dir(os.path.dirname(dst))

    def open_rw(self, path: str) -> int:
        return os.open(path, os.O_RDWR)

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(fd, view, offset)
            view = view[n:]
            offset += n

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    def close(self, fd: int) -> None:
        os.close(fd)

    def unlink(self, path: str) -> None:
        os.unlink(path)


def _fsync_dir(path: str) -> None:
    fd = os.open(path or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
