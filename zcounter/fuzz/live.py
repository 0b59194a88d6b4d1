"""The live fuzzer: a real cluster, real sockets to every door, and a probe that checks it.

The cluster (:class:`FuzzCluster`) is three real node processes plus a fourth configured
node nobody starts: the fuzzer binds that node's PUB and ROUTER itself, so the three
subscribe to it (forged broadcasts reach the SUB side) and send it their peer requests
(forged replies reach their DEALERs), as a compromised or buggy peer would.

Senders (one thread per door, :class:`Senders`) take inputs from the door's grammar, damage
some with :func:`~zcounter.fuzz.grammar.mutate`, and send each to a node in turn:

* ``resp`` - a new TCP connection per input; the bytes, a half-close, the replies read;
* ``native`` - a DEALER per node; one frame (sometimes two, sometimes none);
* ``peer`` - forged peer requests on the ROUTER (a DEALER per node), broadcasts on the
  fourth node's PUB, and answers (valid ids, damaged bodies) to every request the nodes
  send the fourth node;
* ``metrics`` - a new TCP connection per HTTP request.

Each input sent is remembered per node (the last :data:`RECENT`): when a node dies the last ones
are the suspects; :func:`triage` replays them one by one against a fresh cluster to find
the one that kills, which is saved as a regression case.

The :class:`Probe` is a well-behaved client on connections of its own: on each node in
turn, every ~100 ms, it increments its own key (``fuzz-probe-N``, which no grammar
writes) and reads it back.  Each answer must come within :data:`PROBE_LIMIT_S` and the
count must equal the acknowledged increments (an increment whose answer was lost may or
may not count: the check allows exactly those).  It also samples each node's RSS.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import resource
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import zmq

from ..client import Client
from ..errors import ZCounterError
from ..localcluster import LocalCluster, wait_answering
from .grammar import GRAMMARS, Chooser, RandomChooser, mutate, peer_reply
from .known import open_finding
from .metrics import exchange

#: The doors a live run sends to (the config door has no socket: in-process only).
LIVE_DOORS = ("resp", "native", "peer", "metrics")
#: Real nodes; node 4 is the fuzzer's impostor.
REAL = (1, 2, 3)
IMPOSTOR = 4
#: Test-cluster timers (tests/harness.py FAST_SETTINGS): repairs and peer timeouts show
#: up within the run.
SETTINGS = {"heartbeat_interval_s": 0.1, "peer_timeout_s": 0.5,
            "repair_interval_s": 0.25, "retry_interval_s": 0.05}
#: The probe's bound on every answer (issue 19: "within 1 s").
PROBE_LIMIT_S = 1.0
PROBE_INTERVAL_S = 0.1
#: How long a sender waits for a door's answer to one input before moving on.
ANSWER_WAIT_S = 1.0
#: Inputs remembered per node as suspects of a crash.
RECENT = 32


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (children inherit it); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` from /proc (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class FuzzCluster:
    """Nodes 1-3 running, node 4 configured and impersonated (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.local = LocalCluster(root, n=4, settings=SETTINGS, resp=True, metrics=True)
        self.local.ids = list(REAL)
        self.config = self.local.config
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.setsockopt(zmq.SNDHWM, 1000)
        self.pub.bind(self.config.node(IMPOSTOR).pub)
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.bind(self.config.node(IMPOSTOR).router)
        self.restarts = 0

    def start(self) -> None:
        self.local.start_all()
        self.wait_bootstrapped()

    def wait_bootstrapped(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        for node in REAL:
            while True:
                with contextlib.suppress(ZCounterError), \
                        Client(node=node, config=self.config, timeout=0.5, retries=0) as c:
                    if not c.status(node)["bootstrapping"]:
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"node {node} did not complete its bootstrap")
                time.sleep(0.05)

    def restart(self, node: int) -> None:
        self.restarts += 1
        self.local.start_ready(node)

    def alive(self, node: int) -> bool:
        return self.local.alive(node)

    def pid(self, node: int) -> int:
        return self.local.pid(node)

    def host_port(self, node: int, door: str) -> tuple[str, int]:
        address = self.config.node(node)
        value = address.resp if door == "resp" else address.metrics
        assert value is not None
        host, _, port = value.removeprefix("tcp://").rpartition(":")
        return host, int(port)

    def log_tail(self, node: int, lines: int = 20) -> str:
        try:
            text = self.local.log_path(node).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        self.local.stop_all()
        self.pub.close(linger=0)
        self.router.close(linger=0)
        self.ctx.term()


# --------------------------------------------------------------------------- probe


@dataclass
class ProbeReport:
    answers: int = 0
    worst_s: float = 0.0
    #: (seconds into the run, node, what went wrong)
    failures: list[tuple[float, int, str]] = field(default_factory=list)
    peak_rss: dict[int, int] = field(default_factory=dict)


class Probe:
    """The well-behaved client (see the module docstring).  Runs in its own thread."""

    def __init__(self, cluster: FuzzCluster, started: float) -> None:
        self.cluster = cluster
        self.started = started
        self.report = ProbeReport(peak_rss={n: 0 for n in REAL})
        self.acked = dict.fromkeys(REAL, 0)
        self.unknown = dict.fromkeys(REAL, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fuzz-probe", daemon=True)
        #: Nodes being restarted after a crash: not probed meanwhile.
        self.paused: set[int] = set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> ProbeReport:
        self._stop.set()
        self._thread.join(10)
        return self.report

    def key(self, node: int) -> str:
        return f"fuzz-probe-{node}"

    def _fail(self, node: int, what: str) -> None:
        self.report.failures.append((time.monotonic() - self.started, node, what))

    def _timed(self, node: int, call: Callable[[], int], what: str) -> int | None:
        begun = time.monotonic()
        try:
            value = call()
        except ZCounterError as exc:
            self._fail(node, f"{what}: {type(exc).__name__}: {exc}")
            return None
        took = time.monotonic() - begun
        self.report.answers += 1
        self.report.worst_s = max(self.report.worst_s, took)
        if took > PROBE_LIMIT_S:
            self._fail(node, f"{what} answered after {took:.2f} s")
        return value

    def _run(self) -> None:
        clients = {n: Client(node=n, config=self.cluster.config, timeout=PROBE_LIMIT_S * 2,
                             retries=0) for n in REAL}
        try:
            for node in itertools.cycle(REAL):
                if self._stop.wait(PROBE_INTERVAL_S / len(REAL)):
                    return
                self._sample_rss()
                if node in self.paused or not self.cluster.alive(node):
                    continue
                self._probe(clients[node], node)
        finally:
            for c in clients.values():
                c.close()

    def _probe(self, client: Client, node: int) -> None:
        key = self.key(node)
        count = self._timed(node, lambda: client.increment(key=key), "increment")
        if count is None:
            self.unknown[node] += 1
            # A client after a timeout may hold a stale reply: start a new connection.
            client.close()
            client.__init__(node=node, config=self.cluster.config,  # type: ignore[misc]
                            timeout=PROBE_LIMIT_S * 2, retries=0)
            return
        self.acked[node] += 1
        read = self._timed(node, lambda: client.get_count(key), "get")
        for value, what in ((count, "increment's count"), (read, "read")):
            if value is not None and not (self.acked[node] <= value
                                          <= self.acked[node] + self.unknown[node]):
                self._fail(node, f"{what} {value}: {self.acked[node]} increments "
                                 f"acknowledged, {self.unknown[node]} unanswered")

    def _sample_rss(self) -> None:
        for node in REAL:
            if self.cluster.alive(node):
                peak = self.report.peak_rss
                peak[node] = max(peak[node], rss_bytes(self.cluster.pid(node)))

    def node_restarted(self, node: int) -> None:
        """A restarted node keeps its data: its probe count goes on."""
        self.paused.discard(node)


# --------------------------------------------------------------------------- senders


@dataclass(frozen=True)
class Sent:
    door: str
    node: int
    data: bytes
    at: float


@dataclass
class Crash:
    node: int
    at: float
    suspects: list[Sent]
    log: str
    #: Filled by triage: the inputs that kill a fresh node alone.
    confirmed: list[Sent] = field(default_factory=list)


class Senders:
    """One thread per door; every input goes to the next node in turn."""

    def __init__(self, cluster: FuzzCluster, doors: tuple[str, ...], seed: int,
                 limit: int | None = None, skip_open: bool = False) -> None:
        self.cluster = cluster
        #: Leave out inputs that reach an open finding while it is present (the CI run,
        #: like the Hypothesis tests: green until fixed elsewhere, then they are sent).
        self.skip_open = skip_open
        self.skipped = 0
        self.doors = doors
        self.seed = seed
        #: Inputs per door at most (None: until stopped).
        self.limit = limit
        self.counts = dict.fromkeys(doors, 0)
        self.recent: dict[int, deque[Sent]] = {n: deque(maxlen=RECENT) for n in REAL}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(door, i), daemon=True,
                                          name=f"fuzz-{door}")
                         for i, door in enumerate(doors)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def done(self) -> bool:
        return all(not t.is_alive() for t in self._threads)

    def _remember(self, door: str, node: int, data: bytes) -> None:
        with self._lock:
            self.recent[node].append(Sent(door, node, data, time.monotonic()))
            self.counts[door] += 1

    def _run(self, door: str, index: int) -> None:
        # One seed decides every choice; each door's stream is its own.
        chooser = RandomChooser(random.Random(self.seed * 1000 + index))
        send = DoorClient(self.cluster, door)
        try:
            for n in itertools.count():
                if self._stop.is_set() or (self.limit is not None and n >= self.limit):
                    return
                node = REAL[n % len(REAL)]
                if not self.cluster.alive(node):
                    self._stop.wait(0.05)
                    continue
                data = make_input(door, chooser)
                if self.skip_open and open_finding(door, data) is not None:
                    self.skipped += 1
                    continue
                self._remember(door, node, data)
                send.send(node, data, chooser)
        finally:
            send.close()



def make_input(door: str, chooser: Chooser) -> bytes:
    data = GRAMMARS[door](chooser)
    if chooser.integer(0, 3) == 0:
        data = mutate(data, chooser)
    return data


class DoorClient:
    """How an input reaches one door of a node over a real socket."""

    def __init__(self, cluster: FuzzCluster, door: str) -> None:
        self.cluster = cluster
        self.door = door
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.dealers: dict[int, zmq.Socket[bytes]] = {}

    def _dealer(self, node: int) -> zmq.Socket[bytes]:
        sock = self.dealers.get(node)
        if sock is None:
            sock = self.ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 1000)
            sock.setsockopt(zmq.SNDTIMEO, 1000)
            sock.connect(self.cluster.config.node(node).router)
            self.dealers[node] = sock
        return sock

    def send(self, node: int, data: bytes, chooser: Chooser | None = None) -> None:
        with contextlib.suppress(OSError, zmq.ZMQError):
            if self.door in ("resp", "metrics"):
                host, port = self.cluster.host_port(node, self.door)
                exchange(host, port, data, ANSWER_WAIT_S)
            elif self.door == "native":
                self._send_dealer(node, [data])
            else:
                self._send_peer(node, data, chooser)

    def _send_dealer(self, node: int, frames: list[bytes]) -> None:
        sock = self._dealer(node)
        sock.send_multipart(frames)
        # Drain what came back (bounded): replies must not pile up in our queue.
        if sock.poll(int(ANSWER_WAIT_S * 100)):
            while sock.poll(0):
                sock.recv_multipart()

    def _send_peer(self, node: int, data: bytes, chooser: Chooser | None) -> None:
        path, frame = data[:1], data[1:]
        if path == b"\x00":
            self.cluster.pub.send(frame)  # every subscribed node gets it
        elif path == b"\x02":
            self._send_dealer(node, [frame])
        # Whatever the path, answer the nodes' requests to node 4 (damaged replies with
        # the ids they asked with, so they reach the code behind the id check).
        self._answer(chooser)

    def _answer(self, chooser: Chooser | None) -> None:
        router = self.cluster.router
        for _ in range(16):
            if not router.poll(0):
                return
            frames = router.recv_multipart()
            try:
                request = orjson.loads(frames[-1])
                req_id = int(request.get("id", 0))
            except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
                continue
            if chooser is not None:
                router.send_multipart([frames[0], peer_reply(chooser, req_id)])

    def close(self) -> None:
        for sock in self.dealers.values():
            sock.close(linger=0)
        self.ctx.term()


def replay(cluster: FuzzCluster, sent: Sent) -> None:
    """Send one saved input to its door of node 1 of ``cluster``."""
    client = DoorClient(cluster, sent.door)
    try:
        client.send(REAL[0], sent.data, RandomChooser(random.Random(0)))
    finally:
        client.close()


# --------------------------------------------------------------------------- the run


@dataclass
class RunReport:
    seconds: float
    inputs: dict[str, int]
    crashes: list[Crash]
    probe: ProbeReport
    restarts: int
    inproc: dict[str, int] = field(default_factory=dict)
    inproc_failures: list[tuple[str, str, bytes]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.crashes and not self.probe.failures and not self.inproc_failures


def watch(cluster: FuzzCluster, senders: Senders, probe: Probe, crashes: list[Crash],
          started: float) -> None:
    """One check of every node: a dead one is a crash (its suspects kept), restarted."""
    for node in REAL:
        if cluster.alive(node):
            continue
        probe.paused.add(node)
        with senders._lock:
            suspects = list(senders.recent[node])
            senders.recent[node].clear()
        crashes.append(Crash(node, time.monotonic() - started, suspects,
                             cluster.log_tail(node)))
        try:
            cluster.restart(node)
        finally:
            probe.node_restarted(node)


@contextlib.contextmanager
def fuzz_cluster(root: Path) -> Iterator[FuzzCluster]:
    raise_fd_limit()
    cluster = FuzzCluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def run_live(root: Path, seconds: float, doors: tuple[str, ...], seed: int,
             limit: int | None = None, on_tick: Callable[[float], None] | None = None,
             skip_open: bool = False) -> RunReport:
    """Fuzz ``doors`` of a fresh cluster under ``root`` for ``seconds`` (or until each
    door has sent ``limit`` inputs) with the probe running."""
    with fuzz_cluster(root) as cluster:
        started = time.monotonic()
        probe = Probe(cluster, started)
        senders = Senders(cluster, doors, seed, limit, skip_open)
        crashes: list[Crash] = []
        probe.start()
        senders.start()
        try:
            while time.monotonic() - started < seconds and not senders.done():
                watch(cluster, senders, probe, crashes, started)
                if on_tick is not None:
                    on_tick(time.monotonic() - started)
                time.sleep(0.1)
        finally:
            senders.stop()
            watch(cluster, senders, probe, crashes, started)
            report = probe.stop()
        return RunReport(time.monotonic() - started, dict(senders.counts), crashes, report,
                         cluster.restarts)


def triage(root: Path, crash: Crash, budget_s: float = 120.0) -> list[Sent]:
    """Replay each suspect alone (newest first) against a fresh cluster; return those
    after which node 1 dies.  A cluster is restarted after each kill."""
    confirmed: list[Sent] = []
    deadline = time.monotonic() + budget_s
    cluster: FuzzCluster | None = None
    try:
        for index, sent in enumerate(reversed(crash.suspects)):
            if time.monotonic() > deadline:
                break
            if cluster is None:
                cluster = FuzzCluster(root / f"triage-{index}")
                cluster.start()
            replay(cluster, sent)
            end = time.monotonic() + 2.0
            while time.monotonic() < end and cluster.alive(1):
                time.sleep(0.05)
            if not cluster.alive(1) or not _answers(cluster, 1):
                confirmed.append(Sent(sent.door, 1, sent.data, sent.at))
                cluster.close()
                cluster = None
    finally:
        if cluster is not None:
            cluster.close()
    return confirmed


def _answers(cluster: FuzzCluster, node: int) -> bool:
    try:
        wait_answering(cluster.config.node(node).router, time.perf_counter(), None,
                       PROBE_LIMIT_S)
    except (TimeoutError, RuntimeError):
        return False
    return True




__all__ = [
    "IMPOSTOR",
    "LIVE_DOORS",
    "REAL",
    "Crash",
    "DoorClient",
    "FuzzCluster",
    "Probe",
    "ProbeReport",
    "RunReport",
    "Senders",
    "Sent",
    "fuzz_cluster",
    "raise_fd_limit",
    "replay",
    "rss_bytes",
    "run_live",
    "triage",
]
