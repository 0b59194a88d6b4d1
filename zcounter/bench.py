"""``zcounter-bench``: measure a fresh local three-node cluster against two baselines.

Everything runs on this machine, on loopback, in one invocation, so the figures are
comparable with each other (not with other machines):

* **zcounter**: three real ``python -m zcounter.cli node`` processes (what ``bin/node``
  execs) with default settings, a temporary cluster file and temporary data directories.
* **echo**: the ceiling.  A pyzmq ROUTER in its own process that parses the same JSON
  request, adds ``by`` to an integer and answers - no replication, no storage.
* **Redis** ``INCR`` via redis-py, with ``appendfsync always`` (durable before the reply,
  like zcounter) and ``everysec`` (up to a second of acknowledged writes lost on power
  failure), each a ``redis-server`` started on a free loopback port and stopped after.
  Skipped, with a note, when ``redis-server`` or redis-py is missing.

Method (the same client code and windows for every system):

* *Throughput*: closed loop; a raw DEALER keeps ``window`` requests in flight, each
  tagged with a correlation ``id``; a request is counted when its ``ok`` reply arrives.
  Redis: one request at a time for window 1, pipelines of ``window`` INCRs otherwise.
  "per node" runs one client process per node at once (for the baselines: three client
  processes on the one server).
* *Latency*: open loop.  Request ``i`` is *intended* at ``t0 + i / rate``; its latency is
  reply time minus intended time, so a stalled server is charged for every request it
  delayed (no coordinated omission).  The client sleeps in slices of at most 0.1 ms
  between sends, which bounds how late it notices a reply.
* *Convergence*: during each zcounter latency run, one extra DEALER per other node
  keeps a ``get`` in flight (at most one per ``--poll-interval-ms``).  Every reply from
  the loaded node says the value of its own slot right after that increment; a peer has
  converged on it once a ``get`` reply from the peer shows that slot at least as high.
  Convergence latency = (first such reply's arrival) - (the acknowledgement's arrival),
  the maximum over the other nodes, clamped at 0 (a peer may learn it before the client
  does).  Resolution: the poll interval plus one round trip, an overestimate.
  (Subscribing to the peers' PUB sockets would not work: a node broadcasts only its own
  slot, never what it learned.)
* *Replication cost*: deltas of ``peer_messages_sent`` / ``peer_bytes_sent`` summed over
  all nodes' ``status``, per acknowledged increment; heartbeats included.  "low load" is
  the 1,000/s latency run, "saturation" the window-256 throughput run.
* *Memory*: ``VmRSS`` from ``/proc/PID/status`` of each node right after start and after
  ``--count`` increments (one client per node, window 256).
* *Ready*: from ``Popen`` of each node (fresh data directory) to its first reply to a
  ``ping`` (nodes are started one after another so they do not compete for CPU).
"""

from __future__ import annotations

import bisect
import contextlib
import importlib
import math
import multiprocessing
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import click
import orjson
import zmq

from .procs import free_port, stop_processes

WINDOWS = (1, 16, 256)
RATES = (1000, 5000)
#: A client that hears nothing for this long gives up on the run (a stuck server).
STALL_S = 5.0
#: Open-loop runs stop offering load beyond this many unanswered requests (overload).
MAX_OUTSTANDING = 50_000
#: The open-loop client never sleeps longer than this between checks for replies.
SLEEP_SLICE_S = 1e-4

_INCR = b'{"op":"increment","id":%d}'
_GET = b'{"op":"get","id":%d}'


# --------------------------------------------------------------------------- progress


class Progress:
    """A progress display on stderr: tqdm when installed, else one rewritten line."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None
        self._label = ""
        self._total = 0
        self._done = 0
        self._last = 0.0
        try:
            self._tqdm: Any = importlib.import_module("tqdm").tqdm
        except ImportError:
            self._tqdm = None

    def start(self, label: str, total: int) -> None:
        self.close()
        self._label, self._total, self._done = label, total, 0
        if self.enabled and self._tqdm is not None:
            self._bar = self._tqdm(total=total, desc=label, unit="op", unit_scale=True,
                                   leave=False, file=sys.stderr, mininterval=0.25)
        else:
            self._show(force=True)

    def update(self, n: int) -> None:
        self._done += n
        if self._bar is not None:
            self._bar.update(n)
        else:
            self._show()

    def _show(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < 0.25):
            return
        self._last = now
        sys.stderr.write(f"\r\033[K{self._label}: {self._done}/{self._total}")
        sys.stderr.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and self._label:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
        self._label = ""


_NO_PROGRESS: Callable[[int], None] = lambda n: None  # noqa: E731


# --------------------------------------------------------------------------- helpers


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


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


def _dealer(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> zmq.Socket[bytes]:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    # Unbounded queues on the client side: the window or the schedule bounds them.
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.RECONNECT_IVL, 5)
    sock.connect(endpoint)
    return sock


def zmq_call(endpoint: str, body: bytes, timeout: float = 2.0) -> dict[str, Any]:
    """One request/reply on a throwaway DEALER (status, ping, warm-up)."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = _dealer(ctx, endpoint)
    try:
        sock.send(body)
        if not sock.poll(int(timeout * 1000)):
            raise TimeoutError(f"{endpoint} did not answer within {timeout}s")
        obj: dict[str, Any] = orjson.loads(sock.recv())
        return obj
    finally:
        sock.close(linger=0)


def wait_answering(endpoint: str, started: float, proc: subprocess.Popen[bytes] | None,
                   timeout: float = 20.0) -> float:
    """Seconds from ``started`` (perf_counter) until ``endpoint`` answers a ping."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = _dealer(ctx, endpoint)
    try:
        deadline = started + timeout
        tag = 0
        while time.perf_counter() < deadline:
            # The DEALER queues the ping until the connection is up (5 ms reconnect
            # interval); re-sending covers a node that binds and drops a first attempt.
            tag += 1
            sock.send(b'{"op":"ping","id":%d}' % tag)
            if sock.poll(50):
                sock.recv()
                return time.perf_counter() - started
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"process exited with {proc.returncode} before answering")
        raise TimeoutError(f"{endpoint} did not answer within {timeout}s")
    finally:
        sock.close(linger=0)


# --------------------------------------------------------------------------- load: zmq


def zmq_closed_loop(endpoint: str, window: int, ops: int, seconds: float,
                    progress: Callable[[int], None] = _NO_PROGRESS) -> dict[str, Any]:
    """Keep ``window`` increments in flight until ``ops`` were sent or ``seconds`` passed."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = _dealer(ctx, endpoint)
    loads, recv, send, perf = orjson.loads, sock.recv, sock.send, time.perf_counter
    try:
        send(b'{"op":"ping","id":-1}')  # connect before the clock starts
        if not sock.poll(int(STALL_S * 1000)):
            raise TimeoutError(f"{endpoint} did not answer")
        recv()
        sent = acked = errors = 0
        start = perf()
        deadline = start + seconds
        for _ in range(min(window, ops)):
            send(_INCR % sent)
            sent += 1
        reported = 0
        stalled = False
        while acked + errors < sent:
            if not sock.poll(int(STALL_S * 1000)):
                stalled = True
                break
            more = sent < ops and perf() < deadline
            while True:
                try:
                    data = recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if loads(data).get("ok") is True:
                    acked += 1
                else:
                    errors += 1
                if more and sent < ops:
                    send(_INCR % sent)
                    sent += 1
            if acked - reported >= 1000:
                progress(acked - reported)
                reported = acked
        elapsed = perf() - start
        progress(acked - reported)
        return {"acked": acked, "errors": errors, "elapsed_s": elapsed,
                "ops_per_s": acked / elapsed if elapsed > 0 else 0.0, "stalled": stalled,
                "t_start": time.monotonic() - elapsed, "t_end": time.monotonic()}
    finally:
        sock.close(linger=0)
        ctx.term()


def zmq_open_loop(endpoint: str, rate: float, seconds: float, observe: list[str],
                  poll_interval_s: float, origin_slot: str | None,
                  progress: Callable[[int], None] = _NO_PROGRESS) -> dict[str, Any]:
    """Offer ``rate`` increments/s for ``seconds`` on a fixed schedule; optionally watch
    ``observe`` (other nodes) for ``origin_slot`` catching up with each acknowledgement."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = _dealer(ctx, endpoint)
    observers = [_dealer(ctx, ep) for ep in observe]
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    for obs in observers:
        poller.register(obs, zmq.POLLIN)
    perf, loads = time.perf_counter, orjson.loads
    try:
        for s in [sock, *observers]:
            s.send(b'{"op":"ping","id":-1}')
            if not s.poll(int(STALL_S * 1000)):
                raise TimeoutError("a node did not answer")
            s.recv()
        n = int(rate * seconds)
        latency: list[float] = []
        acks: list[tuple[float, int]] = []  # (arrival, origin slot value)
        samples: list[tuple[list[float], list[int]]] = [([], []) for _ in observers]
        obs_next = [0.0] * len(observers)
        obs_busy = [False] * len(observers)
        obs_tag = 0
        errors = 0
        overloaded = False
        t0 = perf() + 0.01
        i = 0
        got = 0
        last_reply = t0
        reported = 0
        while got + errors < n:
            now = perf()
            while i < n and t0 + i / rate <= now:
                if i - got - errors >= MAX_OUTSTANDING:
                    overloaded = True
                    break
                sock.send(_INCR % i)
                i += 1
            if overloaded or now - last_reply > STALL_S:
                break
            for k, obs in enumerate(observers):
                if not obs_busy[k] and now >= obs_next[k]:
                    obs_tag += 1
                    obs.send(_GET % obs_tag)
                    obs_busy[k] = True
                    obs_next[k] = now + poll_interval_s
            while True:
                try:
                    data = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                arrived = perf()
                last_reply = arrived
                obj = loads(data)
                if obj.get("ok") is not True:
                    errors += 1
                    continue
                got += 1
                latency.append(arrived - (t0 + obj["id"] / rate))
                if origin_slot is not None:
                    acks.append((arrived, obj["slots"][origin_slot]))
            for k, obs in enumerate(observers):
                if obs_busy[k]:
                    try:
                        data = obs.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        continue
                    obs_busy[k] = False
                    slots = loads(data).get("slots") or {}
                    samples[k][0].append(perf())
                    samples[k][1].append(slots.get(origin_slot, 0))
            if got - reported >= 500:
                progress(got - reported)
                reported = got
            nxt = t0 + i / rate if i < n else math.inf
            for k in range(len(observers)):
                nxt = min(nxt, obs_next[k] if not obs_busy[k] else math.inf)
            wait = nxt - perf()
            if wait >= 0.002:
                poller.poll(int(wait * 1000) - 1 if wait < 1 else 1000)
            elif wait > 0:
                # zmq polls in whole milliseconds: sleep in short slices instead, so a
                # reply is noticed at most SLEEP_SLICE_S late.
                time.sleep(min(wait, SLEEP_SLICE_S))
        progress(got - reported)
        # Let the observers see the tail of the run before judging convergence.
        end = perf() + 1.0
        while observers and perf() < end and acks:
            target = acks[-1][1]
            if all(vals and vals[-1] >= target for _, vals in samples):
                break
            for k, obs in enumerate(observers):
                if obs_busy[k] and obs.poll(1):
                    data = obs.recv()
                    slots = loads(data).get("slots") or {}
                    samples[k][0].append(perf())
                    samples[k][1].append(slots.get(origin_slot, 0))
                    obs_busy[k] = False
                if not obs_busy[k]:
                    obs_tag += 1
                    obs.send(_GET % obs_tag)
                    obs_busy[k] = True
        result: dict[str, Any] = {"offered": n, "sent": i, "acked": got, "errors": errors,
                                  "overloaded": overloaded, "latency_s": summarize(latency)}
        if observers:
            conv: list[float] = []
            unseen = 0
            for arrived, value in acks:
                worst = 0.0
                for times, vals in samples:
                    j = bisect.bisect_left(vals, value)
                    if j == len(vals):
                        worst = math.inf
                        break
                    worst = max(worst, times[j] - arrived)
                if math.isinf(worst):
                    unseen += 1
                else:
                    conv.append(worst)
            result["convergence_s"] = summarize(conv)
            result["convergence_unseen"] = unseen
            result["observer_samples"] = [len(t) for t, _ in samples]
        return result
    finally:
        for s in [sock, *observers]:
            s.close(linger=0)
        ctx.term()


# --------------------------------------------------------------------------- load: redis


def redis_closed_loop(port: int, window: int, ops: int, seconds: float,
                      progress: Callable[[int], None] = _NO_PROGRESS) -> dict[str, Any]:
    import redis

    r = redis.Redis(host="127.0.0.1", port=port)
    try:
        r.ping()
        acked = 0
        perf = time.perf_counter
        start = perf()
        deadline = start + seconds
        reported = 0
        while acked < ops and perf() < deadline:
            if window == 1:
                r.incr("zc")
                acked += 1
            else:
                pipe = r.pipeline(transaction=False)
                for _ in range(min(window, ops - acked)):
                    pipe.incr("zc")
                acked += len(pipe.execute())
            if acked - reported >= 1000:
                progress(acked - reported)
                reported = acked
        elapsed = perf() - start
        progress(acked - reported)
        return {"acked": acked, "errors": 0, "elapsed_s": elapsed,
                "ops_per_s": acked / elapsed if elapsed > 0 else 0.0, "stalled": False,
                "t_start": time.monotonic() - elapsed, "t_end": time.monotonic()}
    finally:
        r.close()


def redis_open_loop(port: int, rate: float, seconds: float,
                    progress: Callable[[int], None] = _NO_PROGRESS) -> dict[str, Any]:
    """The open-loop schedule on one connection; replies come back in order (FIFO)."""
    import redis

    r = redis.Redis(host="127.0.0.1", port=port)
    r.ping()
    # redis-py's low-level connection API is untyped.
    conn: Any = r.connection_pool.get_connection()
    try:
        packed = conn.pack_command("INCR", "zc")
        perf = time.perf_counter
        n = int(rate * seconds)
        latency: list[float] = []
        t0 = perf() + 0.01
        i = got = reported = 0
        overloaded = False
        last_reply = t0
        while got < n:
            now = perf()
            while i < n and t0 + i / rate <= now:
                if i - got >= MAX_OUTSTANDING:
                    overloaded = True
                    break
                conn.send_packed_command(packed, check_health=False)
                i += 1
            if overloaded or now - last_reply > STALL_S:
                break
            while got < i and conn.can_read(timeout=0):
                conn.read_response()
                arrived = perf()
                last_reply = arrived
                latency.append(arrived - (t0 + got / rate))
                got += 1
            if got - reported >= 500:
                progress(got - reported)
                reported = got
            wait = (t0 + i / rate if i < n else perf() + SLEEP_SLICE_S) - perf()
            if wait > 0:
                time.sleep(min(wait, SLEEP_SLICE_S))
        progress(got - reported)
        return {"offered": n, "sent": i, "acked": got, "errors": 0, "overloaded": overloaded,
                "latency_s": summarize(latency)}
    finally:
        r.connection_pool.release(conn)
        r.close()


# --------------------------------------------------------------------------- servers


def echo_server(port: int) -> None:
    """The ceiling: parse the request as the node does (JSON), add, answer."""
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(0))
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


def _client_process(kind: str, target: Any, window: int, ops: int, seconds: float,
                    go: Any, results: Any) -> None:
    """One of several concurrent clients (own process: the GIL would serialise threads)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent tears everything down
    go.wait()
    if kind == "redis":
        results.put(redis_closed_loop(target, window, ops, seconds))
    else:
        results.put(zmq_closed_loop(target, window, ops, seconds))


@dataclass
class Cluster:
    """A fresh three-node zcounter cluster in ``root`` (config, data dirs, logs)."""

    root: Path
    n: int = 3
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    routers: dict[int, str] = field(default_factory=dict)
    ready_s: dict[int, float] = field(default_factory=dict)

    def start(self) -> None:
        lines = []
        for i in range(1, self.n + 1):
            self.routers[i] = f"tcp://127.0.0.1:{free_port()}"
            lines += [f"[nodes.{i}]", f'router = "{self.routers[i]}"',
                      f'pub = "tcp://127.0.0.1:{free_port()}"', ""]
        config = self.root / "cluster.toml"
        config.write_text("\n".join(lines))
        for i in range(1, self.n + 1):
            log = open(self.root / f"node-{i}.log", "ab")  # noqa: SIM115 - the child owns it
            cmd = [sys.executable, "-m", "zcounter.cli", "node", "--id", str(i),
                   "--config", str(config), "--data-dir", str(self.root / f"node-{i}")]
            started = time.perf_counter()
            # Own session: a Ctrl-C in the terminal reaches the benchmark, which stops
            # the nodes itself (in order, and only after reporting).
            self.procs[i] = subprocess.Popen(cmd, stdout=log, stderr=log,
                                             start_new_session=True)
            log.close()
            self.ready_s[i] = wait_answering(self.routers[i], started, self.procs[i])

    def status(self, i: int) -> dict[str, Any]:
        reply = zmq_call(self.routers[i], b'{"op":"status","id":"bench"}')
        status: dict[str, Any] = reply["status"]
        return status

    def peer_totals(self) -> tuple[int, int]:
        msgs = byts = 0
        for i in self.procs:
            stats = self.status(i)["stats"]
            msgs += stats["peer_messages_sent"]
            byts += stats["peer_bytes_sent"]
        return msgs, byts

    def rss(self) -> dict[int, int | None]:
        return {i: rss_kib(p.pid) for i, p in self.procs.items()}

    def stop(self) -> None:
        stop_processes(self.procs.values())


@contextlib.contextmanager
def redis_server(root: Path, fsync: str) -> Iterator[tuple[int, float, int]]:
    """A throwaway redis-server; yields (port, seconds until it answered, pid)."""
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
        yield port, time.perf_counter() - started, proc.pid
    finally:
        stop_processes([proc])


# --------------------------------------------------------------------------- orchestration


@dataclass
class Options:
    ops: int
    seconds: float
    latency_seconds: float
    count: int
    poll_interval_s: float
    rates: tuple[int, ...]
    windows: tuple[int, ...]


@dataclass
class System:
    """A system under test: how to load it (``kind``) and where (``target``)."""

    name: str
    kind: str  # "zmq" or "redis"
    target: Any  # endpoint or port
    targets: list[Any]  # one per concurrent client
    pid: int
    ready_s: float


Runner = Callable[[Callable[[int], None]], dict[str, Any]]


def _closed_runner(system: System, window: int, o: Options) -> Runner:
    if system.kind == "redis":
        return lambda p: redis_closed_loop(system.target, window, o.ops, o.seconds, p)
    return lambda p: zmq_closed_loop(system.target, window, o.ops, o.seconds, p)


def _open_runner(system: System, rate: int, o: Options, observe: list[str],
                 origin: str | None) -> Runner:
    if system.kind == "redis":
        return lambda p: redis_open_loop(system.target, rate, o.latency_seconds, p)
    return lambda p: zmq_open_loop(system.target, rate, o.latency_seconds, observe,
                                   o.poll_interval_s, origin, p)


def commit_costs(root: Path, n: int = 300) -> dict[str, float]:
    """Mean seconds per durable write on ``root``'s file system, the floor under window 1:
    the node's SQLite commit (synchronous FULL and NORMAL) against a raw append+fdatasync
    (what Redis' appendfsync always pays) and a write into a preallocated file."""
    from .node import Persist
    from .storage import Storage

    where = root / "commit-cost"
    store = Storage.open(where, 1)
    slot = f"1.{store.incarnation}"
    out: dict[str, float] = {}
    try:
        for label, sync in (("sqlite_full_s", True), ("sqlite_normal_s", False)):
            t0 = time.perf_counter()
            for i in range(n):
                store.commit(Persist(slots={slot: (i + 1) + (n if not sync else 0)}, sync=sync))
            out[label] = (time.perf_counter() - t0) / n
    finally:
        store.close()
    fd = os.open(where / "append.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            os.write(fd, b"x" * 48)
            os.fdatasync(fd)
        out["append_fdatasync_s"] = (time.perf_counter() - t0) / n
    finally:
        os.close(fd)
    fd = os.open(where / "prealloc.log", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, b"\0" * 64 * n, 0)
        os.fsync(fd)
        t0 = time.perf_counter()
        for i in range(n):
            os.pwrite(fd, b"x" * 48, i * 64)
            os.fdatasync(fd)
        out["prealloc_fdatasync_s"] = (time.perf_counter() - t0) / n
    finally:
        os.close(fd)
    shutil.rmtree(where, ignore_errors=True)
    return out


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (robust to a noisy, shared host)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Bench:
    """Starts every system first, then runs each measurement on all of them back to
    back, so a slow patch of a shared machine hurts every system alike."""

    def __init__(self, opts: Options, root: Path, progress: Progress) -> None:
        self.o = opts
        self.root = root
        self.progress = progress
        self.results: dict[str, Any] = {"systems": {}, "skipped": [], "zcounter": {}}
        self.mp = multiprocessing.get_context("spawn")

    def _run(self, label: str, total: int,
             run: Callable[[Callable[[int], None]], dict[str, Any]]) -> dict[str, Any]:
        self.progress.start(label, total)
        try:
            return run(self.progress.update)
        finally:
            self.progress.close()

    def concurrent(self, label: str, system: System, window: int, ops: int,
                   seconds: float, on_wait: Callable[[], None] | None = None) -> dict[str, Any]:
        """One client process per target, released together; aggregate throughput."""
        go = self.mp.Event()
        results = self.mp.Queue()
        procs = [self.mp.Process(target=_client_process, daemon=True,
                                 args=(system.kind, t, window, ops, seconds, go, results))
                 for t in system.targets]
        for p in procs:
            p.start()
        parts: list[dict[str, Any]] = []
        try:
            time.sleep(0.5)  # let every process import and connect before the start
            go.set()
            deadline = time.monotonic() + seconds + 60
            while len(parts) < len(procs) and time.monotonic() < deadline:
                with contextlib.suppress(queue.Empty):
                    parts.append(results.get(timeout=0.5))
                if on_wait is not None and len(parts) < len(procs):
                    on_wait()
        finally:
            for p in procs:
                p.join(timeout=5)
                if p.is_alive():
                    p.terminate()
        if len(parts) < len(procs):
            raise RuntimeError(f"{label}: {len(procs) - len(parts)} client(s) did not finish")
        acked = sum(r["acked"] for r in parts)
        span = max(r["t_end"] for r in parts) - min(r["t_start"] for r in parts)
        return {"acked": acked, "errors": sum(r["errors"] for r in parts), "elapsed_s": span,
                "ops_per_s": acked / span if span > 0 else 0.0, "clients": len(parts)}

    # ------------------------------------------------------------------ systems

    def start_all(self, stack: contextlib.ExitStack, baselines: bool) -> tuple[Cluster,
                                                                               list[System]]:
        cluster = Cluster(self.root / "zcounter")
        cluster.root.mkdir()
        stack.callback(cluster.stop)
        self.progress.start("starting zcounter nodes", 3)
        cluster.start()
        self.progress.close()
        zc = self.results["zcounter"]
        zc["ready_s"] = cluster.ready_s
        zc["rss_start_kib"] = cluster.rss()
        systems = [System("zcounter", "zmq", cluster.routers[1], list(cluster.routers.values()),
                          cluster.procs[1].pid, max(cluster.ready_s.values()))]
        if not baselines:
            self.results["skipped"].append("baselines (--skip-baselines)")
            return cluster, systems
        port = free_port()
        endpoint = f"tcp://127.0.0.1:{port}"
        echo = self.mp.Process(target=echo_server, args=(port,), daemon=True)
        started = time.perf_counter()
        echo.start()

        def stop_echo() -> None:
            echo.terminate()
            echo.join(timeout=5)

        stack.callback(stop_echo)
        systems.append(System("echo", "zmq", endpoint, [endpoint] * 3, echo.pid or 0,
                              wait_answering(endpoint, started, None)))
        if shutil.which("redis-server") is None:
            self.results["skipped"].append(
                "Redis baselines: redis-server is not on PATH (apt-get install redis-server)")
            return cluster, systems
        try:
            import redis  # noqa: F401
        except ImportError:
            self.results["skipped"].append(
                "Redis baselines: redis-py is not installed (pip install 'zcounter[bench]')")
            return cluster, systems
        for fsync in ("always", "everysec"):
            rport, ready, pid = stack.enter_context(redis_server(self.root, fsync))
            systems.append(System(f"redis-{fsync}", "redis", rport, [rport] * 3, pid, ready))
        return cluster, systems

    def run(self, baselines: bool) -> None:
        o = self.o
        res = self.results
        zc = res["zcounter"]
        with contextlib.ExitStack() as stack:
            cluster, systems = self.start_all(stack, baselines)
            for sysm in systems[1:]:
                res["systems"][sysm.name] = {"ready_s": sysm.ready_s, "throughput": {},
                                             "latency": {}}
            zc.update(throughput={}, latency={}, replication={}, cpu_us_per_increment={})
            origin = cluster.status(1)["slot"]
            others = [cluster.routers[i] for i in (2, 3)]
            for w in o.windows:
                for sysm in systems:
                    label = f"{sysm.name} throughput, window {w}"
                    run = _closed_runner(sysm, w, o)
                    if sysm.name == "zcounter":
                        before, cpu0 = cluster.peer_totals(), cpu_s(sysm.pid)
                        r = self._run(label, o.ops, run)
                        zc["cpu_us_per_increment"][f"w{w}"] = (
                            (cpu_s(sysm.pid) - cpu0) / r["acked"] * 1e6 if r["acked"] else None)
                        zc["replication"][f"w{w}"] = _per_increment(
                            before, cluster.peer_totals(), r["acked"])
                        zc["throughput"][f"w{w}"] = r
                    else:
                        res["systems"][sysm.name]["throughput"][f"w{w}"] = self._run(
                            label, o.ops, run)
            for sysm in systems:
                label = f"{sysm.name} throughput, 3 clients, window 256"
                self.progress.start(label + " (clients)", len(sysm.targets))
                try:
                    r = self.concurrent(label, sysm, 256, o.ops, o.seconds)
                finally:
                    self.progress.close()
                if sysm.name == "zcounter":
                    zc["throughput"]["per_node"] = r
                else:
                    res["systems"][sysm.name]["throughput"]["per_node"] = r
            for rate in o.rates:
                n = int(rate * o.latency_seconds)
                for sysm in systems:
                    label = f"{sysm.name} latency at {rate}/s"
                    if sysm.name == "zcounter":
                        before = cluster.peer_totals()
                        r = self._run(label + " + convergence", n,
                                      _open_runner(sysm, rate, o, others, origin))
                        zc["replication"][f"r{rate}"] = _per_increment(
                            before, cluster.peer_totals(), r["acked"])
                        zc["latency"][f"r{rate}"] = r
                        continue
                    res["systems"][sysm.name]["latency"][f"r{rate}"] = self._run(
                        label, n, _open_runner(sysm, rate, o, [], None))
            for sysm in systems[1:]:
                res["systems"][sysm.name]["rss_kib"] = rss_kib(sysm.pid)
            self.soak(cluster, systems[0])
            zc["final_count"] = cluster.status(1)["count"]

    def soak(self, cluster: Cluster, system: System) -> None:
        """``--count`` increments, one client per node: the memory figure."""
        zc = self.results["zcounter"]
        zc["rss_before_soak_kib"] = cluster.rss()
        base = sum(cluster.status(i)["stats"]["increments"] for i in cluster.procs)
        last = [base]

        def show() -> None:
            done = sum(cluster.status(i)["stats"]["increments"] for i in cluster.procs)
            self.progress.update(done - last[0])
            last[0] = done

        self.progress.start(f"zcounter soak, {self.o.count:,} increments", self.o.count)
        try:
            r = self.concurrent("soak", system, 256, -(-self.o.count // len(system.targets)),
                                max(self.o.seconds, 900.0), show)
        finally:
            self.progress.close()
        zc["soak"] = r
        zc["rss_after_soak_kib"] = cluster.rss()


def _per_increment(before: tuple[int, int], after: tuple[int, int], acked: int) -> dict[str, Any]:
    msgs, byts = after[0] - before[0], after[1] - before[1]
    return {"increments": acked, "peer_messages": msgs, "peer_bytes": byts,
            "messages_per_increment": msgs / acked if acked else math.nan,
            "bytes_per_increment": byts / acked if acked else math.nan}


# --------------------------------------------------------------------------- report


def _fmt(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "ops":
        return f"{value:,.0f}/s"
    if unit == "ms":
        return f"{value * 1000:.2f} ms"
    if unit == "MB":
        return f"{value / 1024:.1f} MB"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "us":
        return f"{value:.1f} us"
    return f"{value:.3f}"


def _dig(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def build_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per figure: zcounter's value, each baseline's, and zcounter / baseline."""
    zc = res["zcounter"]
    systems = res["systems"]
    rows: list[dict[str, Any]] = []

    def row(label: str, unit: str, value: float | None,
            base: tuple[str, ...] | None = None) -> None:
        r: dict[str, Any] = {"metric": label, "unit": unit, "zcounter": value, "baselines": {},
                             "ratios": {}}
        for name, sysres in systems.items():
            b = _dig(sysres, base) if base is not None else None
            r["baselines"][name] = b
            r["ratios"][name] = value / b if value is not None and b else None
        rows.append(r)

    t = zc["throughput"]
    for w in res["options"]["windows"]:
        row(f"throughput, 1 client, window {w}", "ops", t[f"w{w}"]["ops_per_s"],
            ("throughput", f"w{w}", "ops_per_s"))
    row("throughput, 1 client per node, window 256", "ops", t["per_node"]["ops_per_s"],
        ("throughput", "per_node", "ops_per_s"))
    row(f"throughput, soak ({zc['soak']['acked']:,} incr, 3 clients)", "ops",
        zc["soak"]["ops_per_s"], ("throughput", "per_node", "ops_per_s"))
    for w in res["options"]["windows"]:
        row(f"node 1 CPU per increment, window {w}", "us",
            zc["cpu_us_per_increment"][f"w{w}"])
    for rate in res["options"]["rates"]:
        lat = zc["latency"][f"r{rate}"]["latency_s"]
        for q in ("p50", "p99", "p99.9", "max"):
            row(f"latency at {rate}/s, {q}", "ms", lat[q], ("latency", f"r{rate}", "latency_s", q))
    for rate in res["options"]["rates"]:
        conv = zc["latency"][f"r{rate}"]["convergence_s"]
        for q in ("p50", "p99", "max"):
            row(f"convergence at {rate}/s, {q}", "ms", conv[q])
    repl = zc["replication"]
    for key, label in ((f"r{res['options']['rates'][0]}", "low load"),
                       (f"w{max(res['options']['windows'])}", "saturation")):
        row(f"peer messages / increment, {label}", "x", repl[key]["messages_per_increment"])
        row(f"peer bytes / increment, {label}", "x", repl[key]["bytes_per_increment"])
    for i in sorted(zc["rss_start_kib"], key=int):
        after = zc["rss_after_soak_kib"][i]
        growth = (after - zc["rss_before_soak_kib"][i]) / 1024
        row(f"node {i} RSS at start", "MB", zc["rss_start_kib"][i], ("rss_kib",))
        row(f"node {i} RSS after soak ({growth:+.1f} MB)", "MB", after, ("rss_kib",))
    for i in sorted(zc["ready_s"], key=int):
        row(f"node {i} start to first answer", "s", zc["ready_s"][i], ("ready_s",))
    costs = res.get("commit_costs", {})
    for key, label in (("sqlite_full_s", "SQLite commit, synchronous=FULL"),
                       ("sqlite_normal_s", "SQLite commit, synchronous=NORMAL"),
                       ("append_fdatasync_s", "raw append + fdatasync (Redis always)"),
                       ("prealloc_fdatasync_s", "raw preallocated write + fdatasync")):
        if key in costs:
            row(label, "ms", costs[key])
    return rows


def check_targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    zc = res["zcounter"]
    systems = res["systems"]
    t = zc["throughput"]
    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool | None, detail: str) -> None:
        checks.append({"target": name, "met": ok, "detail": detail})

    if "echo" in systems:
        ratio = t["w256"]["ops_per_s"] / systems["echo"]["throughput"]["w256"]["ops_per_s"]
        check("window 256 >= 0.7x echo", ratio >= 0.7, f"{ratio:.2f}x")
    always = systems.get("redis-always")
    for w in (1, 16):
        if always is None:
            check(f"window {w} >= 1.0x Redis always", None, "skipped (no Redis)")
        else:
            ratio = t[f"w{w}"]["ops_per_s"] / always["throughput"][f"w{w}"]["ops_per_s"]
            check(f"window {w} >= 1.0x Redis always", ratio >= 1.0, f"{ratio:.2f}x")
    top = max(res["options"]["rates"])
    p99 = zc["latency"][f"r{top}"]["convergence_s"]["p99"]
    check(f"convergence p99 at {top}/s < 5 ms", p99 < 0.005, f"{p99 * 1000:.2f} ms")
    sat = zc["replication"][f"w{max(res['options']['windows'])}"]
    check("messages / increment at saturation <= 0.1", sat["messages_per_increment"] <= 0.1,
          f"{sat['messages_per_increment']:.4f}")
    check("bytes / increment at saturation <= 20", sat["bytes_per_increment"] <= 20,
          f"{sat['bytes_per_increment']:.2f}")
    rss_max = max(v for v in zc["rss_after_soak_kib"].values()) / 1024
    check("node RSS < 60 MB", rss_max < 60, f"max {rss_max:.1f} MB")
    growth = max(zc["rss_after_soak_kib"][i] - zc["rss_before_soak_kib"][i]
                 for i in zc["rss_before_soak_kib"]) / 1024
    check(f"RSS growth < 5 MB over {zc['soak']['acked']:,} increments", growth < 5,
          f"max {growth:+.1f} MB")
    ready = max(zc["ready_s"].values())
    check("node ready < 1 s", ready < 1.0, f"max {ready:.3f} s")
    return checks


def render(res: dict[str, Any]) -> str:
    names = list(res["systems"])
    head = ["metric", "zcounter", *names, *[f"zc/{n}" for n in names]]
    body = []
    for r in res["rows"]:
        body.append([r["metric"], _fmt(r["zcounter"], r["unit"]),
                     *[_fmt(r["baselines"][n], r["unit"]) for n in names],
                     *[("-" if r["ratios"][n] is None else f"{r['ratios'][n]:.2f}x")
                       for n in names]])
    widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(h.ljust(widths[i]) if i == 0 else h.rjust(widths[i])
                       for i, h in enumerate(head))]
    lines.append("  ".join("-" * w for w in widths))
    for b in body:
        lines.append("  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i])
                               for i, c in enumerate(b)))
    lines.append("")
    lines.append("targets:")
    for c in res["targets"]:
        mark = {True: "MET   ", False: "MISSED", None: "n/a   "}[c["met"]]
        lines.append(f"  {mark} {c['target']}: {c['detail']}")
    for conv_key in (f"r{r}" for r in res["options"]["rates"]):
        lat = res["zcounter"]["latency"][conv_key]
        if lat.get("convergence_unseen"):
            lines.append(f"  note: {lat['convergence_unseen']} acknowledgements at {conv_key} "
                         "never seen at every peer within 1 s of the run's end")
        if lat.get("overloaded") or lat["acked"] < lat["offered"]:
            lines.append(f"  note: zcounter run {conv_key} answered {lat['acked']} of "
                         f"{lat['offered']} offered")
    for s in res["skipped"]:
        lines.append(f"  skipped: {s}")
    return "\n".join(lines)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- command


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--ops", type=click.IntRange(min=100), default=100_000, show_default=True,
              help="Increments per throughput run (each run also stops after --seconds).")
@click.option("--seconds", type=click.FloatRange(min=0.5), default=15.0, show_default=True,
              help="Time limit of each throughput run.")
@click.option("--latency-seconds", type=click.FloatRange(min=0.5), default=5.0,
              show_default=True, help="Duration of each fixed-load latency run.")
@click.option("--count", type=click.IntRange(min=1000), default=1_000_000, show_default=True,
              help="Increments of the memory soak (spread over the three nodes).")
@click.option("--poll-interval-ms", type=click.FloatRange(min=0.0), default=0.5,
              show_default=True,
              help="Convergence observers ask each other node at most this often.")
@click.option("--quick", is_flag=True,
              help="A short run: --ops 5000 --seconds 5 --latency-seconds 1 --count 20000.")
@click.option("--skip-baselines", is_flag=True, help="Measure zcounter only.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path),
              help="Where the temporary cluster and Redis data go (default: the system temp "
                   "dir).  fsync cost depends on this file system.")
@click.option("--no-progress", is_flag=True, help="No progress display on stderr.")
def main(ops: int, seconds: float, latency_seconds: float, count: int,
         poll_interval_ms: float, quick: bool, skip_baselines: bool, as_json: bool,
         data_root: Path | None, no_progress: bool) -> None:
    """Benchmark a fresh local three-node cluster against an echo ceiling and Redis.

    Everything runs on 127.0.0.1 and is torn down at the end (also on Ctrl-C).
    """
    if quick:
        ops, seconds, latency_seconds, count = 5000, 5.0, 1.0, 20_000
    opts = Options(ops, seconds, latency_seconds, count, poll_interval_ms / 1000.0,
                   RATES, WINDOWS)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    if data_root is not None:
        data_root.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="zcounter-bench-", dir=data_root))
    progress = Progress(enabled=not no_progress and sys.stderr.isatty())
    bench = Bench(opts, root, progress)
    res = bench.results
    res["options"] = {"ops": ops, "seconds": seconds, "latency_seconds": latency_seconds,
                      "count": count, "poll_interval_ms": poll_interval_ms,
                      "windows": list(WINDOWS), "rates": list(RATES)}
    res["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                      "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version(),
                      "data_root": str(root)}
    try:
        res["commit_costs"] = commit_costs(root)
        bench.run(baselines=not skip_baselines)
    except KeyboardInterrupt:
        progress.close()
        click.echo("[bench] interrupted; everything started was stopped", err=True)
        sys.exit(130)
    finally:
        progress.close()
        shutil.rmtree(root, ignore_errors=True)
    res["rows"] = build_rows(res)
    res["targets"] = check_targets(res)
    if as_json:
        click.echo(orjson.dumps(_json_safe(res), option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(render(res))


if __name__ == "__main__":
    main()
