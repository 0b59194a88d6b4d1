"""Idle connections against one real node, door by door (issue 19): what the node logs,
whether its other clients get answers, whether it checkpoints, how many threads and how
much memory it holds.  Usage (from the repository root, .venv active):

    python docs/measurements/fd_flood.py resp      # 300 idle RESP connections, limit 256
    python docs/measurements/fd_flood.py native    # 260 raw TCP to the ROUTER, limit 256,
                                                   # then writes that force a checkpoint
    python docs/measurements/fd_flood.py metrics   # 2,000 idle + 50 half heads on /metrics

Measured on the project's 2-core machine (main at d74298a and 2b120b3 -> this branch):
  resp:    72,556 and 44,836 log lines in 5 s, a native increment timed out (2 s)
           -> 4 lines, the increment answered in 5 ms, new RESP clients told
           "max number of clients reached"
  native:  256 descriptors in use, writes stalled, the checkpoint failed with EMFILE:
           exit 1
           -> 109 descriptors in use, checkpoints done, exit 0
  metrics: 450 connections: 456 threads, RSS +9 MB, 60 s to open 400 (backlog 5)
           -> 2,050 connections: 6 threads, RSS +4 kB, opened in 1.2 s, scrapes 0.06-0.11 s
"""

from __future__ import annotations

import os
import resource
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from harness import LocalCluster


class LowLimit(LocalCluster):
    def command(self, node: int) -> list[str]:
        return ["prlimit", "--nofile=256:256", "--", *super().command(node)]


def status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("Threads", "VmRSS"):
            out[name] = int(value.split()[0])
    return out


def resp(c: LocalCluster) -> None:
    socks = [socket.create_connection(("127.0.0.1", c.resp_port(1)), 5) for _ in range(300)]
    time.sleep(5)
    print("log lines after 5 s:", len(c.log_path(1).read_text().splitlines()))
    started = time.monotonic()
    try:
        with c.client(1, timeout=2, retries=0) as client:
            client.increment(key="x")
        print(f"native increment: {time.monotonic() - started:.3f}s")
    except Exception as exc:
        print(f"native increment failed after {time.monotonic() - started:.2f}s: {exc}")
    for sock in socks:
        sock.close()


def native(c: LocalCluster) -> None:
    raw = c.raw(1)
    host, port = c.router(1).removeprefix("tcp://").rsplit(":", 1)
    socks = [socket.create_connection((host, int(port)), 5) for _ in range(260)]
    time.sleep(1)
    print("node descriptors:", len(os.listdir(f"/proc/{c.procs[1].pid}/fd")))
    try:
        for batch in range(5):
            raw.pipeline(({"op": "increment", "key": f"k{batch}:{i}:" + "x" * 200}
                          for i in range(2000)), timeout=10)
        print("segments:", sorted(n for n in os.listdir(c.data_dir(1)) if n.startswith("wal")))
    except AssertionError as exc:
        print("writes:", exc)
    time.sleep(2)
    print("node exit code so far:", c.procs[1].poll())
    raw.close()
    for sock in socks:
        sock.close()


def metrics(c: LocalCluster) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 5000), hard))
    pid = c.procs[1].pid
    host, port = c.config.node(1).metrics.rsplit(":", 1)  # type: ignore[union-attr]

    def scrape() -> str:
        started = time.monotonic()
        try:
            with urllib.request.urlopen(c.metrics_url(1), timeout=10) as reply:
                reply.read()
            return f"{time.monotonic() - started:.3f}s"
        except OSError as exc:
            return f"failed after {time.monotonic() - started:.2f}s ({exc})"
    print("before:", status(pid), "scrape", scrape())
    started = time.monotonic()
    socks = [socket.create_connection((host, int(port)), 5) for _ in range(2000)]
    print(f"2,000 connections opened in {time.monotonic() - started:.2f}s")
    for _ in range(50):
        sock = socket.create_connection((host, int(port)), 5)
        sock.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX: a")
        socks.append(sock)
    time.sleep(1)
    print("during:", status(pid), "scrapes", [scrape() for _ in range(5)])
    for sock in socks:
        sock.close()


def main() -> None:
    what = sys.argv[1] if len(sys.argv) > 1 else "resp"
    with tempfile.TemporaryDirectory() as tmp:
        cluster = (LocalCluster(Path(tmp), n=1, metrics=True) if what == "metrics"
                   else LowLimit(Path(tmp), n=1, resp=True, metrics=True))
        try:
            cluster.start_all()
            {"resp": resp, "native": native, "metrics": metrics}[what](cluster)
        finally:
            cluster.stop_all()
            print("exit code:", cluster.procs[1].returncode)


if __name__ == "__main__":
    main()
