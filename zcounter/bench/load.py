"""Load generators: closed loop, open loop (with convergence observers) and pipelined
bulk writes, over raw ZeroMQ DEALERs for zcounter and the echo ceiling, over redis-py
for Redis.  Every loop is bounded in count *and* time and stops by itself; a server that
stays silent for :data:`STALL_S` ends the run (reported as ``stalled``).

Requests are the node's wire format (``zcounter/protocol/codec.py``), one JSON frame
each, with a correlation ``id``; they carry no request id (``rid``), like Redis ``INCR``.
The bodies are formatted from byte templates on the hot path (one ``%`` per request):
encoding through :mod:`zcounter.protocol.codec` would measure the client, not the node.

``curve`` (a map endpoint -> (client certificate, the node's public key file)) makes the
DEALERs of those endpoints CurveZMQ clients, for a cluster in ``curve`` mode (issue 10).
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import queue
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import zmq

from ..localcluster import curve_client
from ..protocol.codec import MAX_KEYS_PER_GET
from .keys import KeySpec, KeyStream
from .measure import summarize
from .progress import Tick, no_progress

#: A client that hears nothing for this long gives up on the run (a stuck server).
STALL_S = 5.0
#: Open-loop runs stop offering load beyond this many unanswered requests (overload).
MAX_OUTSTANDING = 50_000
#: The open-loop client never sleeps longer than this between checks for replies.
SLEEP_SLICE_S = 1e-4
#: How long the convergence observers may keep asking after the last acknowledgement.
CONVERGENCE_TAIL_S = 1.0

TEMPLATES = {
    "increment": b'{"op":"increment","id":%d,"key":"k%d"}',
    # What ``--ttl 2`` sends on every increment (issue 21's rate limiter).
    "increment_ttl": b'{"op":"increment","id":%d,"key":"k%d","ttl_ms":2000}',
    "decrement": b'{"op":"decrement","id":%d,"key":"k%d"}',
    "get": b'{"op":"get","id":%d,"key":"k%d"}',
}
_OK = b'"ok":true'

Context = zmq.Context[zmq.Socket[bytes]]
Socket = zmq.Socket[bytes]
#: endpoint -> (client certificate, the node's public key file)
Curve = Mapping[str, tuple[Path, Path]]


@dataclass(frozen=True)
class Workload:
    """What a closed-loop client sends: ``op`` ("increment" or "get") on ``keys``."""

    op: str = "increment"
    keys: KeySpec = field(default_factory=KeySpec)

    @property
    def label(self) -> str:
        return f"{self.op}, {self.keys.label}"


def dealer(ctx: Context, endpoint: str, curve: Curve | None = None) -> Socket:
    sock = ctx.socket(zmq.DEALER)
    if curve is not None and endpoint in curve:
        curve_client(sock, *curve[endpoint])
    sock.setsockopt(zmq.LINGER, 0)
    # Unbounded queues on the client side: the window or the schedule bounds them.
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.RECONNECT_IVL, 5)
    sock.connect(endpoint)
    return sock


def _connect(sock: Socket, endpoint: str) -> None:
    """One ping, so the connection is up before any clock starts."""
    sock.send(b'{"op":"ping","id":-1}')
    if not sock.poll(int(STALL_S * 1000)):
        raise TimeoutError(f"{endpoint} did not answer")
    sock.recv()


class Channel:
    """Request/reply with one node on one DEALER (status, gets, pings), by ``id``."""

    def __init__(self, endpoint: str, ctx: Context | None = None) -> None:
        self.endpoint = endpoint
        self._sock = dealer(ctx or zmq.Context.instance(), endpoint)
        self._tag = 0

    def call(self, request: dict[str, Any], timeout_s: float = 10.0) -> dict[str, Any]:
        self._tag += 1
        tag = f"bench-{self._tag}"
        self._sock.send(orjson.dumps({**request, "id": tag}))
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self._sock.poll(max(1, int(left * 1000))):
                raise TimeoutError(f"{self.endpoint} did not answer {request.get('op')!r} "
                                   f"within {timeout_s} s")
            reply: dict[str, Any] = orjson.loads(self._sock.recv())
            if reply.get("id") == tag:  # an older call's late answer is dropped
                return reply

    def status(self, timeout_s: float = 10.0) -> dict[str, Any]:
        status: dict[str, Any] = self.call({"op": "status"}, timeout_s)["status"]
        return status

    def counts(self, keys: Sequence[str], timeout_s: float = 10.0,
               states: bool = False) -> dict[str, Any]:
        """The node's counts of ``keys`` (one request per 10,000 keys); with ``states``
        also their states (``{"counts": [...], "states": {...}}``)."""
        out: list[int] = []
        wire: dict[str, Any] = {}
        for i in range(0, len(keys), MAX_KEYS_PER_GET):
            chunk = list(keys[i:i + MAX_KEYS_PER_GET])
            request: dict[str, Any] = {"op": "get", "keys": chunk}
            if states:
                request["session"] = True
            reply = self.call(request, timeout_s)
            if reply.get("ok") is not True:
                raise RuntimeError(f"{self.endpoint}: get refused: {reply}")
            out += reply.get("counts") or [reply["count"]]
            wire.update(reply.get("states") or {})
        return {"counts": out, "states": wire}

    def close(self) -> None:
        self._sock.close(linger=0)


def call(endpoint: str, request: dict[str, Any], timeout_s: float = 10.0) -> dict[str, Any]:
    """One request/reply on a throwaway DEALER."""
    channel = Channel(endpoint)
    try:
        return channel.call(request, timeout_s)
    finally:
        channel.close()


# --------------------------------------------------------------------------- zmq: closed loop


def closed_loop(endpoint: str, op: str, stream: KeyStream, window: int, ops: int,
                seconds: float, progress: Tick = no_progress,
                curve: Curve | None = None) -> dict[str, Any]:
    """Keep ``window`` requests in flight until ``ops`` were sent or ``seconds`` passed;
    a request counts when its ``ok`` reply arrives."""
    ctx: Context = zmq.Context()
    sock = dealer(ctx, endpoint, curve)
    loads, recv, send, perf = orjson.loads, sock.recv, sock.send, time.perf_counter
    template, table, mask = TEMPLATES[op], stream.table, stream.mask
    try:
        _connect(sock, endpoint)
        sent = acked = errors = reported = 0
        stalled = False
        start = perf()
        deadline = start + seconds
        for _ in range(min(window, ops)):
            send(template % (sent, table[sent & mask]))
            sent += 1
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
                    send(template % (sent, table[sent & mask]))
                    sent += 1
            if acked - reported >= 1000:
                progress(acked - reported)
                reported = acked
        elapsed = perf() - start
        progress(acked - reported)
        end = time.monotonic()
        return {"acked": acked, "errors": errors, "elapsed_s": elapsed,
                "ops_per_s": acked / elapsed if elapsed > 0 else 0.0, "stalled": stalled,
                "t_start": end - elapsed, "t_end": end}
    finally:
        sock.close(linger=0)
        ctx.term()


# --------------------------------------------------------------------------- zmq: open loop


class _Observer:
    """Keeps one ``get`` in flight at another node for the keys whose acknowledgement it
    has not yet seen there, and notes when each acknowledgement became visible."""

    def __init__(self, sock: Socket, n: int) -> None:
        self.sock = sock
        #: key index -> acknowledgements not yet seen here: (count, ack number), ascending.
        self.pending: dict[int, deque[tuple[int, int]]] = {}
        self.asked: list[int] = []
        self.busy = False
        self.next_at = 0.0
        self.seen_at = [math.nan] * n
        self.samples = 0

    def expect(self, key: int, count: int, ack: int) -> None:
        waiting = self.pending.get(key)
        if waiting is None:
            waiting = self.pending[key] = deque()
        waiting.append((count, ack))

    def ask(self, tag: int, now: float, interval_s: float) -> None:
        self.next_at = now + interval_s
        if not self.pending:
            return
        self.asked = list(self.pending)[:MAX_KEYS_PER_GET]
        self.sock.send(orjson.dumps({"op": "get", "id": tag,
                                     "keys": [f"k{k}" for k in self.asked]}))
        self.busy = True

    def answer(self, data: bytes, arrived: float) -> None:
        self.busy = False
        self.samples += 1
        reply = orjson.loads(data)
        if reply.get("ok") is not True:
            return
        counts = reply.get("counts") or [reply["count"]]
        for key, count in zip(self.asked, counts, strict=False):
            waiting = self.pending.get(key)
            if waiting is None:
                continue
            while waiting and waiting[0][0] <= count:
                self.seen_at[waiting.popleft()[1]] = arrived
            if not waiting:
                del self.pending[key]


def open_loop(endpoint: str, rate: float, seconds: float, keys: KeySpec, observe: list[str],
              poll_interval_s: float, progress: Tick = no_progress,
              curve: Curve | None = None) -> dict[str, Any]:
    """Offer ``rate`` increments/s for ``seconds`` on a fixed schedule.

    Latency counts from each request's *intended* send time ``t0 + i / rate`` (no
    coordinated omission).  With ``observe`` (the other nodes), convergence: the time
    from an acknowledgement's arrival until every other node answers a ``get`` of that
    key, asked after that arrival, with a count at least the acknowledged one.  Only
    this client writes during the run, and only increments, so a key's count grows
    with every write and "at least" means "has seen it".
    """
    ctx: Context = zmq.Context()
    sock = dealer(ctx, endpoint, curve)
    stream = KeyStream(keys)
    table, mask = stream.table, stream.mask
    n = int(rate * seconds)
    observers = [_Observer(dealer(ctx, ep, curve), n) for ep in observe]
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    for obs in observers:
        poller.register(obs.sock, zmq.POLLIN)
    perf, loads, template = time.perf_counter, orjson.loads, TEMPLATES["increment"]
    try:
        _connect(sock, endpoint)
        for obs, ep in zip(observers, observe, strict=True):
            _connect(obs.sock, ep)
        latency: list[float] = []
        ack_at = [math.nan] * n
        errors = i = got = reported = tag = 0
        overloaded = False
        t0 = perf() + 0.01
        last_reply = t0
        while got + errors < n:
            now = perf()
            while i < n and t0 + i / rate <= now:
                if i - got - errors >= MAX_OUTSTANDING:
                    overloaded = True
                    break
                sock.send(template % (i, table[i & mask]))
                i += 1
            if overloaded or now - last_reply > STALL_S:
                break
            for obs in observers:
                if not obs.busy and now >= obs.next_at:
                    tag += 1
                    obs.ask(tag, now, poll_interval_s)
            while True:
                try:
                    data = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                arrived = last_reply = perf()
                reply = loads(data)
                if reply.get("ok") is not True:
                    errors += 1
                    continue
                got += 1
                j = reply["id"]
                latency.append(arrived - (t0 + j / rate))
                ack_at[j] = arrived
                for obs in observers:
                    obs.expect(table[j & mask], reply["count"], j)
            for obs in observers:
                if obs.busy:
                    with contextlib.suppress(zmq.Again):
                        obs.answer(obs.sock.recv(zmq.NOBLOCK), perf())
            if got - reported >= 500:
                progress(got - reported)
                reported = got
            nxt = t0 + i / rate if i < n else math.inf
            for obs in observers:
                if not obs.busy:
                    nxt = min(nxt, obs.next_at)
            wait = nxt - perf()
            if wait >= 0.002:
                poller.poll(int(wait * 1000) - 1 if wait < 1 else 1000)
            elif wait > 0:
                # zmq polls in whole milliseconds: sleep in short slices instead, so a
                # reply is noticed at most SLEEP_SLICE_S late.
                time.sleep(min(wait, SLEEP_SLICE_S))
        progress(got - reported)
        # Let the observers see the tail of the run before judging convergence.
        end = perf() + CONVERGENCE_TAIL_S
        while observers and perf() < end and any(o.pending or o.busy for o in observers):
            for obs in observers:
                if obs.busy and obs.sock.poll(1):
                    obs.answer(obs.sock.recv(), perf())
                if not obs.busy:
                    tag += 1
                    obs.ask(tag, perf(), 0.0)
        result: dict[str, Any] = {"offered": n, "sent": i, "acked": got, "errors": errors,
                                  "overloaded": overloaded, "latency_s": summarize(latency)}
        if observers:
            conv: list[float] = []
            unseen = 0
            for j, arrived in enumerate(ack_at):
                if math.isnan(arrived):
                    continue
                seen = [o.seen_at[j] for o in observers]
                if any(math.isnan(s) for s in seen):
                    unseen += 1
                else:
                    conv.append(max(0.0, max(seen) - arrived))
            result["convergence_s"] = summarize(conv)
            result["convergence_unseen"] = unseen
            result["observer_samples"] = [o.samples for o in observers]
        return result
    finally:
        sock.close(linger=0)
        for obs in observers:
            obs.sock.close(linger=0)
        ctx.term()


# --------------------------------------------------------------------------- zmq: bulk writes


def pipelined(jobs: Sequence[tuple[str, Iterator[bytes]]], window: int, seconds: float,
              progress: Tick = no_progress) -> dict[str, Any]:
    """Send every job's requests to its endpoint with ``window`` in flight per endpoint,
    all endpoints at once from this one process (the scale section's fill and changes).
    Requests must carry distinct integer ids per job; replies are only counted."""
    ctx: Context = zmq.Context()
    socks = [dealer(ctx, ep) for ep, _ in jobs]
    poller = zmq.Poller()
    for sock in socks:
        poller.register(sock, zmq.POLLIN)
    sent = [0] * len(jobs)
    acked = [0] * len(jobs)
    errors = [0] * len(jobs)
    first_error: bytes | None = None
    perf = time.perf_counter
    try:
        for sock, (ep, _) in zip(socks, jobs, strict=True):
            _connect(sock, ep)
        start = perf()
        deadline = start + seconds
        iters = [it for _, it in jobs]
        live = [True] * len(jobs)

        def feed(k: int, n: int) -> None:
            send = socks[k].send
            it = iters[k]
            for _ in range(n):
                body = next(it, None)
                if body is None:
                    live[k] = False
                    return
                send(body)
                sent[k] += 1

        for k in range(len(jobs)):
            feed(k, window)
        stalled = timed_out = False
        reported = 0
        while sum(acked) + sum(errors) < sum(sent):
            ready = dict(poller.poll(int(STALL_S * 1000)))
            if not ready:
                stalled = True
                break
            if perf() > deadline:
                timed_out = True
                live = [False] * len(jobs)
            for k, sock in enumerate(socks):
                if sock not in ready:
                    continue
                got = 0
                while True:
                    try:
                        data = sock.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    got += 1
                    if _OK in data:
                        acked[k] += 1
                    else:
                        errors[k] += 1
                        first_error = first_error or data
                if live[k]:
                    feed(k, got)
            done = sum(acked)
            if done - reported >= 2000:
                progress(done - reported)
                reported = done
        elapsed = perf() - start
        progress(sum(acked) - reported)
        return {"acked": sum(acked), "errors": sum(errors), "per_endpoint": acked,
                "elapsed_s": elapsed, "ops_per_s": sum(acked) / elapsed if elapsed else 0.0,
                "stalled": stalled, "timed_out": timed_out,
                "first_error": None if first_error is None else first_error.decode()[:300]}
    finally:
        for sock in socks:
            sock.close(linger=0)
        ctx.term()


def numbered(template: bytes, keys: Iterator[int]) -> Iterator[bytes]:
    """Request bodies for ``keys`` (indices), ids 0, 1, 2, ..."""
    for i, key in enumerate(keys):
        yield template % (i, key)


# --------------------------------------------------------------------------- redis


def redis_closed_loop(port: int, op: str, stream: KeyStream, window: int, ops: int,
                      seconds: float, progress: Tick = no_progress) -> dict[str, Any]:
    """Redis ``INCR``/``GET`` of the same keys: one request at a time for window 1,
    pipelines of ``window`` requests otherwise (what redis-py offers for a window)."""
    import redis

    r = redis.Redis(host="127.0.0.1", port=port)
    table, mask = stream.table, stream.mask
    try:
        r.ping()
        acked = reported = 0
        perf = time.perf_counter
        start = perf()
        deadline = start + seconds
        while acked < ops and perf() < deadline:
            if window == 1:
                key = f"k{table[acked & mask]}"
                if op == "get":
                    r.get(key)
                else:
                    r.incr(key)
                acked += 1
            else:
                pipe = r.pipeline(transaction=False)
                for j in range(acked, acked + min(window, ops - acked)):
                    if op == "get":
                        pipe.get(f"k{table[j & mask]}")
                    else:
                        pipe.incr(f"k{table[j & mask]}")
                acked += len(pipe.execute())
            if acked - reported >= 1000:
                progress(acked - reported)
                reported = acked
        elapsed = perf() - start
        progress(acked - reported)
        end = time.monotonic()
        return {"acked": acked, "errors": 0, "elapsed_s": elapsed,
                "ops_per_s": acked / elapsed if elapsed > 0 else 0.0, "stalled": False,
                "t_start": end - elapsed, "t_end": end}
    finally:
        r.close()


def redis_open_loop(port: int, rate: float, seconds: float, keys: KeySpec,
                    progress: Tick = no_progress) -> dict[str, Any]:
    """The open-loop schedule on one connection; replies come back in order (FIFO)."""
    import redis

    r = redis.Redis(host="127.0.0.1", port=port)
    r.ping()
    stream = KeyStream(keys)
    table, mask = stream.table, stream.mask
    # redis-py's low-level connection API is untyped.
    conn: Any = r.connection_pool.get_connection()
    try:
        single = conn.pack_command("INCR", "k0") if keys.count == 1 else None
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
                packed = single or conn.pack_command("INCR", f"k{table[i & mask]}")
                conn.send_packed_command(packed, check_health=False)
                i += 1
            if overloaded or now - last_reply > STALL_S:
                break
            while got < i and conn.can_read(timeout=0):
                conn.read_response()
                arrived = last_reply = perf()
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


# --------------------------------------------------------------------------- several clients


def _client_process(kind: str, target: Any, work: Workload, window: int, ops: int,
                    seconds: float, salt: int, ready: Any, go: Any, results: Any) -> None:
    """One of several concurrent clients (own process: the GIL would serialise threads)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent tears everything down
    stream = KeyStream(work.keys, salt)  # built before the start: not part of the run
    ready.put(salt)
    if not go.wait(timeout=120):
        return
    if kind == "redis":
        results.put(redis_closed_loop(target, work.op, stream, window, ops, seconds))
    else:
        results.put(closed_loop(target, work.op, stream, window, ops, seconds))


def concurrent(kind: str, targets: list[Any], work: Workload, window: int, ops: int,
               seconds: float, on_wait: Callable[[], None] | None = None) -> dict[str, Any]:
    """One client process per target, released together once all are ready; the
    throughput is the sum of acknowledgements over the span from first start to last
    end.  ``on_wait`` is called about twice a second meanwhile (progress)."""
    mp = multiprocessing.get_context("spawn")
    ready, go, results = mp.Queue(), mp.Event(), mp.Queue()
    procs = [mp.Process(target=_client_process, daemon=True,
                        args=(kind, t, work, window, ops, seconds, salt, ready, go, results))
             for salt, t in enumerate(targets, start=1)]
    for p in procs:
        p.start()
    parts: list[dict[str, Any]] = []
    try:
        for _ in procs:
            ready.get(timeout=120)
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
                p.join(timeout=5)
    if len(parts) < len(procs):
        raise RuntimeError(f"{len(procs) - len(parts)} client process(es) did not finish")
    acked = sum(r["acked"] for r in parts)
    span = max(r["t_end"] for r in parts) - min(r["t_start"] for r in parts)
    return {"acked": acked, "errors": sum(r["errors"] for r in parts), "elapsed_s": span,
            "ops_per_s": acked / span if span > 0 else 0.0, "clients": len(parts),
            "stalled": any(r["stalled"] for r in parts)}
