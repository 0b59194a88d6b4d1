"""The systems under test, each started on loopback and stopped at the end:

* a zcounter cluster (:class:`BenchCluster`): real node processes with default settings,
  started by :class:`zcounter.localcluster.LocalCluster`, plus what the benchmark reads
  from them (status, peer traffic, memory, CPU, data directory size);
* the echo ceiling (:func:`echo_server`): a pyzmq ROUTER in its own process that parses
  the same JSON request, adds ``by`` to an integer and answers - no replication, no
  storage: the ceiling for any Python ZeroMQ server on this machine;
* Redis (:func:`redis_server`) with ``appendfsync always`` (durable before the reply,
  like zcounter) or ``everysec``, when ``redis-server`` and redis-py are installed.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import zmq

from ..localcluster import LocalCluster, wait_answering
from ..procs import free_port, stop_processes
from .load import Channel
from .measure import cpu_s, dir_bytes, rss_kib
from .progress import Progress

REDIS_FSYNC = ("always", "everysec")


class BenchCluster(LocalCluster):
    """A fresh zcounter cluster (default settings) with the benchmark's probes."""

    def __init__(self, root: Path, n: int = 3, metrics: bool = False) -> None:
        super().__init__(root, n, metrics=metrics)
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._channels: dict[int, Channel] = {}

    def channel(self, node: int) -> Channel:
        """A persistent request/reply channel to ``node``."""
        ch = self._channels.get(node)
        if ch is None:
            ch = self._channels[node] = Channel(self.router(node), self._ctx)
        return ch

    def status(self, node: int, timeout_s: float = 10.0) -> dict[str, Any]:
        return self.channel(node).status(timeout_s)

    def stats(self, node: int) -> dict[str, int]:
        stats: dict[str, int] = self.status(node)["stats"]
        return stats

    def peer_totals(self, nodes: list[int] | None = None) -> tuple[int, int]:
        """Peer messages and bytes sent so far, summed over ``nodes`` (default: all)."""
        msgs = byts = 0
        for node in nodes or self.ids:
            stats = self.stats(node)
            msgs += stats.get("peer_messages_sent", 0)
            byts += stats.get("peer_bytes_sent", 0)
        return msgs, byts

    def rss(self, field: str = "VmRSS") -> dict[int, int | None]:
        """Every live node's resident memory in KiB (``VmHWM``: its peak so far)."""
        return {node: rss_kib(self.pid(node), field) for node in self.ids if self.alive(node)}

    def cpu(self, node: int) -> float:
        return cpu_s(self.pid(node))

    def disk(self, node: int) -> dict[str, int]:
        return dir_bytes(self.data_dir(node))

    def log_lines(self, node: int, needle: str) -> list[str]:
        try:
            text = self.log_path(node).read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if needle in line]

    def close_channel(self, node: int) -> None:
        """Forget the channel to a node that is about to restart (its replies would be
        for requests the new process never saw)."""
        ch = self._channels.pop(node, None)
        if ch is not None:
            ch.close()

    def stop_all(self, grace_s: float = 10.0) -> None:
        for node in list(self._channels):
            self.close_channel(node)
        super().stop_all(grace_s)


@dataclass
class System:
    """A system under test: how to load it (``kind`` "zmq" or "redis") and where."""

    name: str
    kind: str
    target: Any  # endpoint or port of the one-client runs
    targets: list[Any]  # one per client of the concurrent runs
    pid: int
    ready_s: float


def echo_server(port: int) -> None:
    """The ceiling: parse the request as the node does (JSON), add, answer."""
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.setsockopt(zmq.SNDHWM, 100_000)
    router.setsockopt(zmq.RCVHWM, 100_000)
    router.bind(f"tcp://127.0.0.1:{port}")
    count = 0
    loads, dumps = orjson.loads, orjson.dumps
    recv, send = router.recv_multipart, router.send_multipart
    while True:
        client, body = recv()
        obj = loads(body)
        if obj.get("op") == "increment":
            by = obj.get("by", 1)
            if isinstance(by, int) and by > 0:
                count += by
        send([client, dumps({"id": obj.get("id"), "node": 1, "ok": True, "count": count})])


@contextlib.contextmanager
def echo() -> Iterator[System]:
    """The echo ceiling in its own process (spawned: nothing inherited)."""
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    proc = multiprocessing.get_context("spawn").Process(target=echo_server, args=(port,),
                                                        daemon=True)
    started = time.perf_counter()
    proc.start()
    try:
        ready = wait_answering(endpoint, started)
        yield System("echo", "zmq", endpoint, [endpoint] * 3, proc.pid or 0, ready)
    finally:
        proc.terminate()
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)


def redis_missing() -> str | None:
    """Why the Redis baselines cannot run here, or None."""
    if shutil.which("redis-server") is None:
        return "Redis baselines: redis-server is not on PATH (apt-get install redis-server)"
    try:
        import redis  # noqa: F401
    except ImportError:
        return "Redis baselines: redis-py is not installed (pip install 'zcounter[bench]')"
    return None


@contextlib.contextmanager
def redis_server(root: Path, fsync: str) -> Iterator[System]:
    """A throwaway ``redis-server`` with an append-only file and ``appendfsync fsync``."""
    import redis

    port = free_port()
    data = root / f"redis-{fsync}"
    data.mkdir()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
           "--appendonly", "yes", "--appendfsync", fsync, "--dir", str(data),
           "--daemonize", "no", "--logfile", str(data / "redis.log")]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = started + 20
        while True:
            try:
                redis.Redis(host="127.0.0.1", port=port, socket_timeout=1).ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.perf_counter() > deadline:
                    raise RuntimeError(f"redis-server did not start ({cmd})") from None
                time.sleep(0.005)
        ready = time.perf_counter() - started
        yield System(f"redis-{fsync}", "redis", port, [port] * 3, proc.pid, ready)
    finally:
        stop_processes([proc])


def start_cluster(stack: contextlib.ExitStack, root: Path, progress: Progress,
                  label: str = "zcounter", metrics: bool = False
                  ) -> tuple[BenchCluster, dict[int, float]]:
    """A fresh three-node cluster under ``root`` (``metrics``: each with a /metrics
    door), stopped when ``stack`` closes; returns it and each node's seconds from start
    to first answer."""
    cluster = BenchCluster(root, metrics=metrics)
    stack.callback(cluster.stop_all)
    progress.start(f"starting {label} nodes", len(cluster.ids))
    try:
        ready = cluster.start_all()
    finally:
        progress.close()
    return cluster, ready


def start_baselines(stack: contextlib.ExitStack, root: Path,
                    skipped: list[str]) -> list[System]:
    """The echo ceiling and, when installed, Redis ``always`` and ``everysec``."""
    systems = [stack.enter_context(echo())]
    missing = redis_missing()
    if missing is not None:
        skipped.append(missing)
        return systems
    for fsync in REDIS_FSYNC:
        systems.append(stack.enter_context(redis_server(root, fsync)))
    return systems
