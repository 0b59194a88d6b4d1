"""A simulated file system (the :class:`~zcounter.runtime.storage.fileio.Files` the
storage writes through): a page cache over durable contents.  The simulator's nodes
(:mod:`.disk`) and the storage crash tests (tests/runtime/test_storage_crash.py) run the
real log over it.

Every file has what the OS shows (``cached``) and what a power loss keeps
(``durable``).  ``pwrite`` changes the cache; ``fdatasync`` makes the file's cache
durable; creating a zeroed file, renaming and unlinking are durable at once (the real
code fsyncs the directory).  The disk can be told to *crash* at its n-th operation - raising
:class:`Crash` before it, or, for a write, after a torn prefix of it - and then to lose
power (every file back to its durable contents) or not (a process crash: the page cache
survives).
"""

from __future__ import annotations

from dataclasses import dataclass, field


class Crash(Exception):
    """The simulated process died here."""


@dataclass
class SimFile:
    cached: bytearray
    durable: bytearray


@dataclass
class SimFiles:
    crash_at: int | None = None
    #: For a crash on a write: how many bytes of it land (None: none).
    torn_bytes: int | None = None
    ops: int = 0
    files: dict[str, SimFile] = field(default_factory=dict)
    fds: dict[int, str] = field(default_factory=dict)
    next_fd: int = 1000
    crashed: bool = False

    def _step(self) -> None:
        if self.crashed:
            raise Crash("already crashed")
        self.ops += 1
        if self.crash_at is not None and self.ops == self.crash_at:
            self.crashed = True
            raise Crash(f"crash at operation {self.ops}")

    # -- the Files protocol
    def listdir(self, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"
        return [p[len(prefix):] for p in self.files if p.startswith(prefix)
                and "/" not in p[len(prefix):]]

    def exists(self, path: str) -> bool:
        return path in self.files

    def read(self, path: str) -> bytes:
        return bytes(self.files[path].cached)

    def create_zeroed(self, path: str, size: int) -> None:
        self._step()
        self.files[path] = SimFile(bytearray(size), bytearray(size))

    def size(self, path: str) -> int:
        return len(self.files[path].cached)

    def rename(self, src: str, dst: str) -> None:
        self._step()
        self.files[dst] = self.files.pop(src)

    def open_rw(self, path: str) -> int:
        if path not in self.files:
            raise FileNotFoundError(path)
        fd = self.next_fd
        self.next_fd += 1
        self.fds[fd] = path
        return fd

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        if self.crashed:
            raise Crash("already crashed")
        self.ops += 1
        f = self.files[self.fds[fd]]
        if self.crash_at is not None and self.ops == self.crash_at:
            self.crashed = True
            if self.torn_bytes:
                n = min(self.torn_bytes, len(data))
                f.cached[offset:offset + n] = data[:n]
            raise Crash(f"crash during a write at operation {self.ops}")
        f.cached[offset:offset + len(data)] = data

    def fdatasync(self, fd: int) -> None:
        self._step()
        f = self.files[self.fds[fd]]
        f.durable[:] = f.cached

    def close(self, fd: int) -> None:
        self.fds.pop(fd, None)

    def unlink(self, path: str) -> None:
        self._step()
        del self.files[path]

    # -- faults
    def power_loss(self) -> None:
        for f in self.files.values():
            f.cached[:] = f.durable

    def restart(self) -> None:
        """The next process: no crash pending, fds gone, cache as it is."""
        self.crash_at = None
        self.crashed = False
        self.fds.clear()

