"""Figures read from the operating system, and the statistics the report prints."""

from __future__ import annotations

import math
import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def rss_kib(pid: int, field: str = "VmRSS") -> int | None:
    """Resident set size (``VmRSS``; ``VmHWM``: its peak so far) of a live process, in
    KiB; None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far.  On a shared, noisy machine this is
    the stable figure: other tenants slow a run down but do not add to its CPU time."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dir_bytes(path: Path) -> dict[str, int]:
    """Sizes of the files directly in ``path`` (a node's data directory), and their total."""
    sizes: dict[str, int] = {}
    try:
        entries = list(os.scandir(path))
    except OSError:
        entries = []
    for entry in entries:
        # One file gone between the listing and its stat (the log's spare segment is
        # renamed from .tmp by a background thread) skips that file, not the rest.
        try:
            if entry.is_file(follow_symlinks=False):
                sizes[entry.name] = entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue
    sizes["total"] = sum(sizes.values())
    return sizes


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize(values: list[float]) -> dict[str, float]:
    s = sorted(values)
    return {"n": len(s), "p50": percentile(s, 50), "p99": percentile(s, 99),
            "p99.9": percentile(s, 99.9), "max": s[-1] if s else math.nan}


def median(values: list[float]) -> float:
    s = sorted(values)
    if not s:
        return math.nan
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def per_increment(before: tuple[int, int], after: tuple[int, int], acked: int) -> dict[str, Any]:
    """Peer messages and bytes (deltas of the nodes' counters) per acknowledged write."""
    msgs, byts = after[0] - before[0], after[1] - before[1]
    return {"increments": acked, "peer_messages": msgs, "peer_bytes": byts,
            "messages_per_increment": msgs / acked if acked else math.nan,
            "bytes_per_increment": byts / acked if acked else math.nan}


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator or math.isnan(numerator):
        return None
    return numerator / denominator


def stat_delta(before: Mapping[str, int], after: Mapping[str, int], name: str) -> int:
    """How much a node's ``stats`` counter grew (a restarted node starts from 0)."""
    return after.get(name, 0) - before.get(name, 0)


def _ss_sockets() -> list[tuple[str, str, set[int], int]] | None:
    """Every established TCP socket: (local, remote, owning pids, bytes received), from
    ``ss -tinp`` (iproute2; tcpi_bytes_received).  None where ``ss`` is missing."""
    try:
        out = subprocess.run(["ss", "-tinpH", "state", "established"], capture_output=True,
                             text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    sockets: list[tuple[str, str, set[int], int]] = []
    current: tuple[str, str, set[int]] | None = None
    for line in out.splitlines():
        if not line.startswith((" ", "\t")):
            parts = line.split()
            # Recv-Q Send-Q Local Peer [users:(...)]  (the state column is omitted)
            if len(parts) >= 4:
                current = (parts[2], parts[3], {int(p) for p in _PID_RE.findall(line)})
            continue
        m = _RECEIVED_RE.search(line)
        if current is not None:
            sockets.append((*current, int(m.group(1)) if m else 0))
            current = None
    return sockets


_PID_RE = re.compile(r"pid=(\d+)")
_RECEIVED_RE = re.compile(r"bytes_received:(\d+)")


def tcp_received_from(pid: int, senders: Iterable[int]) -> int | None:
    """Bytes process ``pid`` has received over its open TCP connections with the
    processes ``senders`` (every byte: replies, requests, broadcasts, ZMTP framing).
    Counted by the kernel per connection since it was established."""
    sockets = _ss_sockets()
    if sockets is None:
        return None
    senders = set(senders)
    theirs = {local for local, _, pids, _ in sockets if pids & senders}
    return sum(received for local, remote, pids, received in sockets
               if pid in pids and remote in theirs)
