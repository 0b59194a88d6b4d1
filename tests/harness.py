"""Start and tear down real zcounter node processes for tests.

Every node is a real ``python -m zcounter.cli node`` process on loopback ports chosen
free at start, with its own data directory and log file under the test's tmp dir.
Waiting is polling with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from zcounter import Client, ZCounterError
from zcounter.config import ClusterConfig, load_config
from zcounter.procs import free_port, stop_processes

T = TypeVar("T")

#: Directories of the clusters started by the running test (real-process and namespace
#: harnesses alike).  conftest.py prints the node logs found there when the test fails,
#: so a red CI run shows what the nodes saw, not only the assertion.
CLUSTER_ROOTS: list[Path] = []

#: Test clusters use quicker timers than the defaults so repairs show up fast.
FAST_SETTINGS = {
    "heartbeat_interval_s": 0.1,
    "peer_timeout_s": 0.5,
    "snapshot_interval_s": 0.25,
    "retry_interval_s": 0.05,
}


def wait_for(predicate: Callable[[], T], timeout: float, interval: float = 0.02,
             what: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except ZCounterError as exc:
            last_exc = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                                 + (f" (last error: {last_exc})" if last_exc else ""))
        time.sleep(interval)


def write_config(path: Path, nodes: dict[int, tuple[str, int, int]],
                 settings: dict[str, Any] | None = None) -> Path:
    """Write a cluster file: ``nodes`` maps id -> (host, router port, pub port)."""
    lines = []
    for node_id, (host, rport, pport) in sorted(nodes.items()):
        lines += [f"[nodes.{node_id}]", f'router = "tcp://{host}:{rport}"',
                  f'pub = "tcp://{host}:{pport}"', ""]
    if settings:
        lines.append("[settings]")
        lines += [f"{k} = {v!r}" for k, v in settings.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class LocalCluster:
    """N real node processes on loopback.  Use as a context manager."""

    def __init__(self, root: Path, n: int = 3, settings: dict[str, Any] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        CLUSTER_ROOTS.append(root)
        self.ids = list(range(1, n + 1))
        nodes = {i: ("127.0.0.1", free_port(), free_port()) for i in self.ids}
        self.config_path = write_config(root / "cluster.toml", nodes,
                                        FAST_SETTINGS if settings is None else settings)
        self.config: ClusterConfig = load_config(self.config_path)
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.env = {**os.environ, **(env or {})}
        self.stopped: set[int] = set()

    def data_dir(self, node: int) -> Path:
        return self.root / f"node-{node}"

    def log_path(self, node: int) -> Path:
        return self.root / f"node-{node}.log"

    def command(self, node: int) -> list[str]:
        return [sys.executable, "-m", "zcounter.cli", "node", "--id", str(node),
                "--config", str(self.config_path), "--data-dir", str(self.data_dir(node))]

    def start(self, node: int, wait: bool = True) -> None:
        log = open(self.log_path(node), "ab")  # noqa: SIM115 - owned by the process
        self.procs[node] = subprocess.Popen(self.command(node), stdout=log, stderr=log,
                                            env=self.env, start_new_session=True)
        log.close()
        if wait:
            self.wait_ready(node)

    def start_all(self) -> LocalCluster:
        for node in self.ids:
            self.start(node, wait=False)
        for node in self.ids:
            self.wait_ready(node)
        return self

    def wait_ready(self, node: int, timeout: float = 15.0) -> None:
        def ready() -> bool:
            proc = self.procs[node]
            if proc.poll() is not None:
                raise AssertionError(f"node {node} exited with {proc.returncode}:\n"
                                     + self.log_path(node).read_text()[-3000:])
            with self.client(node, timeout=0.3, retries=0) as c:
                c.status(node)
            return True
        wait_for(ready, timeout, what=f"node {node} to answer")

    def client(self, node: int | None = None, **kw: Any) -> Client:
        return Client(node=node, config=self.config, **kw)

    def count(self, node: int, timeout: float = 1.0) -> int:
        with self.client(node, timeout=timeout) as c:
            return c.get_count()

    def counts(self, nodes: list[int] | None = None) -> dict[int, int]:
        return {n: self.count(n) for n in (nodes or self.live())}

    def live(self) -> list[int]:
        return [n for n, p in self.procs.items() if p.poll() is None and n not in self.stopped]

    def wait_converged(self, expected: int | None = None, timeout: float = 15.0,
                       nodes: list[int] | None = None) -> int:
        """Wait until every (given) live node reports the same count (== expected)."""
        def same() -> int | None:
            values = set(self.counts(nodes).values())
            if len(values) == 1 and (expected is None or expected in values):
                return values.pop() or -1
            return None
        result = wait_for(same, timeout, what=f"convergence on {expected}")
        return 0 if result == -1 else result

    def kill(self, node: int, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[node]
        proc.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            proc.wait(timeout=10)

    def pause(self, node: int) -> None:
        self.procs[node].send_signal(signal.SIGSTOP)
        self.stopped.add(node)

    def resume(self, node: int) -> None:
        self.procs[node].send_signal(signal.SIGCONT)
        self.stopped.discard(node)

    def stop_all(self) -> None:
        stop_processes(self.procs.values())

    def cli(self, *args: str, timeout: float = 2.0) -> subprocess.CompletedProcess[str]:
        """Run ``zcounter client`` as a user would, against this cluster's config."""
        return subprocess.run(
            [sys.executable, "-m", "zcounter.cli", "client", "--config", str(self.config_path),
             "--timeout", str(timeout), *args],
            capture_output=True, text=True, timeout=30, env=self.env, check=False)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


@contextmanager
def running_cluster(root: Path, n: int = 3, **kw: Any) -> Iterator[LocalCluster]:
    cluster = LocalCluster(root, n, **kw)
    try:
        yield cluster.start_all()
    finally:
        cluster.stop_all()
