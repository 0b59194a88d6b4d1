"""The client side of the fault tests: a process that runs *inside* the client network
namespace and drives real :class:`zcounter.Client` sessions for the test process.

The test (in the root namespace) cannot open sockets to the nodes itself - their
addresses exist only inside the namespaces it built - so it starts this script with
``ip netns exec <client ns> python agent.py --config FILE`` and talks to it over
stdin/stdout, one JSON object per line:

* ``{"op": "start", ...plan}``: start writer threads (one session per target node) and
  reader threads (one per node); returns at once.
* ``{"op": "stop"}``: stop the load, wait for in-flight calls, return the history.
* ``{"op": "counts", "timeout": s}``: every node's local count (``null`` if no answer).
* ``{"op": "quit"}``.

Every load loop is bounded both in operations and in seconds, so a test that forgets
to stop it still ends.  Times are ``time.monotonic()``, which is system-wide, so the
test can line them up with the moments it injected faults.

Standalone on purpose (imports only zcounter): it is run by path, not as a module.
"""

from __future__ import annotations

import argparse
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


@dataclass
class Shared:
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    #: Sum of ``by`` over every increment whose first send has started: nothing a node
    #: reports may ever exceed it.
    attempted: int = 0
    #: [node, by, outcome, t_start, t_end, wait, detail]; outcome is ok | fail | unknown
    #: | indet (indet = Indeterminate: applied at the node, wait level not confirmed).
    ops: list[list[Any]] = field(default_factory=list)
    #: [node, value, t, attempted_when_answered(, slots if the plan asks for them)]
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


def writer(shared: Shared, config: Any, node: int, waits: list[str], by_max: int,
           timeout: float, pause_s: float, max_ops: int, until: float, seed: int) -> None:
    rng = random.Random(seed)
    with Client(node=node, config=config, timeout=timeout, retries=2) as client:
        for i in range(min(max_ops, MAX_OPS_PER_WRITER)):
            if shared.stop.is_set() or time.monotonic() >= until:
                break
            by = rng.randint(1, by_max)
            wait = waits[i % len(waits)]
            with shared.lock:
                shared.attempted += by
            t0 = time.monotonic()
            detail = ""
            try:
                client.increment(by, wait=wait)  # type: ignore[arg-type]
                outcome = "ok"
            except ZCounterError as exc:
                outcome = classify(exc)
                detail = f"{type(exc).__name__}: {exc}"[:200]
            with shared.lock:
                shared.ops.append([node, by, outcome, t0, time.monotonic(), wait, detail])
            if pause_s:
                time.sleep(pause_s)


def reader(shared: Shared, config: Any, node: int, interval: float, timeout: float,
           until: float, with_slots: bool) -> None:
    with Client(node=node, config=config, timeout=timeout, retries=0) as client:
        while not shared.stop.is_set() and time.monotonic() < until:
            # Forget the session: we want the node's own value, not a session guard that
            # would refuse a node that went backwards (which is what we are checking).
            client.seen.clear()
            try:
                value = client.get_count()
            except ZCounterError as exc:
                with shared.lock:
                    shared.read_errors.append([node, type(exc).__name__, time.monotonic()])
            else:
                t = time.monotonic()
                # seen was empty, so it now holds exactly the slots of this reply.
                slots = dict(client.seen) if with_slots else None
                with shared.lock:
                    shared.reads.append([node, value, t, shared.attempted]
                                        + ([slots] if with_slots else []))
            shared.stop.wait(interval)


class Agent:
    def __init__(self, config_path: str) -> None:
        self.config = load_config(config_path)
        self.shared = Shared()
        self.threads: list[threading.Thread] = []
        self.probes: dict[int, Client] = {}
        self.plan: dict[str, Any] = {}

    def start(self, plan: dict[str, Any]) -> dict[str, Any]:
        if self.threads:
            return {"error": "load already running"}
        self.shared = Shared()
        self.plan = plan
        until = time.monotonic() + min(float(plan.get("max_s", 30.0)), MAX_LOAD_S)
        timeout = float(plan.get("timeout", 1.0))
        for index, w in enumerate(plan.get("writers", [])):
            self.threads.append(threading.Thread(target=writer, daemon=True, args=(
                self.shared, self.config, int(w["node"]), list(w.get("waits", ["local"])),
                int(w.get("by_max", 5)), timeout, float(plan.get("pause_s", 0.002)),
                int(plan.get("max_ops", 5000)), until, int(plan.get("seed", 0)) + index)))
        for node in plan.get("readers", []):
            self.threads.append(threading.Thread(target=reader, daemon=True, args=(
                self.shared, self.config, int(node), float(plan.get("read_interval", 0.05)),
                float(plan.get("read_timeout", 0.5)), until, bool(plan.get("read_slots")))))
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
                    "read_errors": self.shared.read_errors,
                    "attempted": self.shared.attempted, "stuck_threads": alive}

    def counts(self, timeout: float) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        for node in sorted(self.config.nodes):
            probe = self.probes.get(node)
            if probe is None:
                probe = self.probes[node] = Client(node=node, config=self.config,
                                                   timeout=timeout, retries=0)
            probe.timeout = timeout
            probe.seen.clear()
            try:
                out[str(node)] = probe.get_count()
            except ZCounterError:
                out[str(node)] = None
        return out

    def close(self) -> None:
        self.shared.stop.set()
        for probe in self.probes.values():
            probe.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    agent = Agent(args.config)
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
            elif op == "counts":
                reply = {"counts": agent.counts(float(request.get("timeout", 0.5)))}
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
