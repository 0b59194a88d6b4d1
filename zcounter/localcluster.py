"""Local ``zcounter node`` processes: the one launcher of the package.

:class:`NodeProcesses` starts, signals and stops the nodes of a cluster file;
``zcounter-cluster`` (:func:`zcounter.cli.cluster_main`) runs it in the foreground with
each node's output relayed.  :class:`LocalCluster` adds a fresh cluster on loopback under
``root`` (ports free at start, :func:`zcounter.procs.free_port`; one data directory and
log file per node) for the benchmark (:mod:`zcounter.bench.servers`), the live fuzzer
and the tests, whose ``tests/harness.py`` subclasses it with test-only helpers.  Every
node runs in its own session, so a Ctrl-C in the terminal reaches only the parent, which
then stops the nodes itself (:func:`zcounter.procs.stop_processes`).

``secure=True`` runs the cluster in ``curve`` mode (issue 10): :func:`make_keys` writes a
key pair per node and one client key pair under ``root/keys`` (the client's public key in
``root/keys/clients``), the cluster file names them, and each node gets its secret with
``--secret-key``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

import zmq

from .config import ClusterConfig, NodeAddress, load_config
from .procs import free_port, stop_processes

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self is 3.11+

#: Answering a ping is what "ready" means; a node that takes longer than this is broken.
READY_TIMEOUT_S = 60.0


def loopback_nodes(n: int, host: str = "127.0.0.1", resp: bool = False,
                   metrics: bool = False) -> dict[int, NodeAddress]:
    """Nodes 1..n with a ROUTER and a PUB port each, free a moment ago (and a RESP door
    and a metrics endpoint, when asked)."""
    return {i: NodeAddress(i, f"tcp://{host}:{free_port(host)}", f"tcp://{host}:{free_port(host)}",
                           resp=f"tcp://{host}:{free_port(host)}" if resp else None,
                           metrics=f"{host}:{free_port(host)}" if metrics else None)
            for i in range(1, n + 1)}


@dataclass(frozen=True)
class ClusterKeys:
    """The key files of a ``curve``-mode cluster (:func:`make_keys`)."""

    #: node id -> its public key file (``NAME.key``) and secret certificate (``.key_secret``)
    nodes: dict[int, tuple[Path, Path]]
    #: The directory of authorized client public keys (``[security] clients``).
    clients: Path
    #: client name -> its secret certificate (``Client(cert=...)``, ``--cert``)
    certs: dict[str, Path]

    def cert(self, name: str = "client") -> Path:
        return self.certs[name]


def make_keys(directory: Path, ids: Iterable[int],
              clients: Iterable[str] = ("client",)) -> ClusterKeys:
    """A key pair ``node<N>`` per node and one per client name under ``directory``
    (made with ``bin/keygen``'s code), each client's public key copied into
    ``directory/clients``: what an operator does by hand (README, "Security")."""
    from .security import PUBLIC_SUFFIX, generate

    client_dir = directory / "clients"
    client_dir.mkdir(parents=True, exist_ok=True)
    nodes = {i: generate(f"node{i}", directory) for i in ids}
    certs: dict[str, Path] = {}
    for name in clients:
        public, certs[name] = generate(name, directory)
        (client_dir / f"{name}{PUBLIC_SUFFIX}").write_bytes(public.read_bytes())
    return ClusterKeys(nodes, client_dir, certs)


def write_cluster_file(path: Path, nodes: Mapping[int, NodeAddress],
                       settings: Mapping[str, Any] | None = None,
                       keys: ClusterKeys | None = None,
                       security: Mapping[str, str] | None = None,
                       node_fields: Mapping[int, Mapping[str, str]] | None = None) -> Path:
    """Write ``nodes`` (and optional ``[settings]``) as a cluster file; returns ``path``.
    With ``keys``: ``curve`` mode, each node's ``public_key`` and the clients directory,
    named relative to the file when they are beside it, as a user writes them.
    ``security``: more ``[security]`` fields (after those of ``keys``);
    ``node_fields``: more fields of a node's table."""
    lines: list[str] = []
    for node_id, address in sorted(nodes.items()):
        fields = {"router": address.router, "pub": address.pub, "resp": address.resp,
                  "metrics": address.metrics}
        if keys is not None:
            fields["public_key"] = _beside(path, keys.nodes[node_id][0])
        fields.update((node_fields or {}).get(node_id, {}))
        lines.append(f"[nodes.{node_id}]")
        lines += [f"{name} = {_toml_string(value)}" for name, value in fields.items()
                  if value is not None]
        lines.append("")
    if settings:
        lines.append("[settings]")
        lines += [f"{name} = {value!r}" for name, value in settings.items()]
        lines.append("")
    table = dict(security or {})
    if keys is not None:
        table = {"mode": "curve", "clients": _beside(path, keys.clients), **table}
    if table:
        lines.append("[security]")
        lines += [f"{name} = {_toml_string(value)}" for name, value in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _beside(cluster_file: Path, path: Path) -> str:
    """``path`` relative to the cluster file's directory when it lies under it."""
    try:
        return str(path.relative_to(cluster_file.parent))
    except ValueError:
        return str(path)


def _toml_string(value: str) -> str:
    # A literal string ('...': no escapes, so a Windows path or a regex is as written)
    # where it can be one; the tests edit cluster files by the quoted text.
    if "'" not in value and "\n" not in value:
        return f"'{value}'"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def node_command(node_id: int, config_path: Path | None, data_dir: Path | None = None,
                 secret_key: Path | None = None) -> list[str]:
    """What ``bin/node`` execs, for one node of the cluster file ``config_path`` (None:
    the node's own default, ``$ZCOUNTER_CONFIG`` then the built-in cluster)."""
    cmd = [sys.executable, "-m", "zcounter.cli", "node", "--id", str(node_id)]
    if config_path is not None:
        cmd += ["--config", str(config_path)]
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    if secret_key is not None:
        cmd += ["--secret-key", str(secret_key)]
    return cmd


def curve_client(sock: zmq.Socket[bytes], cert: Path, server_key: Path) -> None:
    """Make ``sock`` (before its ``connect``) a CURVE client with the secret certificate
    ``cert``, authenticating the server by the public key file ``server_key``."""
    from .security import read_public_key, read_secret_certificate

    sock.curve_publickey, sock.curve_secretkey = read_secret_certificate(cert, "cert")
    sock.curve_serverkey = read_public_key(server_key, "server key")


def wait_answering(endpoint: str, started: float, proc: subprocess.Popen[bytes] | None = None,
                   timeout_s: float = READY_TIMEOUT_S,
                   curve: tuple[Path, Path] | None = None) -> float:
    """Seconds from ``started`` (a ``time.perf_counter()`` reading) until ``endpoint``
    answers a ``ping``.  Raises if ``proc`` exits first or nothing answers in time.
    ``curve``: (client certificate, server public key file) for a ``curve`` node."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    if curve is not None:
        curve_client(sock, *curve)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RECONNECT_IVL, 5)
    sock.connect(endpoint)
    try:
        deadline = started + timeout_s
        tag = 0
        while time.perf_counter() < deadline:
            # The DEALER queues the ping until the connection is up (5 ms reconnect
            # interval); sending again covers a node that binds late and drops one.
            tag += 1
            sock.send(b'{"op":"ping","id":%d}' % tag)
            if sock.poll(20):
                sock.recv()
                return time.perf_counter() - started
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{endpoint}: the process exited with {proc.returncode} "
                                   "before answering")
        raise TimeoutError(f"{endpoint} did not answer within {timeout_s} s")
    finally:
        sock.close(linger=0)


class NodeProcesses:
    """``zcounter node`` processes of one cluster file: the one place that launches them,
    for ``zcounter-cluster`` (:func:`zcounter.cli.cluster_main`) and, through
    :class:`LocalCluster`, the tests and the benchmark.

    Each node runs in its own session, so a Ctrl-C in the terminal reaches only the
    parent, which stops the nodes itself (:meth:`stop_all`).  A node with a log file
    (:meth:`log_path`) appends its output there; one without has it piped
    (:meth:`relay`).  Use as a context manager, or call :meth:`stop_all`.
    """

    def __init__(self, config_path: Path | None, ids: Iterable[int],
                 env: Mapping[str, str] | None = None,
                 data_dirs: Mapping[int, Path] | None = None,
                 secret_keys: Mapping[int, Path] | None = None,
                 logs: Mapping[int, Path] | None = None) -> None:
        #: None: each node's own default (``$ZCOUNTER_CONFIG``, then the built-in cluster).
        self.config_path = config_path
        self.ids = list(ids)
        self.env = {**os.environ, **(env or {})}
        self._data_dirs = dict(data_dirs or {})
        self._secret_keys = dict(secret_keys or {})
        self._logs = dict(logs or {})
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def data_dir(self, node: int) -> Path | None:
        return self._data_dirs.get(node)

    def log_path(self, node: int) -> Path | None:
        return self._logs.get(node)

    def secret_key(self, node: int) -> Path | None:
        return self._secret_keys.get(node)

    def command(self, node: int) -> list[str]:
        """The node's command line (a subclass may wrap it, e.g. in ``prlimit``)."""
        return node_command(node, self.config_path, self.data_dir(node),
                            self.secret_key(node))

    def start(self, node: int) -> subprocess.Popen[bytes]:
        """Start ``node``; returns at once."""
        return self._launch(node)

    def _launch(self, node: int) -> subprocess.Popen[bytes]:
        # Not overridden (a subclass's start may wait): what every start here runs.
        log_path = self.log_path(node)
        if log_path is None:
            proc = subprocess.Popen(self.command(node), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, env=self.env,
                                    start_new_session=True)
        else:
            with open(log_path, "ab") as log:  # the child keeps its own copy
                proc = subprocess.Popen(self.command(node), stdout=log, stderr=log,
                                        env=self.env, start_new_session=True)
        self.procs[node] = proc
        return proc

    def relay(self, node: int, sink: TextIO) -> threading.Thread:
        """Copy a piped node's output to ``sink`` line by line, each line prefixed with
        ``[node N]``, until the node closes it (a daemon thread, started)."""
        stream = self.procs[node].stdout
        assert stream is not None, "relay() is for a node without a log file"

        def pump() -> None:
            for line in iter(stream.readline, b""):
                sink.write(f"[node {node}] {line.decode(errors='replace')}")
                sink.flush()
        thread = threading.Thread(target=pump, daemon=True)
        thread.start()
        return thread

    def pid(self, node: int) -> int:
        return self.procs[node].pid

    def alive(self, node: int) -> bool:
        proc = self.procs.get(node)
        return proc is not None and proc.poll() is None

    def first_exit(self) -> tuple[int, int] | None:
        """(node, exit code) of the first started node found to have exited, or None."""
        for node, proc in self.procs.items():
            if proc.poll() is not None:
                return node, proc.returncode
        return None

    def kill(self, node: int, sig: int = signal.SIGKILL, timeout_s: float = 10.0) -> None:
        """Send ``sig`` to ``node``; for signals that end it, wait until it has exited."""
        proc = self.procs[node]
        if proc.poll() is None:
            proc.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            proc.wait(timeout=timeout_s)

    def stop_all(self, grace_s: float = 10.0) -> None:
        """SIGTERM every node, SIGKILL what has not exited after ``grace_s``."""
        stop_processes(self.procs.values(), grace_s)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop_all()


class LocalCluster(NodeProcesses):
    """Nodes 1..n of a fresh cluster on loopback under ``root``: ``cluster.toml``,
    ``node-N/`` (data) and ``node-N.log``.  Use as a context manager, or call
    :meth:`stop_all`.  ``security``: more ``[security]`` fields (a RESP password file,
    TLS files)."""

    def __init__(self, root: Path, n: int = 3, settings: Mapping[str, Any] | None = None,
                 env: Mapping[str, str] | None = None, resp: bool = False,
                 metrics: bool = False, secure: bool = False,
                 security: Mapping[str, str] | None = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        ids = list(range(1, n + 1))
        self.nodes = loopback_nodes(n, resp=resp, metrics=metrics)
        #: Key files (``secure``: curve mode), else None.
        self.keys = make_keys(root / "keys", ids) if secure else None
        config_path = write_cluster_file(root / "cluster.toml", self.nodes, settings,
                                         self.keys, security)
        self.config: ClusterConfig = load_config(config_path)
        super().__init__(config_path, ids, env)

    def router(self, node: int) -> str:
        return self.nodes[node].router

    def pub(self, node: int) -> str:
        return self.nodes[node].pub

    def data_dir(self, node: int) -> Path:
        return self.root / f"node-{node}"

    def log_path(self, node: int) -> Path:
        return self.root / f"node-{node}.log"

    def secret_key(self, node: int) -> Path | None:
        # Read at each start: a key rotation replaces ``keys`` between restarts.
        return self.keys.nodes[node][1] if self.keys is not None else None

    @property
    def cert(self) -> Path | None:
        """The client's secret certificate (curve mode), else None."""
        return self.keys.cert() if self.keys is not None else None

    def curve(self, node: int, cert: Path | None = None) -> tuple[Path, Path] | None:
        """(``cert``, default the client's certificate, and ``node``'s public key file) in
        curve mode, else None: what a raw socket needs to talk to ``node``
        (:func:`curve_client`)."""
        if self.keys is None:
            return None
        return cert or self.keys.cert(), self.keys.nodes[node][0]

    def wait_ready(self, node: int, timeout_s: float = READY_TIMEOUT_S,
                   started: float | None = None) -> float:
        """Wait until ``node`` (started) answers; returns the seconds since ``started`` (a
        ``time.perf_counter()`` reading, default now).  If the node exits first, the
        error ends with its log's last lines."""
        started = time.perf_counter() if started is None else started
        try:
            return wait_answering(self.router(node), started, self.procs[node], timeout_s,
                                  self.curve(node))
        except RuntimeError as exc:
            tail = self.log_path(node).read_text(errors="replace")[-3000:]
            raise RuntimeError(f"node {node}: {exc}:\n{tail}") from None

    def start_ready(self, node: int, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Start ``node`` and wait until it answers; returns the seconds that took."""
        started = time.perf_counter()
        self._launch(node)
        return self.wait_ready(node, timeout_s, started)

    def start_all(self, timeout_s: float = READY_TIMEOUT_S,
                  together: bool = False) -> dict[int, float]:
        """Start every node; returns each node's seconds from its start to its first
        answer.  One after another by default, so they do not compete for the CPU while
        they start (the benchmark's start-up figures); ``together``: all at once, then
        wait for each (sooner, and each node starts before its peers answer)."""
        if not together:
            return {node: self.start_ready(node, timeout_s) for node in self.ids}
        started: dict[int, float] = {}
        for node in self.ids:
            started[node] = time.perf_counter()
            self._launch(node)
        return {node: self.wait_ready(node, timeout_s, started[node]) for node in self.ids}


__all__ = ["READY_TIMEOUT_S", "ClusterKeys", "LocalCluster", "NodeProcesses", "curve_client",
           "loopback_nodes", "make_keys", "node_command", "wait_answering",
           "write_cluster_file"]
