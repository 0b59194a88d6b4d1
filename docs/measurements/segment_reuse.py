"""What preparing the log's next segment does to the node's own ``fdatasync``
(WRITEUP.md section 4.1): a thread appends a 200-byte record and ``fdatasync``s it in a
loop, as the node's commit does, while another thread prepares a 32 MiB segment every
0.5 s - by zero-filling a new file (the log of zcounter 0.2.0), by renaming a kept file
(checkpointed segments reused), or not at all.

Usage: .venv/bin/python docs/measurements/segment_reuse.py [SECONDS]   (6 per run)
Prints per mode: fdatasync count, p50, p99, p99.9, max; and the CPU and wall time of
one zero-fill and one rename.  The rate is far above a node's (a segment every few
seconds at most) so that six seconds show the tail; the per-event stall is what counts."""
import os, resource, shutil, sys, tempfile, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
from zcounter.runtime.storage.fileio import OsFiles  # noqa: E402

SECS = float(sys.argv[1]) if len(sys.argv) > 1 else 6.0
SIZE = 32 << 20
files = OsFiles()
d = tempfile.mkdtemp(dir=os.environ.get("TMPDIR_DISK", "/work/scratch"))


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run(mode: str, fd: int) -> None:
    stop = threading.Event()

    def prepare() -> None:
        i = 0
        while not stop.is_set():
            if mode == "zero-fill":
                files.create_zeroed(f"{d}/spare{i % 2}", SIZE)
            elif mode == "rename":
                files.rename(f"{d}/keep", f"{d}/keep2")
                files.rename(f"{d}/keep2", f"{d}/keep")
            i += 1
            stop.wait(0.5)
    t = threading.Thread(target=prepare)
    t.start()
    record = os.urandom(200)
    lat = []
    off = 0
    end = time.perf_counter() + SECS
    while time.perf_counter() < end:
        os.pwrite(fd, record, off)
        off = (off + 4096) % SIZE
        t0 = time.perf_counter()
        os.fdatasync(fd)
        lat.append(time.perf_counter() - t0)
        time.sleep(0.0005)
    stop.set()
    t.join()
    lat.sort()

    def q(p: float) -> float:
        return lat[int(p * (len(lat) - 1))] * 1e3
    print(f"{mode:9s} n={len(lat):5d}  p50 {q(.5):.3f}  p99 {q(.99):.3f}  "
          f"p99.9 {q(.999):.3f}  max {lat[-1] * 1e3:.1f} ms")


try:
    files.create_zeroed(f"{d}/log", SIZE)
    files.create_zeroed(f"{d}/keep", SIZE)
    for i in range(3):
        c0, t0 = cpu(), time.perf_counter()
        files.create_zeroed(f"{d}/z{i}", SIZE)
        c1, t1 = cpu(), time.perf_counter()
        files.rename(f"{d}/z{i}", f"{d}/r{i}")
        c2, t2 = cpu(), time.perf_counter()
        print(f"one 32 MiB zero-fill {(t1 - t0) * 1e3:.1f} ms wall, {(c1 - c0) * 1e3:.1f} ms "
              f"CPU; one rename {(t2 - t1) * 1e3:.2f} ms wall, {(c2 - c1) * 1e3:.2f} ms CPU")
    fd = os.open(f"{d}/log", os.O_RDWR)
    for mode in ("none", "zero-fill", "rename", "zero-fill", "rename", "none"):
        run(mode, fd)
    os.close(fd)
finally:
    shutil.rmtree(d)
