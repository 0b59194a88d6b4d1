"""``bin/bench --resp``: zcounter's Redis-protocol door against Redis itself, same run.

A fresh three-node cluster with a RESP door on every node, and Redis with
``appendfsync always`` (durable before the reply, like zcounter) and ``everysec``, all
started first; then, for each window (1, 16, 256), every system is measured back to back
with the *same client code* - redis-py (``protocol=2``), one connection, ``INCR``, one
command at a time for window 1 and pipelines of ``window`` commands otherwise - so the
ratios compare servers, not clients.  zcounter's native protocol (a raw DEALER, the
default sections' loader) runs in the same rounds for context, and node 1's CPU per
increment is read from ``/proc`` for both doors.

Every run is bounded by ``ops`` requests and ``seconds``.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from ..localcluster import LocalCluster
from .keys import KeySpec, KeyStream
from .load import closed_loop
from .measure import cpu_s, ratio
from .progress import Progress
from .report import fmt
from .servers import REDIS_FSYNC, redis_missing, redis_server

WINDOWS = (1, 16, 256)


def resp_closed_loop(port: int, stream: KeyStream, window: int, ops: int,
                     seconds: float) -> dict[str, Any]:
    """``INCR`` through redis-py on one connection: ``window`` commands per pipeline."""
    import redis

    r = redis.Redis(host="127.0.0.1", port=port, protocol=2)
    table, mask = stream.table, stream.mask
    try:
        r.ping()
        acked = 0
        perf = time.perf_counter
        start = perf()
        deadline = start + seconds
        while acked < ops and perf() < deadline:
            if window == 1:
                r.incr(f"k{table[acked & mask]}")
                acked += 1
                continue
            pipe = r.pipeline(transaction=False)
            for j in range(acked, acked + min(window, ops - acked)):
                pipe.incr(f"k{table[j & mask]}")
            acked += len(pipe.execute())
        elapsed = perf() - start
        return {"acked": acked, "elapsed_s": elapsed,
                "ops_per_s": acked / elapsed if elapsed > 0 else 0.0}
    finally:
        r.close()


def run_resp(root: Path, ops: int, seconds: float, keys: KeySpec,
             progress: Progress) -> dict[str, Any]:
    """The section's figures: per window, each system's ops/s (and zcounter's node-1 CPU
    per increment through each door)."""
    out: dict[str, Any] = {"windows": {}, "skipped": [], "ops": ops, "seconds": seconds,
                           "keys": keys.to_json()}
    with contextlib.ExitStack() as stack:
        cluster = LocalCluster(root / "resp-cluster", resp=True)
        stack.callback(cluster.stop_all)
        progress.start("starting zcounter nodes (RESP doors)", len(cluster.ids))
        cluster.start_all()
        progress.close()
        redis_ports: dict[str, int] = {}
        missing = redis_missing()
        if missing is None:
            for fsync in REDIS_FSYNC:
                system = stack.enter_context(redis_server(root, fsync))
                redis_ports[system.name] = int(system.target)
        else:
            out["skipped"].append(missing)
        door = cluster.nodes[1].resp
        assert door is not None
        resp_port = int(door.rsplit(":", 1)[1])
        pid = cluster.pid(1)
        for window in WINDOWS:
            n = ops if window > 1 else max(100, ops // 10)
            row: dict[str, Any] = {}
            progress.note(f"window {window}: zcounter RESP, native, Redis")
            stream = KeyStream(keys)
            before = cpu_s(pid)
            res = resp_closed_loop(resp_port, stream, window, n, seconds)
            res["cpu_us_per_op"] = (cpu_s(pid) - before) / max(1, res["acked"]) * 1e6
            row["zcounter-resp"] = res
            before = cpu_s(pid)
            native = closed_loop(cluster.router(1), "increment", KeyStream(keys), window, n,
                                 seconds)
            native["cpu_us_per_op"] = (cpu_s(pid) - before) / max(1, native["acked"]) * 1e6
            row["zcounter-native"] = native
            for name, port in redis_ports.items():
                row[name] = resp_closed_loop(port, KeyStream(keys), window, n, seconds)
            out["windows"][str(window)] = row
    return out


def render_resp(res: dict[str, Any]) -> str:
    systems = ["zcounter-resp", "zcounter-native", *[f"redis-{f}" for f in REDIS_FSYNC]]
    lines = ["RESP section: INCR through redis-py (protocol=2, one connection, pipelines of "
             "`window`), every system in the same rounds; resp/X = zcounter's RESP door "
             "divided by X"]
    head = ["window", *systems, "resp/native", *[f"resp/redis-{f}" for f in REDIS_FSYNC],
            "node cpu/op resp", "node cpu/op native"]
    body = []
    for window, row in res["windows"].items():
        rate = {name: row[name]["ops_per_s"] if name in row else None for name in systems}
        body.append([window, *[fmt(rate[s], "ops") for s in systems],
                     *[_x(ratio(rate["zcounter-resp"], rate[s])) for s in systems[1:]],
                     fmt(row["zcounter-resp"]["cpu_us_per_op"], "us"),
                     fmt(row["zcounter-native"]["cpu_us_per_op"], "us")])
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body, strict=True)]
    for r in [head, *body]:
        lines.append("  ".join(str(c).rjust(w) for c, w in zip(r, widths, strict=True)))
    lines += [f"  skipped: {s}" for s in res["skipped"]]
    return "\n".join(lines)


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


__all__ = ["WINDOWS", "render_resp", "resp_closed_loop", "run_resp"]
