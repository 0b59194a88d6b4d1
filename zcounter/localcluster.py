"""N real ``zcounter node`` processes on loopback, from one cluster file written for them.

One helper for everything that starts a local cluster: the benchmark uses it today;
``zcounter-cluster`` (:func:`zcounter.cli.cluster_main`) and the tests' harness
(``tests/harness.py``) start nodes the same way and can use it as well.  Ports are
chosen free at start (:func:`zcounter.procs.free_port`); every node gets its own data
directory and log file under ``root``; each node runs in its own session, so a Ctrl-C
in the terminal reaches only the parent, which then stops the nodes itself
(:func:`zcounter.procs.stop_processes`).

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
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import zmq

from .config import ClusterConfig, NodeAddress, load_config
from .procs import free_port, stop_processes

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
                       settings: Mapping[str, float] | None = None,
                       keys: ClusterKeys | None = None) -> Path:
    """Write ``nodes`` (and optional ``[settings]``) as a cluster file; returns ``path``.
    With ``keys``: ``curve`` mode, each node's ``public_key`` and the clients directory."""
    lines: list[str] = []
    for node_id, address in sorted(nodes.items()):
        lines += [f"[nodes.{node_id}]", f'router = "{address.router}"',
                  f'pub = "{address.pub}"']
        lines += [f'{name} = "{value}"' for name, value in (("resp", address.resp),
                                                           ("metrics", address.metrics)) if value]
        if keys is not None:
            lines.append(f'public_key = "{keys.nodes[node_id][0]}"')
        lines.append("")
    if settings:
        lines.append("[settings]")
        lines += [f"{name} = {value!r}" for name, value in settings.items()]
        lines.append("")
    if keys is not None:
        lines += ["[security]", 'mode = "curve"', f'clients = "{keys.clients}"']
    path.write_text("\n".join(lines) + "\n")
    return path


def node_command(node_id: int, config_path: Path, data_dir: Path | None = None,
                 secret_key: Path | None = None) -> list[str]:
    """What ``bin/node`` execs, for one node of the cluster file ``config_path``."""
    cmd = [sys.executable, "-m", "zcounter.cli", "node", "--id", str(node_id),
           "--config", str(config_path)]
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


class LocalCluster:
    """Nodes 1..n of a fresh cluster under ``root``: ``cluster.toml``, ``node-N/`` (data)
    and ``node-N.log``.  Use as a context manager, or call :meth:`stop_all`."""

    def __init__(self, root: Path, n: int = 3, settings: Mapping[str, float] | None = None,
                 env: Mapping[str, str] | None = None, resp: bool = False,
                 metrics: bool = False, secure: bool = False) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.ids = list(range(1, n + 1))
        self.nodes = loopback_nodes(n, resp=resp, metrics=metrics)
        #: Key files (``secure``: curve mode), else None.
        self.keys = make_keys(root / "keys", self.ids) if secure else None
        self.config_path = write_cluster_file(root / "cluster.toml", self.nodes, settings,
                                              self.keys)
        self.config: ClusterConfig = load_config(self.config_path)
        self.env = {**os.environ, **(env or {})}
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def router(self, node: int) -> str:
        return self.nodes[node].router

    def pub(self, node: int) -> str:
        return self.nodes[node].pub

    def data_dir(self, node: int) -> Path:
        return self.root / f"node-{node}"

    def log_path(self, node: int) -> Path:
        return self.root / f"node-{node}.log"

    def start(self, node: int) -> subprocess.Popen[bytes]:
        """Start ``node`` (its log is appended to); returns at once."""
        with open(self.log_path(node), "ab") as log:  # the child keeps its own copy
            secret = self.keys.nodes[node][1] if self.keys is not None else None
            proc = subprocess.Popen(node_command(node, self.config_path, self.data_dir(node),
                                                 secret),
                                    stdout=log, stderr=log, env=self.env,
                                    start_new_session=True)
        self.procs[node] = proc
        return proc

    def start_ready(self, node: int, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Start ``node`` and wait until it answers; returns the seconds that took."""
        started = time.perf_counter()
        proc = self.start(node)
        return wait_answering(self.router(node), started, proc, timeout_s, self.curve(node))

    def curve(self, node: int) -> tuple[Path, Path] | None:
        """(client certificate, ``node``'s public key file) in curve mode, else None:
        what a raw socket needs to talk to ``node`` (:func:`curve_client`)."""
        if self.keys is None:
            return None
        return self.keys.cert(), self.keys.nodes[node][0]

    def start_all(self, timeout_s: float = READY_TIMEOUT_S) -> dict[int, float]:
        """Start every node, one after another so they do not compete for the CPU while
        they start; returns each node's seconds from start to first answer."""
        return {node: self.start_ready(node, timeout_s) for node in self.ids}

    def pid(self, node: int) -> int:
        return self.procs[node].pid

    def alive(self, node: int) -> bool:
        proc = self.procs.get(node)
        return proc is not None and proc.poll() is None

    def kill(self, node: int, sig: int = signal.SIGKILL, timeout_s: float = 10.0) -> None:
        """Send ``sig`` to ``node``; for signals that end it, wait until it has exited."""
        proc = self.procs[node]
        if proc.poll() is None:
            proc.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            proc.wait(timeout=timeout_s)

    def stop_all(self) -> None:
        stop_processes(self.procs.values())

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop_all()


__all__ = ["ClusterKeys", "LocalCluster", "curve_client", "loopback_nodes", "make_keys",
           "node_command", "wait_answering", "write_cluster_file"]
