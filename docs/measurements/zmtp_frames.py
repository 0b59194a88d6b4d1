"""Node RSS while one raw TCP client sends a ZeroMQ message whose frames never end
(issue 19): does libzmq buffer an unfinished multipart message before delivering it?

Usage: .venv/bin/python docs/measurements/zmtp_frames.py [SECONDS] [FRAME_BYTES] [LIMIT_MIB]

Starts one node (a one-node cluster on free loopback ports), speaks ZMTP 3.0 by hand over
a plain TCP socket (greeting, READY as a DEALER, then frames flagged MORE, never a last
one), and prints the node's RSS every 0.5 s.  Bounded: stops after SECONDS (default 10)
or once the node's RSS passes LIMIT_MIB (default 1500), whichever comes first; then
prints whether the node is still alive and still answers a ping.  FRAME_BYTES (default
65536) is each frame's body size.
"""
from __future__ import annotations

import os
import select
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(1, os.path.join(HERE, "..", "..", "tests"))
from harness import LocalCluster  # noqa: E402
from zmtp import connect, frame  # noqa: E402


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


class PeakRss(threading.Thread):
    """Samples a process's RSS every 20 ms (VmHWM is per process lifetime: useless to
    compare before and after)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.02):
            self.peak = max(self.peak, rss_mib(self.pid))


def attack(endpoint: str, pid: int, seconds: float, size: int, limit_mib: float) -> float:
    sock = connect(endpoint)
    chunk = frame(b"x" * size, more=True) * max(1, (1 << 20) // (size + 9))
    start = time.monotonic()
    next_print = start
    sent = 0
    sampler = PeakRss(pid)
    sampler.start()
    sock.settimeout(0.5)
    try:
        while (now := time.monotonic()) - start < seconds:
            try:
                sock.sendall(chunk)
                sent += len(chunk)
            except TimeoutError:
                pass  # the node stopped reading (TCP backpressure)
            except OSError as exc:
                print(f"  t={now - start:5.1f}s  sent {sent / 2**20:8.1f} MiB  connection "
                      f"ended by the node: {exc}")
                break
            if select.select([sock], [], [], 0)[0] and sock.recv(1) == b"":
                print(f"  t={now - start:5.1f}s  sent {sent / 2**20:8.1f} MiB  connection "
                      "closed by the node (EOF)")
                break
            if now >= next_print:
                rss = rss_mib(pid)
                print(f"  t={now - start:5.1f}s  sent {sent / 2**20:8.1f} MiB  "
                      f"node RSS {rss:7.1f} MiB")
                next_print = now + 0.5
                if rss > limit_mib:
                    print(f"  stop: RSS passed {limit_mib} MiB")
                    break
    finally:
        sock.close()
        sampler.stop.set()
        sampler.join()
    return sampler.peak


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 65536
    limit = float(sys.argv[3]) if len(sys.argv) > 3 else 1500.0
    with LocalCluster(Path(tempfile.mkdtemp()) / "c", n=1) as cluster:
        cluster.start_all()
        pid = cluster.procs[1].pid
        print(f"node RSS at start {rss_mib(pid):.1f} MiB; frames of {size} bytes, MORE set")
        peak = attack(cluster.router(1), pid, seconds, size, limit)
        alive = cluster.procs[1].poll() is None
        print(f"peak RSS {peak:.1f} MiB; node alive: {alive}")
        if alive:
            t = time.monotonic()
            with cluster.client(1, timeout=5.0) as c:
                stats = c.status(1)["stats"]
            print(f"node answered in {time.monotonic() - t:.3f}s; "
                  f"RSS after {rss_mib(pid):.1f} MiB; connections_cut "
                  f"{stats.get('connections_cut', 0)}")
            print(cluster.log_path(1).read_text()[-400:])


if __name__ == "__main__":
    main()
