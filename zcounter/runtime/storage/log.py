"""An append-only log of batches in preallocated, zero-filled segment files.

Why: one durable commit per batch is the floor of every write path here.  Measured on
this machine (400 commits each, same run; docs/measurements/storage_engines.py): SQLite WAL with
``synchronous=FULL`` 0.39 ms for one row and 7-10 ms for 256 random keys (each key
dirties a 4 KiB B-tree page); an append to a growing file + ``fdatasync`` 0.26 ms; a
``pwrite`` into a preallocated, already-written file + ``fdatasync`` 0.22 ms for one
record and 0.31 ms for 256, because nothing but the data changes on disk.

Format.  A segment is a file of ``segment_size`` zero bytes, named
``wal-<number>.log``, written front to back.  A record is::

    u32 length of payload | u32 crc32 of (lsn, length, payload) | u64 lsn | payload

LSNs (log sequence numbers) rise by one per record across segments.  A record that does
not fit in what is left of a segment goes to the start of the next one.  Reading stops
at the first record that is not valid - zero length (never written), a length past the
end, a CRC mismatch (a torn write), or an LSN that is not the next one (a stale file) -
so what a crash or a power loss left half-written is ignored, and everything before it,
in particular every record that was flushed, is read back.

Reuse.  A full-size segment that a checkpoint covers is not deleted but renamed to
``wal-reuse.log`` (not a segment name: recovery never reads it), and becomes the next
segment instead of a new zero-filled file.  Its old records stay behind the new ones
until overwritten; they are stale to the reader (their LSNs are at most the checkpoint's,
so never the next one), exactly as PostgreSQL recycles its WAL segments.  Why: under
keys drawn uniformly each increment logs a whole packed state at every node, and
zero-filling the next segment took 4-9 % of a node's profile samples (WRITEUP.md
section 4.1).  The file was written in full once, so reusing it keeps ``fdatasync`` free
of metadata, which is what the zero-filling was for.

Durability.  ``append(..., sync=True)`` returns only after ``fdatasync``, which also
makes every earlier record of the file durable; ``sync=False`` records survive a process
crash (they are in the page cache) but not necessarily a power loss.  A sync record is
never written to a new segment before the previous segment was flushed, so the flushed
records always form a prefix of the log.
"""

from __future__ import annotations

import contextlib
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from ...errors import ZCounterError
from .fileio import Files

_HEADER = struct.Struct("<IIQ")
HEADER_SIZE = _HEADER.size
_CRC_PART = struct.Struct("<QI")
PREFIX = "wal-"
SUFFIX = ".log"
#: A checkpointed segment kept to become the next one (not a segment name).
REUSE_NAME = f"{PREFIX}reuse{SUFFIX}"


class LogError(ZCounterError):
    """The log cannot be written (the node must stop: fail-stop)."""


def segment_name(number: int) -> str:
    return f"{PREFIX}{number:08d}{SUFFIX}"


def segment_number(name: str) -> int | None:
    if not (name.startswith(PREFIX) and name.endswith(SUFFIX)):
        return None
    digits = name[len(PREFIX):-len(SUFFIX)]
    return int(digits) if digits.isdigit() else None


def encode_record(lsn: int, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(_CRC_PART.pack(lsn, len(payload))))
    return _HEADER.pack(len(payload), crc, lsn) + payload


def read_records(data: bytes, first_lsn: int | None) -> Iterator[tuple[int, bytes]]:
    """Valid records of one segment's bytes, in order; ``first_lsn``: the LSN the first
    record must have (None: any)."""
    offset = 0
    expected = first_lsn
    end = len(data)
    while offset + HEADER_SIZE <= end:
        length, crc, lsn = _HEADER.unpack_from(data, offset)
        if length == 0 or offset + HEADER_SIZE + length > end:
            return
        if expected is not None and lsn != expected:
            return
        payload = data[offset + HEADER_SIZE:offset + HEADER_SIZE + length]
        if zlib.crc32(payload, zlib.crc32(_CRC_PART.pack(lsn, length))) != crc:
            return
        yield lsn, payload
        offset += HEADER_SIZE + length
        expected = lsn + 1


@dataclass(slots=True)
class Segment:
    number: int
    path: str
    fd: int
    size: int
    offset: int = 0


class SegmentLog:
    """The log of one node: recover what is there, then append."""

    def __init__(self, directory: str, files: Files, segment_size: int,
                 background: bool = True, first_segment_size: int | None = None) -> None:
        self.directory = directory
        self.files = files
        #: Segments start at ``first_segment_size`` and double up to ``segment_size``:
        #: an idle node (every test cluster) writes 2 MB of zeros, not 64 MB, while a
        #: busy one reaches full-size segments after a few rotations.
        self.segment_size = segment_size
        self.first_segment_size = min(first_segment_size or segment_size, segment_size)
        self._size = self.first_segment_size
        #: Pre-create the next segment in a thread (off the request path); the crash
        #: tests turn this off to make every step deterministic.
        self.background = background
        self._current: Segment | None = None
        self._next_lsn = 1
        self._unsynced = False
        self._spare: tuple[str, int] | None = None
        self._spare_lock = threading.Lock()
        self._spare_thread: threading.Thread | None = None
        #: The retired segment kept for reuse (:data:`REUSE_NAME`): renamed in by the
        #: checkpointer's thread, out by the thread preparing the next segment.
        self._reuse_path = f"{directory}/{REUSE_NAME}"
        self._reuse_lock = threading.Lock()
        self._reuse_ready = False

    def _path(self, number: int) -> str:
        return f"{self.directory}/{segment_name(number)}"

    def segment_numbers(self) -> list[int]:
        numbers = [n for name in self.files.listdir(self.directory)
                   if (n := segment_number(name)) is not None]
        return sorted(numbers)

    def recover(self, after_lsn: int) -> Iterator[tuple[int, bytes]]:
        """Every valid record after ``after_lsn``, in order, across segments: LSNs
        ``after_lsn + 1, after_lsn + 2, ...`` up to the first that is missing or invalid.
        Records at or below ``after_lsn`` (already checkpointed) are skipped.  Afterwards
        :attr:`next_lsn` is the LSN the next record gets."""
        last = after_lsn
        self._next_lsn = last + 1
        for number in self.segment_numbers():
            for lsn, payload in read_records(self.files.read(self._path(number)), None):
                if lsn <= after_lsn and last == after_lsn:
                    continue
                if lsn != last + 1:
                    return  # a gap or a stale record: the log ends here
                last = lsn
                self._next_lsn = last + 1
                yield lsn, payload

    @property
    def next_lsn(self) -> int:
        return self._next_lsn

    def start(self) -> None:
        """Begin writing into a fresh segment after every existing one."""
        if self.files.exists(self._reuse_path):  # kept by an earlier run
            if self.files.size(self._reuse_path) == self.segment_size:
                self._reuse_ready = True
            else:
                self.files.unlink(self._reuse_path)
        numbers = self.segment_numbers()
        self._size = self.first_segment_size
        self._open(numbers[-1] + 1 if numbers else 1, self._size)

    def _open(self, number: int, size: int) -> None:
        path = self._path(number)
        with self._spare_lock:
            spare, self._spare = self._spare, None
        if spare != (path, size):
            if spare is not None:
                self.files.unlink(spare[0])
            if self.files.exists(path):
                self.files.unlink(path)
            if not self._take_reuse(path, size):
                self.files.create_zeroed(path, size)
        self._current = Segment(number, path, self.files.open_rw(path), size)
        if self.background:
            self._prepare_spare(number + 1, min(size * 2, self.segment_size))

    def _prepare_spare(self, number: int, size: int) -> None:
        path = self._path(number)

        def make() -> None:
            try:
                if self.files.exists(path):
                    self.files.unlink(path)
                if not self._take_reuse(path, size):
                    self.files.create_zeroed(path, size)
            except OSError:
                return  # created at rotation instead (and its error surfaces there)
            with self._spare_lock:
                self._spare = (path, size)
        self._spare_thread = threading.Thread(target=make, name="zcounter-log-spare",
                                              daemon=True)
        self._spare_thread.start()

    def append(self, payload: bytes, sync: bool) -> int:
        """Write one record; with ``sync``, return only once it (and everything before
        it) is on disk.  Returns its LSN.  Raises :class:`LogError` on I/O failure."""
        lsn = self._next_lsn
        record = encode_record(lsn, payload)
        seg = self._segment()
        try:
            if seg.offset + len(record) > seg.size:
                # The rest of this segment stays zero.  What was written unflushed in it
                # must be durable before anything lands in the next segment, or a power
                # loss could keep a later record and lose an earlier one.
                if self._unsynced:
                    self.files.fdatasync(seg.fd)
                    self._unsynced = False
                self.files.close(seg.fd)
                if self._spare_thread is not None:
                    self._spare_thread.join()
                self._open(seg.number + 1,
                           max(min(seg.size * 2, self.segment_size), len(record)))
                seg = self._segment()
            self.files.pwrite(seg.fd, record, seg.offset)
            seg.offset += len(record)
            if sync:
                self.files.fdatasync(seg.fd)
                self._unsynced = False
            else:
                self._unsynced = True
        except OSError as exc:
            raise LogError(f"{seg.path}: {exc.strerror or exc}") from exc
        self._next_lsn = lsn + 1
        return lsn

    def flush(self) -> None:
        """Make every record written so far durable."""
        seg = self._current
        if seg is not None and self._unsynced:
            try:
                self.files.fdatasync(seg.fd)
            except OSError as exc:
                raise LogError(f"{seg.path}: {exc.strerror or exc}") from exc
            self._unsynced = False

    def _segment(self) -> Segment:
        assert self._current is not None, "start() first"
        return self._current

    @property
    def current_number(self) -> int:
        return self._segment().number

    def delete_before(self, number: int) -> None:
        """Retire every segment numbered below ``number`` (checkpointed): keep one
        full-size segment for reuse, delete the others."""
        for n in self.segment_numbers():
            if n < number:
                path = self._path(n)
                with self._reuse_lock:
                    if (not self._reuse_ready
                            and self.files.size(path) == self.segment_size):
                        self.files.rename(path, self._reuse_path)
                        self._reuse_ready = True
                        continue
                self.files.unlink(path)

    def _take_reuse(self, path: str, size: int) -> bool:
        """Rename the kept segment to ``path`` if it has ``size`` bytes; False if there
        is none (then the caller zero-fills a new file)."""
        with self._reuse_lock:
            if not self._reuse_ready or size != self.segment_size:
                return False
            self._reuse_ready = False
            self.files.rename(self._reuse_path, path)
            return True

    def close(self) -> None:
        if self._spare_thread is not None:
            self._spare_thread.join()
        if self._current is not None:
            if self._unsynced:
                with contextlib.suppress(OSError):
                    self.files.fdatasync(self._current.fd)
            self.files.close(self._current.fd)
            self._current = None
