"""The rate-limit load of ``bin/bench --ratelimit`` (issue 21), run in a process of its
own so that the sampler in the parent never delays a send.

The schedule (pure: :class:`Schedule`): each second ``s`` gets ``keys_per_s`` new keys
``rl:{n}:{s}``, each incremented ``increments`` times within that second.  Steps go
round-major - every key's first increment (the one with ``ttl_ms``), then every key's
second, ... - spread evenly over the second, so a key's increments are 1 / increments
of a second apart and its first one sets the deadline.  Key ``n`` lives on node
``n % nodes + 1`` (a rate limiter's client pinned to one node), so its increments travel
one connection in order.

The loop is open (request ``j`` is due at ``start + j / steps_per_s``) with a bounded
window of outstanding requests per node: a node that falls behind holds the schedule up
(lateness is reported), it never makes the client queue without bound.  It stops by
itself after ``seconds`` of schedule (a count bound) or at a hard deadline.

Deadline probes: one key in every ``probe_stride`` is probed on every node with the
``ttl`` request (a read: it creates no state) ``PROBE_MARGIN_S`` after its first
increment's acknowledgement + ttl - by then its deadline (set by the node between the
send and the acknowledgement) has passed on every node of this machine's one clock, so
every node must answer ``-2`` (no such key).
"""

from __future__ import annotations

import bisect
import contextlib
import heapq
import math
import time
from array import array
from dataclasses import dataclass
from typing import Any

import orjson
import zmq

from .load import STALL_S, dealer

#: A probe is sent this long after the first acknowledgement + ttl.
PROBE_MARGIN_S = 0.05
#: The loop never waits longer than this for a reply before it looks at the schedule.
POLL_MS = 1
#: Keys whose probes answered something else than -2 kept for the report.
MAX_VIOLATIONS = 20
#: Lateness is counted in a histogram of 1 ms buckets up to this many (the last bucket
#: holds everything later): millions of requests, a few KB.
LATE_BUCKETS = 10_000

_FIRST = b'{"op":"increment","id":%d,"key":"rl:%d:%d","ttl_ms":%d}'
_NEXT = b'{"op":"increment","id":%d,"key":"rl:%d:%d"}'


@dataclass(frozen=True)
class Schedule:
    """Which request is the ``j``-th, when it is due, and where it goes."""

    keys_per_s: int
    increments: int
    nodes: int
    seconds: int
    ttl_ms: int

    @property
    def steps_per_s(self) -> int:
        return self.keys_per_s * self.increments

    @property
    def total(self) -> int:
        """The count bound: every request of the run."""
        return self.seconds * self.steps_per_s

    @property
    def keys(self) -> int:
        return self.seconds * self.keys_per_s

    def step(self, j: int) -> tuple[int, int, int]:
        """(second, key index n, round r) of request ``j``: round-major in its second."""
        s, within = divmod(j, self.steps_per_s)
        r, n = divmod(within, self.keys_per_s)
        return s, n, r

    def due_s(self, j: int) -> float:
        """Seconds after the start at which request ``j`` is due."""
        return j / self.steps_per_s

    def node(self, n: int) -> int:
        """0-based node index of key ``n`` (of any second)."""
        return n % self.nodes

    def key_id(self, s: int, n: int) -> int:
        """The key's position in the run (index of :func:`first_sends`' array)."""
        return s * self.keys_per_s + n

    def body(self, j: int) -> bytes:
        s, n, r = self.step(j)
        return _FIRST % (j, n, s, self.ttl_ms) if r == 0 else _NEXT % (j, n, s)


def key_name(s: int, n: int) -> str:
    return f"rl:{n}:{s}"


def live_at(first_sends: list[float], t: float, ttl_s: float) -> int:
    """Keys live at wall time ``t``: first increment sent at or before ``t`` and less than
    ``ttl_s`` ago.  ``first_sends`` is sorted.  The node sets a key's deadline when it
    applies that increment, after the send, so every key counted here is live; a key
    whose acknowledgement is still under way at ``t`` may be live and not counted -
    the figure errs on the strict side for "held <= 3x live"."""
    return bisect.bisect_right(first_sends, t) - bisect.bisect_right(first_sends, t - ttl_s)


@dataclass
class _Probes:
    """Deadline probes: due time heap, sockets, and what they found."""

    socks: list[zmq.Socket[bytes]]
    stride: int
    margin_s: float
    due: list[tuple[float, int, int]]
    first_ack: dict[int, float]
    sent: int = 0
    answered: int = 0
    skipped: int = 0
    violations: int = 0
    examples: list[dict[str, Any]] | None = None

    def ack(self, sched: Schedule, s: int, n: int, r: int, wall: float) -> None:
        kid = sched.key_id(s, n)
        if kid % self.stride:
            return
        if r == 0:
            self.first_ack[kid] = wall
            return
        first = self.first_ack.get(kid)
        if r == sched.increments - 1 and first is not None:
            if wall >= first + sched.ttl_ms / 1000:
                # The last increment came after the deadline: a new life, which reads as
                # existing on purpose.  Nothing to judge.
                self.skipped += 1
            else:
                heapq.heappush(self.due, (first + sched.ttl_ms / 1000 + self.margin_s, s, n))
            del self.first_ack[kid]

    def send_due(self, wall: float) -> None:
        while self.due and self.due[0][0] <= wall:
            _, s, n = heapq.heappop(self.due)
            body = orjson.dumps({"op": "ttl", "id": f"p:{s}:{n}", "key": key_name(s, n)})
            for sock in self.socks:
                sock.send(body)
                self.sent += 1

    def answer(self, node: int, data: bytes) -> None:
        self.answered += 1
        reply = orjson.loads(data)
        # A ttl reply is counts [pttl, deadline]; "count" is pttl alone.
        pttl = (reply.get("counts") or [reply.get("count")])[0]
        if reply.get("ok") is True and pttl == -2:
            return
        self.violations += 1
        if self.examples is not None and len(self.examples) < MAX_VIOLATIONS:
            self.examples.append({"node": node + 1, "probe": reply.get("id"),
                                  "reply": {k: reply.get(k) for k in
                                            ("ok", "counts", "error", "message")}})


def run_load(endpoints: list[str], sched: Schedule, window: int, probe_stride: int,
             hard_limit_s: float) -> dict[str, Any]:
    """Run the schedule against ``endpoints`` (node 1..N's ROUTERs); see the module."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    socks = [dealer(ctx, ep) for ep in endpoints]
    probes = _Probes([dealer(ctx, ep) for ep in endpoints], probe_stride, PROBE_MARGIN_S,
                     [], {}, examples=[])
    try:
        for sock in [*socks, *probes.socks]:
            sock.send(b'{"op":"ping","id":-1}')
            if not sock.poll(int(STALL_S * 1000)):
                raise TimeoutError("a node did not answer the loader's ping")
            sock.recv()
        return _Loader(socks, sched, window, probes).run(hard_limit_s)
    finally:
        for sock in [*socks, *probes.socks]:
            sock.close(linger=0)
        ctx.term()


class _Loader:
    """The open loop: sends what is due (window permitting), reads what arrived."""

    def __init__(self, socks: list[zmq.Socket[bytes]], sched: Schedule, window: int,
                 probes: _Probes) -> None:
        self.socks = socks
        self.sched = sched
        self.window = window
        self.probes = probes
        self.poller = zmq.Poller()
        for sock in [*socks, *probes.socks]:
            self.poller.register(sock, zmq.POLLIN)
        self.index = {sock: k for k, sock in enumerate(socks)}
        self.probe_index = {sock: k for k, sock in enumerate(probes.socks)}
        self.first_sends = array("d", bytes(8 * sched.keys))
        self.outstanding = [0] * len(socks)
        self.late = [0] * (LATE_BUCKETS + 1)
        self.acked = self.errors = self.mismatched = self.j = 0
        self.first_error: str | None = None
        self.start = time.perf_counter()
        self.wall0 = time.time()
        self.last_reply = self.start
        self.last_send_s = 0.0

    def send_due(self, el: float) -> None:
        sched = self.sched
        while self.j < sched.total and sched.due_s(self.j) <= el:
            s, n, r = sched.step(self.j)
            k = sched.node(n)
            if self.outstanding[k] >= self.window:
                return  # this node is behind: the schedule waits for it (bounded)
            self.socks[k].send(sched.body(self.j))
            self.outstanding[k] += 1
            if r == 0:
                self.first_sends[sched.key_id(s, n)] = self.wall0 + el
            self.late[min(LATE_BUCKETS, int((el - sched.due_s(self.j)) * 1000))] += 1
            self.j += 1
            self.last_send_s = el

    def receive(self, sock: zmq.Socket[bytes]) -> None:
        if sock in self.probe_index:
            with contextlib.suppress(zmq.Again):
                while True:
                    self.probes.answer(self.probe_index[sock], sock.recv(zmq.NOBLOCK))
            return
        k, sched = self.index[sock], self.sched
        with contextlib.suppress(zmq.Again):
            while True:
                reply = orjson.loads(sock.recv(zmq.NOBLOCK))
                self.last_reply = time.perf_counter()
                self.outstanding[k] -= 1
                if reply.get("ok") is not True:
                    self.errors += 1
                    self.first_error = self.first_error or str(reply)[:300]
                    continue
                self.acked += 1
                s, n, r = sched.step(int(reply["id"]))
                if r == sched.increments - 1 and reply.get("count") != sched.increments:
                    self.mismatched += 1
                self.probes.ack(sched, s, n, r, time.time())

    def run(self, hard_limit_s: float) -> dict[str, Any]:
        perf, probes = time.perf_counter, self.probes
        while (el := perf() - self.start) <= hard_limit_s:
            self.send_due(el)
            busy = any(self.outstanding)
            if self.j >= self.sched.total and not busy and not probes.due:
                break
            if busy and perf() - self.last_reply > STALL_S:
                break
            probes.send_due(time.time())
            for sock, _ in self.poller.poll(POLL_MS):
                self.receive(sock)
        elapsed = perf() - self.start
        end = perf() + 2.0  # probes still in flight: a moment (bounded) to answer
        while probes.answered < probes.sent and perf() < end:
            for sock, _ in self.poller.poll(50):
                self.receive(sock)
        return {"sent": self.j, "scheduled": self.sched.total, "acked": self.acked,
                "errors": self.errors, "first_error": self.first_error,
                "elapsed_s": elapsed, "wall_start": self.wall0,
                "last_send_s": self.last_send_s,
                "ops_per_s": self.acked / elapsed if elapsed else 0.0,
                "lateness_s": histogram_summary(self.late, 0.001),
                "count_mismatches": self.mismatched, "unanswered": sum(self.outstanding),
                "probes": {"keys_every": probes.stride, "sent": probes.sent,
                           "answered": probes.answered, "violations": probes.violations,
                           "skipped_new_life": probes.skipped, "examples": probes.examples,
                           "not_sent": len(probes.due)},
                # Keys never sent stay 0 (first_sends_from drops them).
                "first_sends": self.first_sends.tobytes()}


def histogram_summary(counts: list[int], unit: float) -> dict[str, float]:
    """p50 / p99 / p99.9 / max (upper bucket edges, in ``unit`` per bucket) of a
    histogram; the last bucket means "at least that much"."""
    total = sum(counts)
    out: dict[str, float] = {"n": total}
    if not total:
        return {**out, "p50": math.nan, "p99": math.nan, "p99.9": math.nan, "max": math.nan}
    marks = {"p50": 0.5, "p99": 0.99, "p99.9": 0.999}
    running = 0
    for i, c in enumerate(counts):
        running += c
        for name, q in list(marks.items()):
            if running >= math.ceil(q * total):
                out[name] = (i + 1) * unit
                del marks[name]
        if c:
            out["max"] = (i + 1) * unit
    return out


def first_sends_from(blob: bytes) -> list[float]:
    """The loader's first-send times (wall s) of the keys it sent, sorted."""
    times = array("d")
    times.frombytes(blob)
    return sorted(t for t in times if t > 0)


def load_process(endpoints: list[str], sched: Schedule, window: int, probe_stride: int,
                 hard_limit_s: float, results: Any) -> None:
    """The child process's entry point: the load's result (or its error) on ``results``."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent tears everything down
    try:
        results.put(run_load(endpoints, sched, window, probe_stride, hard_limit_s))
    except Exception as exc:  # the parent reports it; never hang it on a dead child
        results.put({"error": f"{type(exc).__name__}: {exc}"})
