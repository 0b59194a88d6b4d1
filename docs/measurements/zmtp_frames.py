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
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(1, os.path.join(HERE, "..", "..", "tests"))
from harness import LocalCluster  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def greeting() -> bytes:
    """ZMTP 3.0 greeting (RFC 23), NULL mechanism, as a client."""
    return (b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00")
            + b"\x00" + b"\x00" * 31)


def ready() -> bytes:
    name, value = b"Socket-Type", b"DEALER"
    body = b"\x05READY" + bytes([len(name)]) + name + struct.pack(">I", len(value)) + value
    return b"\x04" + bytes([len(body)]) + body


def frame(body: bytes, more: bool) -> bytes:
    flags = 0x01 if more else 0x00
    if len(body) < 256:
        return bytes([flags]) + bytes([len(body)]) + body
    return bytes([flags | 0x02]) + struct.pack(">Q", len(body)) + body


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        part = sock.recv(n - len(data))
        if not part:
            raise ConnectionError("closed during the handshake")
        data += part
    return data


def attack(endpoint: str, pid: int, seconds: float, size: int, limit_mib: float) -> float:
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=5)
    # Step by step, as libzmq does: frames pipelined behind the handshake before the
    # node's READY arrived made it drop the connection at once.
    sock.sendall(greeting())
    _recv_exactly(sock, 64)
    sock.sendall(ready())
    sock.recv(256)  # the node's READY
    chunk = frame(b"x" * size, more=True) * max(1, (1 << 20) // (size + 9))
    start = time.monotonic()
    next_print = start
    sent = 0
    peak = 0.0
    sock.settimeout(0.5)
    try:
        while (now := time.monotonic()) - start < seconds:
            try:
                sock.sendall(chunk)
                sent += len(chunk)
            except TimeoutError:
                pass  # the node stopped reading (TCP backpressure)
            except OSError as exc:
                print(f"  t={now - start:5.1f}s  connection ended by the node: {exc}")
                break
            if now >= next_print:
                rss = rss_mib(pid)
                peak = max(peak, rss)
                print(f"  t={now - start:5.1f}s  sent {sent / 2**20:8.1f} MiB  "
                      f"node RSS {rss:7.1f} MiB")
                next_print = now + 0.5
                if rss > limit_mib:
                    print(f"  stop: RSS passed {limit_mib} MiB")
                    break
    finally:
        sock.close()
    return peak


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
                c.ping(1) if hasattr(c, "ping") else c.status(1)
            print(f"node answered in {time.monotonic() - t:.3f}s; "
                  f"RSS after {rss_mib(pid):.1f} MiB")


if __name__ == "__main__":
    main()
