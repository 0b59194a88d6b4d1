"""The client side of the fault tests: a process that runs *inside* the client network
namespace and drives real :class:`zcounter.Client` sessions for the test process.

The test (in the root namespace) cannot open sockets to the nodes itself - their
addresses exist only inside the namespaces it built - so it starts this script with
``ip netns exec <client ns> python agent.py --config FILE`` and talks to it over
stdin/stdout, one JSON object per line:

* ``{"op": "start", ...plan}``: start writer threads (one session per target node) and
  reader threads (one per node); returns at once.  Writers pick a key of ``keys`` at
  random for every update, and decrement with probability ``decrement_ratio``.
* ``{"op": "stop"}``: stop the load, wait for in-flight calls, return the history.
* ``{"op": "states", "keys": [...], "timeout": s}``: every node's states of ``keys``
  (``null`` for a node that did not answer), read by a session-less client.
* ``{"op": "write", "node": n, "key": k, "amount": a | "reset": true, "wait": w}``: one
  update (``amount`` < 0 decrements); returns ``{"count": c}`` or ``{"error": class,
  "message": text}``.
* ``{"op": "rl_start", ...plan}`` / ``{"op": "rl_stop"}``: issue 21's rate-limit load
  (:class:`RateLimit`): per node a writer making keys ``rl:{node}:{i}`` of ``per_key``
  increments with ``ttl`` on the first, and between keys incrementing one of
  ``long_keys`` keys ``long:{node}:{j}`` (``long_ttl``: they stay live) whose applied
  amounts it counts; a prober reads sampled ``rl:`` keys on every node just after their
  deadline.  ``{"op": "rl_since", "since": wall_s, "nodes": [...]}``: how many ``rl:``
  keys (written at ``nodes``, default any) were first acknowledged at or after
  ``since``, and how many ``long:`` keys exist.
* ``{"op": "status", "node": n}``: the node's status (``{"status": ...}``) or an error.
* ``{"op": "quit"}``.

States are ``{key: {slot: [p, n, bp, bn]}}``, exactly what the node holds: a client whose
session (``seen``) is emptied before a read holds afterwards the reply's states and
nothing else.

Every load loop is bounded both in operations and in seconds, so a test that forgets
to stop it still ends.  Times are ``time.monotonic()``, which is system-wide, so the
test can line them up with the moments it injected faults.

``--cert FILE``: every session uses this client certificate (a cluster in ``curve``
mode, issue 10), as ``bin/client --cert`` does.

Standalone on purpose (imports only zcounter): it is run by path, not as a module.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from zcounter import Client
from zcounter.config import load_config
from zcounter.errors import (
    Indeterminate,
    RequestRefused,
    Unavailable,
    ZCounterError,
)

#: Hard ceilings whatever the plan says: no loop in here may run away.
MAX_OPS_PER_WRITER = 50_000
MAX_LOAD_S = 60.0
MAX_KEYS = 10_000
#: A deadline probe reads its key this long after first acknowledgement + ttl: by then
#: the deadline (set between the send and the acknowledgement) has passed everywhere.
PROBE_MARGIN_S = 0.05

States = dict[str, dict[str, list[int]]]


@dataclass
class Shared:
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    #: [node, key, amount, outcome, t_start, t_end, wait, detail]; ``amount`` is signed
    #: (negative: a decrement); outcome is ok | fail | unknown | indet (indet =
    #: Indeterminate: applied at the node, wait level not confirmed).  ``t_start`` is
    #: taken before the first send: nothing a node reports can include the update
    #: before it.
    ops: list[list[Any]] = field(default_factory=list)
    #: [node, t, states]: ``states`` holds the keys whose state differs from this
    #: reader's previous read of the node (all of them the first time).
    reads: list[list[Any]] = field(default_factory=list)
    #: [node, error class, t]
    read_errors: list[list[Any]] = field(default_factory=list)


def classify(exc: ZCounterError) -> str:
    # Order matters: SessionBehind is a RequestRefused (certainly not applied).
    if isinstance(exc, Indeterminate):
        return "indet"
    if isinstance(exc, RequestRefused):
        return "fail"
    if isinstance(exc, Unavailable):
        return "unknown"
    return "unknown"  # any other error: we cannot claim it was not applied


def read_states(client: Client, keys: list[str]) -> States:
    """The node's states of ``keys``, without any session guard: we want what the node
    holds, not a refusal from a node that went backwards (which is what we check)."""
    client.seen.clear()
    client.get_counts(keys)
    return {k: {s: list(r) for s, r in st.items()} for k, st in client.seen.items()}


def writer(shared: Shared, config: Any, node: int, waits: list[str], by_max: int,
           keys: list[str], decrement_ratio: float, timeout: float, pause_s: float,
           max_ops: int, until: float, seed: int, cert: str | None = None) -> None:
    rng = random.Random(seed)
    with Client(node=node, config=config, timeout=timeout, retries=2, cert=cert) as client:
        for i in range(min(max_ops, MAX_OPS_PER_WRITER)):
            if shared.stop.is_set() or time.monotonic() >= until:
                break
            key = rng.choice(keys)
            by = rng.randint(1, by_max)
            down = rng.random() < decrement_ratio
            wait = waits[i % len(waits)]
            t0 = time.monotonic()
            detail = ""
            try:
                if down:
                    client.decrement(by, key=key, wait=wait)  # type: ignore[arg-type]
                else:
                    client.increment(by, key=key, wait=wait)  # type: ignore[arg-type]
                outcome = "ok"
            except ZCounterError as exc:
                outcome = classify(exc)
                detail = f"{type(exc).__name__}: {exc}"[:200]
            with shared.lock:
                shared.ops.append([node, key, -by if down else by, outcome, t0,
                                   time.monotonic(), wait, detail])
            if pause_s:
                time.sleep(pause_s)


def reader(shared: Shared, config: Any, node: int, keys: list[str], interval: float,
           timeout: float, until: float, cert: str | None = None) -> None:
    last: States = {}
    with Client(node=node, config=config, timeout=timeout, retries=0, cert=cert) as client:
        while not shared.stop.is_set() and time.monotonic() < until:
            try:
                states = read_states(client, keys)
            except ZCounterError as exc:
                with shared.lock:
                    shared.read_errors.append([node, type(exc).__name__, time.monotonic()])
            else:
                t = time.monotonic()
                changed = {k: st for k, st in states.items() if last.get(k) != st}
                last = states
                with shared.lock:
                    shared.reads.append([node, t, changed])
            shared.stop.wait(interval)


class RateLimit:
    """Issue 21's load through real :class:`Client` sessions (see the module)."""

    def __init__(self, config: Any, cert: str | None, plan: dict[str, Any]) -> None:
        self.config, self.cert, self.plan = config, cert, plan
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.until = time.monotonic() + min(float(plan.get("max_s", 30.0)), MAX_LOAD_S * 5)
        #: [node, key, first ack wall s, last ack wall s]
        self.keys: list[list[Any]] = []
        #: key -> [applied amount, uncertain?]
        self.long: dict[str, list[Any]] = {}
        #: [key, node probed, wall s, count or error class]
        self.probes: list[list[Any]] = []
        self.errors: list[str] = []
        self.due: list[tuple[float, str]] = []
        nodes = [int(n) for n in plan.get("nodes", [])]
        self.threads = [threading.Thread(target=self._writer, args=(n,), daemon=True)
                        for n in nodes]
        self.threads.append(threading.Thread(target=self._prober, args=(nodes,), daemon=True))
        for t in self.threads:
            t.start()

    def _writer(self, node: int) -> None:
        p = self.plan
        ttl, long_ttl = float(p.get("ttl", 2.0)), float(p.get("long_ttl", 3600.0))
        per_key, n_long = int(p.get("per_key", 5)), int(p.get("long_keys", 10))
        probe_every = max(1, int(p.get("probe_every", 5)))
        rng = random.Random(int(p.get("seed", 0)) + node)
        with Client(node=node, config=self.config, timeout=float(p.get("timeout", 1.0)),
                    retries=2, cert=self.cert) as client:
            for i in range(MAX_OPS_PER_WRITER):
                if self.stop.is_set() or time.monotonic() >= self.until:
                    return
                key = f"rl:{node}:{i}"
                try:
                    client.increment(1, key=key, ttl=ttl)
                    first = time.time()
                    for _ in range(per_key - 1):
                        client.increment(1, key=key)
                except ZCounterError as exc:
                    with self.lock:
                        self.errors.append(f"{key}: {type(exc).__name__}: {exc}"[:200])
                else:
                    with self.lock:
                        self.keys.append([node, key, first, time.time()])
                        if i % probe_every == 0:
                            heapq.heappush(self.due, (first + ttl + PROBE_MARGIN_S, key))
                self._long(client, f"long:{node}:{i % n_long}", rng.randint(1, 5), long_ttl)

    def _long(self, client: Client, key: str, by: int, ttl: float) -> None:
        try:
            client.increment(by, key=key, ttl=ttl)
            outcome = "ok"
        except ZCounterError as exc:
            outcome = classify(exc)
        with self.lock:
            entry = self.long.setdefault(key, [0, False])
            if outcome in ("ok", "indet"):  # indet: applied, the wait level unconfirmed
                entry[0] += by
            elif outcome == "unknown":
                entry[1] = True

    def _prober(self, nodes: list[int]) -> None:
        # A node busy catching up after the heal may take over 0.5 s: a probe that gets
        # no answer judges nothing (the test bounds those), so wait a little longer.
        clients = {n: Client(node=n, config=self.config, timeout=1.0, retries=1,
                             cert=self.cert) for n in nodes}
        try:
            while not self.stop.is_set() and time.monotonic() < self.until + 5:
                with self.lock:
                    ready = self.due and self.due[0][0] <= time.time()
                    item = heapq.heappop(self.due) if ready else None
                if item is None:
                    self.stop.wait(0.01)
                    continue
                for n, client in clients.items():
                    client.seen.clear()  # the node's own view, no session guard
                    try:
                        found: Any = client.get_count(item[1])
                    except ZCounterError as exc:
                        found = type(exc).__name__
                    with self.lock:
                        self.probes.append([item[1], n, time.time(), found])
        finally:
            for client in clients.values():
                client.close()

    def since(self, wall: float, nodes: list[int] | None = None) -> dict[str, Any]:
        """rl: keys first acknowledged at or after ``wall`` (written at ``nodes``, default
        any), and how many long keys exist."""
        with self.lock:
            return {"rl": sum(1 for k in self.keys
                              if k[2] >= wall and (nodes is None or k[0] in nodes)),
                    "long": len(self.long)}

    def finish(self) -> dict[str, Any]:
        self.stop.set()
        alive = 0
        for t in self.threads:
            t.join(10.0)
            alive += t.is_alive()
        with self.lock:
            return {"keys": self.keys, "long": self.long, "probes": self.probes,
                    "errors": self.errors, "stuck_threads": alive}


class Agent:
    def __init__(self, config_path: str, cert: str | None = None) -> None:
        self.config = load_config(config_path)
        self.cert = cert
        self.shared = Shared()
        self.threads: list[threading.Thread] = []
        self.probes: dict[int, Client] = {}
        self.plan: dict[str, Any] = {}
        self.ratelimit: RateLimit | None = None

    def start(self, plan: dict[str, Any]) -> dict[str, Any]:
        if self.threads:
            return {"error": "load already running"}
        self.shared = Shared()
        self.plan = plan
        until = time.monotonic() + min(float(plan.get("max_s", 30.0)), MAX_LOAD_S)
        timeout = float(plan.get("timeout", 1.0))
        keys = [str(k) for k in plan.get("keys", ["default"])][:MAX_KEYS]
        for index, w in enumerate(plan.get("writers", [])):
            self.threads.append(threading.Thread(target=writer, daemon=True, args=(
                self.shared, self.config, int(w["node"]), list(w.get("waits", ["local"])),
                int(w.get("by_max", 5)), keys, float(plan.get("decrement_ratio", 0.0)),
                timeout, float(plan.get("pause_s", 0.002)), int(plan.get("max_ops", 5000)),
                until, int(plan.get("seed", 0)) + index, self.cert)))
        for node in plan.get("readers", []):
            self.threads.append(threading.Thread(target=reader, daemon=True, args=(
                self.shared, self.config, int(node), keys,
                float(plan.get("read_interval", 0.05)), float(plan.get("read_timeout", 0.5)),
                until, self.cert)))
        for t in self.threads:
            t.start()
        return {"started": len(self.threads)}

    def stop(self) -> dict[str, Any]:
        self.shared.stop.set()
        # A call in flight ends within its client timeout; allow that plus slack.
        limit = time.monotonic() + float(self.plan.get("timeout", 1.0)) * 2 + 5.0
        alive = 0
        for t in self.threads:
            t.join(max(0.0, limit - time.monotonic()))
            alive += t.is_alive()
        self.threads = []
        with self.shared.lock:
            return {"ops": self.shared.ops, "reads": self.shared.reads,
                    "read_errors": self.shared.read_errors, "stuck_threads": alive}

    def _probe(self, node: int, timeout: float) -> Client:
        probe = self.probes.get(node)
        if probe is None:
            probe = self.probes[node] = Client(node=node, config=self.config,
                                               timeout=timeout, retries=0, cert=self.cert)
        probe.timeout = timeout
        return probe

    def states(self, keys: list[str], timeout: float) -> dict[str, States | None]:
        out: dict[str, States | None] = {}
        for node in sorted(self.config.nodes):
            try:
                out[str(node)] = read_states(self._probe(node, timeout), keys[:MAX_KEYS])
            except ZCounterError:
                out[str(node)] = None
        return out

    def write(self, request: dict[str, Any]) -> dict[str, Any]:
        client = self._probe(int(request["node"]), float(request.get("timeout", 2.0)))
        client.seen.clear()  # no session: the node's own view decides
        key, wait = str(request["key"]), request.get("wait", "local")
        amount = int(request.get("amount", 0))
        try:
            if request.get("reset"):
                count = client.reset(key, wait=wait)
            elif amount < 0:
                count = client.decrement(-amount, key=key, wait=wait)
            else:
                count = client.increment(amount, key=key, wait=wait)
        except ZCounterError as exc:
            return {"error": type(exc).__name__, "message": str(exc)}
        return {"count": count}

    def status(self, node: int) -> dict[str, Any]:
        try:
            return {"status": self._probe(node, 1.0).status(node)}
        except ZCounterError as exc:
            return {"error": type(exc).__name__, "message": str(exc)}

    def close(self) -> None:
        self.shared.stop.set()
        if self.ratelimit is not None:
            self.ratelimit.stop.set()
        for probe in self.probes.values():
            probe.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--cert")
    args = parser.parse_args()
    agent = Agent(args.config, args.cert)
    out = sys.stdout
    print(json.dumps({"ready": True}), file=out, flush=True)
    try:
        for line in sys.stdin:
            request = json.loads(line)
            op = request.get("op")
            if op == "start":
                reply: dict[str, Any] = agent.start(request)
            elif op == "stop":
                reply = agent.stop()
            elif op == "states":
                reply = {"states": agent.states([str(k) for k in request.get("keys", [])],
                                                float(request.get("timeout", 0.5)))}
            elif op == "write":
                reply = agent.write(request)
            elif op == "rl_start":
                if agent.ratelimit is None:
                    agent.ratelimit = RateLimit(agent.config, agent.cert, request)
                reply = {"started": True}
            elif op == "rl_since" and agent.ratelimit is not None:
                reply = agent.ratelimit.since(float(request["since"]), request.get("nodes"))
            elif op == "rl_stop" and agent.ratelimit is not None:
                reply = agent.ratelimit.finish()
                agent.ratelimit = None
            elif op == "status":
                reply = agent.status(int(request["node"]))
            elif op == "quit":
                break
            else:
                reply = {"error": f"unknown op {op!r}"}
            reply["seq"] = request.get("seq")
            print(json.dumps(reply), file=out, flush=True)
    finally:
        agent.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
