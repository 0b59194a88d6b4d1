"""Child-process and port helpers shared by ``zcounter-cluster``, the benchmark and the
tests' harnesses (loopback only)."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Iterable

# Ports handed out by this process: never handed out twice, so one cluster file cannot name
# a port twice. Binding port 0 cannot promise that: the OS hands back a port it just freed,
# and CI failed once on exactly that (nodes.3.pub equal to nodes.2.pub, run 2026-11-27).
_HANDED_OUT: set[tuple[str, int]] = set()
_RNG = random.Random(os.getpid() ^ time.monotonic_ns())


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports that were free a moment ago and that this process has
    not handed out before.

    They are drawn from just below the kernel's ephemeral range, so the source port of some
    unrelated outgoing connection cannot take one between this call and the bind that uses
    it (a port the OS picks for ``bind(0)`` lies inside that range)."""
    lo, _hi = _ephemeral_range()
    first = max(1024, lo - 12_000)
    ports: list[int] = []
    for _attempt in range(50 * count + 1000):
        if len(ports) == count:
            return ports
        port = _RNG.randrange(first, lo) if lo - first >= 1000 else 0
        if port == 0:  # no room below the ephemeral range: let the OS choose
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port = int(s.getsockname()[1])
        if (host, port) in _HANDED_OUT or not _bindable(host, port):
            continue
        _HANDED_OUT.add((host, port))
        ports.append(port)
    raise OSError(f"no {count} free TCP ports found on {host}")


def free_port(host: str = "127.0.0.1") -> int:
    """One TCP port as :func:`free_ports` gives them."""
    return free_ports(1, host)[0]


def stop_processes(procs: Iterable[subprocess.Popen[bytes]], grace_s: float = 10.0) -> None:
    """SIGTERM every live process (SIGCONT first: a stopped one cannot act on it), wait up
    to ``grace_s`` for all of them together, then SIGKILL what is left."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
