"""Start and tear down real zcounter node processes for tests.

Every node is a real ``python -m zcounter.cli node`` process on loopback ports chosen
free at start, with its own data directory and log file under the test's tmp dir,
started by the package's launcher (:mod:`zcounter.localcluster`, which the CLI and the
benchmark use too); :class:`LocalCluster` here adds only what tests need.  Waiting is
polling with a deadline, never a fixed sleep.

Reading a cluster: :meth:`LocalCluster.count` / :meth:`~LocalCluster.counts` read one key
(``default`` unless named), :meth:`~LocalCluster.get_counts` many keys from one node,
:meth:`~LocalCluster.listing` every live key a node lists, and
:meth:`~LocalCluster.wait_keys_converged` waits until every node holds the same state of
a set of keys (and, if given, the expected counts).  :class:`RawDealer` speaks the wire
protocol directly (pipelined writes of thousands of keys, hand-made bad frames).

``LocalCluster(..., secure=True)`` runs in ``curve`` mode (issue 10): a key pair per node
and one client key pair under ``root/keys`` (made by ``bin/keygen``'s code), named in the
cluster file by paths relative to it; :meth:`LocalCluster.client` and
:meth:`LocalCluster.cli` then use the client's certificate, and ``RawDealer(endpoint,
curve=(cert, server public key file))`` speaks CurveZMQ.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import orjson
import zmq

import zcounter.localcluster
from zcounter import Client, RequestRefused, ZCounterError
from zcounter.config import NodeAddress
from zcounter.localcluster import curve_client, write_cluster_file
from zcounter.procs import free_port

T = TypeVar("T")

#: Directories of the clusters started by the running test (real-process and namespace
#: harnesses alike).  conftest.py prints the node logs found there when the test fails,
#: so a red CI run shows what the nodes saw, not only the assertion.
CLUSTER_ROOTS: list[Path] = []

#: Test clusters use quicker timers than the defaults so repairs show up fast.
FAST_SETTINGS = {
    "heartbeat_interval_s": 0.1,
    "peer_timeout_s": 0.5,
    "repair_interval_s": 0.25,
    "retry_interval_s": 0.05,
}

#: Keys one ``get`` request may name (zcounter.protocol.codec.MAX_KEYS_PER_GET).
GET_CHUNK = 10_000


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
                 settings: dict[str, Any] | None = None,
                 extra: Mapping[int, Mapping[str, str]] | None = None,
                 security: Mapping[str, str] | None = None) -> Path:
    """Write a cluster file by hand: ``nodes`` maps id -> (host, router port, pub port);
    ``extra`` adds fields to a node's table (``resp``, ``metrics``); ``security`` is the
    ``[security]`` table (the package's writer, :func:`write_cluster_file`)."""
    addresses = {i: NodeAddress(i, f"tcp://{host}:{rport}", f"tcp://{host}:{pport}")
                 for i, (host, rport, pport) in nodes.items()}
    return write_cluster_file(path, addresses, settings, security=security, node_fields=extra)


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class RawDealer:
    """A bare DEALER on a node's ROUTER: send hand-made frames, pipeline requests.

    Use as a context manager.  Every wait is bounded by a deadline.  ``curve``:
    (secret certificate, the node's public key file) - a CURVE client socket.
    """

    def __init__(self, endpoint: str, curve: tuple[Path, Path] | None = None) -> None:
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.sock = self._ctx.socket(zmq.DEALER)
        if curve is not None:
            curve_client(self.sock, *curve)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.connect(endpoint)
        self._ids = itertools.count(1)

    def close(self) -> None:
        self.sock.close(linger=0)
        self._ctx.term()

    def __enter__(self) -> RawDealer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, frames: list[bytes] | bytes, timeout: float = 2.0) -> dict[str, Any]:
        """Send one message (raw frames) and return the next reply, decoded."""
        self.sock.send_multipart([frames] if isinstance(frames, bytes) else frames)
        assert self.sock.poll(int(timeout * 1000)), "node did not answer within the deadline"
        reply: dict[str, Any] = orjson.loads(self.sock.recv())
        return reply

    def request(self, obj: dict[str, Any], timeout: float = 2.0) -> dict[str, Any]:
        return self.call(orjson.dumps(obj), timeout)

    def pipeline(self, requests: Iterable[dict[str, Any]], window: int = 256,
                 timeout: float = 60.0) -> list[dict[str, Any]]:
        """Send ``requests`` keeping up to ``window`` in flight; return every reply, in
        request order.  Each request gets a fresh integer ``id`` (overwritten).
        Fails if the replies do not all arrive within ``timeout`` seconds."""
        pending = list(requests)
        replies: dict[int, dict[str, Any]] = {}
        order: list[int] = []
        deadline = time.monotonic() + timeout
        sent = 0
        while len(replies) < len(pending):
            while sent < len(pending) and sent - len(replies) < window:
                tag = next(self._ids)
                order.append(tag)
                self.sock.send(orjson.dumps({**pending[sent], "id": tag}))
                sent += 1
            left = deadline - time.monotonic()
            assert left > 0, (f"only {len(replies)} of {len(pending)} pipelined requests "
                              f"were answered within {timeout}s")
            if self.sock.poll(int(min(left, 1.0) * 1000) + 1):
                reply = orjson.loads(self.sock.recv())
                replies[reply["id"]] = reply
        return [replies[tag] for tag in order]


class FakeRouter:
    """A ROUTER standing in for a node: it records every message it receives (decoded
    JSON, or the raw bytes if not JSON) and answers each with ``answer(message)`` (bytes,
    or None for no answer).  Bound to ``endpoint`` (e.g. where a killed node listened),
    else to a free loopback port (:attr:`endpoint`).  Use as a context manager."""

    def __init__(self, answer: Callable[[Any], bytes | None],
                 endpoint: str | None = None) -> None:
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        if endpoint is None:
            port = self._sock.bind_to_random_port("tcp://127.0.0.1")
            endpoint = f"tcp://127.0.0.1:{port}"
        else:
            self._sock.bind(endpoint)
        self.endpoint = endpoint
        self.received: list[Any] = []
        self.answered = 0
        self._answer = answer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        # The socket lives in this thread only (zmq sockets are not thread-safe).
        while not self._stop.is_set():
            if not self._sock.poll(20):
                continue
            frames = self._sock.recv_multipart()
            try:
                message = orjson.loads(frames[-1])
            except orjson.JSONDecodeError:
                message = frames[-1]
            self.received.append(message)
            body = self._answer(message)
            if body is not None:
                self._sock.send_multipart([frames[0], body])
                self.answered += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close(linger=0)
        self._ctx.term()

    def __enter__(self) -> FakeRouter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalCluster(zcounter.localcluster.LocalCluster):
    """The package's launcher (:class:`zcounter.localcluster.LocalCluster`) with what only
    tests need: quicker timers, node logs shown when a test fails, starts that wait until
    the node answers, pausing nodes, clients, and helpers that read and compare the
    nodes' states.  Use as a context manager."""

    def __init__(self, root: Path, n: int = 3, settings: dict[str, Any] | None = None,
                 env: dict[str, str] | None = None, resp: bool = False,
                 metrics: bool = False, security: Mapping[str, str] | None = None,
                 secure: bool = False) -> None:
        """``resp`` / ``metrics``: give every node a Redis-protocol door / a metrics
        endpoint on free loopback ports (:meth:`resp_port`, :meth:`metrics_url`).
        ``secure``: curve mode, keys under ``root/keys`` (:attr:`keys`)."""
        CLUSTER_ROOTS.append(root)
        super().__init__(root, n, FAST_SETTINGS if settings is None else settings, env,
                         resp, metrics, secure, security)
        #: Nodes paused (SIGSTOP) and not resumed: not :meth:`live`.
        self.stopped: set[int] = set()

    def start(self, node: int, wait: bool = True) -> subprocess.Popen[bytes]:
        proc = super().start(node)
        self.stopped.discard(node)
        if wait:
            self.wait_ready(node)
        return proc

    def start_all(self, timeout_s: float = 15.0, together: bool = True) -> dict[int, float]:
        """Start every node (all at once); return once each answers and has completed its
        bootstrap (a node started with an empty directory, as all are here, holds
        requests for a peer's answer, and refuses to list keys, until its first repair
        completes)."""
        ready = super().start_all(timeout_s, together)
        wait_for(lambda: not any(self.status(n)["bootstrapping"] for n in self.ids), 15.0,
                 what="every node to complete its bootstrap")
        return ready

    def wait_ready(self, node: int, timeout_s: float = 15.0,
                   started: float | None = None) -> float:
        return super().wait_ready(node, timeout_s, started)

    def client(self, node: int | None = None, **kw: Any) -> Client:
        if self.cert is not None:
            kw.setdefault("cert", self.cert)
        return Client(node=node, config=self.config, **kw)

    def resp_port(self, node: int) -> int:
        """The port of ``node``'s Redis-protocol door (the cluster needs ``resp=True``)."""
        endpoint = self.config.node(node).resp
        assert endpoint is not None, "start the cluster with resp=True"
        return int(endpoint.rsplit(":", 1)[1])

    def metrics_url(self, node: int) -> str:
        address = self.config.node(node).metrics
        assert address is not None, "start the cluster with metrics=True"
        return f"http://{address}/metrics"

    def raw(self, node: int) -> RawDealer:
        """A bare DEALER connected to ``node``'s ROUTER (close it, or use ``with``); in
        curve mode with the client's key."""
        return RawDealer(self.router(node), self.curve(node))

    # ------------------------------------------------------------------ reading

    def count(self, node: int, key: str = "default", timeout: float = 1.0) -> int:
        with self.client(node, timeout=timeout) as c:
            return c.get_count(key)

    def counts(self, nodes: list[int] | None = None, key: str = "default") -> dict[int, int]:
        """Each (given, else live) node's local count of ``key``."""
        return {n: self.count(n, key) for n in (nodes or self.live())}

    def get_counts(self, node: int, keys: Sequence[str], timeout: float = 5.0,
                   read: str = "local") -> dict[str, int]:
        """``node``'s counts of ``keys`` (one request per 10,000 keys), session-less."""
        out: dict[str, int] = {}
        with self.client(node, timeout=timeout) as c:
            for part in chunks(list(keys), GET_CHUNK):
                out.update(c.get_counts(part, read=read))  # type: ignore[arg-type]
        return out

    def states(self, node: int, keys: Sequence[str],
               timeout: float = 5.0) -> dict[str, dict[str, tuple[int, ...]]]:
        """``node``'s states of ``keys`` exactly as it holds them: a session-less client's
        ``seen`` after one read holds the reply's states and nothing else."""
        out: dict[str, dict[str, tuple[int, ...]]] = {}
        with self.client(node, timeout=timeout) as c:
            for part in chunks(list(keys), GET_CHUNK):
                c.seen.clear()
                c.get_counts(part)
                out.update({k: dict(v) for k, v in c.seen.items()})
        return out

    def listing(self, node: int, prefix: str = "", timeout: float = 10.0) -> dict[str, int]:
        """Every live key ``node`` lists (``keys`` command), with its count.  A node still
        receiving the keyspace (bootstrapping) refuses to list: ask again until it lists,
        within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self.client(node, timeout=min(timeout, 5.0)) as c:
            while True:
                try:
                    return dict(c.keys(prefix))
                except RequestRefused as exc:
                    if exc.code != "unavailable" or time.monotonic() > deadline:
                        raise
                time.sleep(0.05)

    def status(self, node: int, timeout: float = 1.0) -> dict[str, Any]:
        with self.client(node, timeout=timeout) as c:
            return c.status(node)

    def stat(self, node: int, name: str) -> int:
        return int(self.status(node)["stats"].get(name, 0))

    def live(self) -> list[int]:
        return [n for n, p in self.procs.items() if p.poll() is None and n not in self.stopped]

    # ------------------------------------------------------------------ convergence

    def wait_converged(self, expected: int | None = None, timeout: float = 15.0,
                       nodes: list[int] | None = None, key: str = "default") -> int:
        """Wait until every (given) live node reports the same count of ``key``
        (== expected if given); return it."""
        def same() -> tuple[int] | None:
            values = set(self.counts(nodes, key).values())
            if len(values) == 1 and (expected is None or expected in values):
                return (values.pop(),)
            return None
        return wait_for(same, timeout, what=f"convergence of {key!r} on {expected}")[0]

    def wait_keys_converged(self, expected: Mapping[str, int] | Sequence[str],
                            timeout: float = 30.0, nodes: list[int] | None = None,
                            interval: float = 0.1) -> dict[str, int]:
        """Wait until every (given, else live) node holds the *same state* of every key
        (so the same count), and, when ``expected`` maps keys to counts, those counts.
        Returns the counts.  On timeout the assertion names a few keys that differ."""
        keys = list(expected)
        want = expected if isinstance(expected, Mapping) else None
        last: list[str] = []

        def agreed() -> dict[str, int] | None:
            targets = nodes or self.live()
            views = {n: self.states(n, keys) for n in targets}
            first = views[targets[0]]
            differ = [k for k in keys if any(v.get(k, {}) != first.get(k, {})
                                             for v in views.values())]
            values = {k: _value(first.get(k, {})) for k in keys}
            if want is not None:
                differ += [k for k in keys if values[k] != want[k] and k not in differ]
            if differ:
                last[:] = [f"{k!r}: want {want[k] if want else '?'}, "
                           + ", ".join(f"node {n} {_value(v.get(k, {}))}"
                                       for n, v in views.items()) for k in differ[:5]]
                last.append(f"({len(differ)} keys differ)")
                return None
            return values
        try:
            return wait_for(agreed, timeout, interval=interval,
                            what=f"{len(keys)} keys to converge")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: " + "; ".join(last)) from None

    def wait_identical(self, timeout: float = 30.0, nodes: list[int] | None = None) -> None:
        """Wait until every (given, else live) node reports the same hash-tree root and
        key count: they hold identical states of every key."""
        def same() -> bool:
            views = [self.status(n) for n in (nodes or self.live())]
            return len({(v["root"], v["keys"]) for v in views}) == 1
        wait_for(same, timeout, interval=0.1, what="identical keyspaces (same root)")

    # ------------------------------------------------------------------ faults

    def pause(self, node: int) -> None:
        self.procs[node].send_signal(signal.SIGSTOP)
        self.stopped.add(node)

    def resume(self, node: int) -> None:
        self.procs[node].send_signal(signal.SIGCONT)
        self.stopped.discard(node)

    def cli(self, *args: str, timeout: float = 2.0) -> subprocess.CompletedProcess[str]:
        """Run ``zcounter client`` as a user would, against this cluster's config (in
        curve mode with ``--cert`` of the client's certificate, unless ``args`` names one)."""
        cert = ["--cert", str(self.cert)] if self.cert and "--cert" not in args else []
        return subprocess.run(
            [sys.executable, "-m", "zcounter.cli", "client", "--config", str(self.config_path),
             "--timeout", str(timeout), *cert, *args],
            capture_output=True, text=True, timeout=60, env=self.env, check=False)


def _value(state: Mapping[str, Sequence[int]]) -> int:
    return sum(r[0] - r[2] - r[1] + r[3] for r in state.values())


@contextmanager
def running_cluster(root: Path, n: int = 3, **kw: Any) -> Iterator[LocalCluster]:
    cluster = LocalCluster(root, n, **kw)
    try:
        cluster.start_all()
        yield cluster
    finally:
        cluster.stop_all()


__all__ = ["CLUSTER_ROOTS", "FAST_SETTINGS", "FakeRouter", "LocalCluster", "RawDealer", "chunks",
           "free_port", "running_cluster", "wait_for", "write_config"]
