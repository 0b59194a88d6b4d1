"""The node's loop reduced to a RESP door and a core (no storage: answers are sent as soon
as the batch ends), for the door's tests over real sockets in one process
(tests/runtime/test_resp_door.py, tests/runtime/test_resp_tls.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import zmq
from corelink import core

from zcounter.config import ClusterConfig
from zcounter.protocol.outputs import ToClient
from zcounter.protocol.resp import RespClient
from zcounter.runtime.resp import RespDoor, make_door

T = TypeVar("T")


class DoorLoop:
    def __init__(self, cfg: ClusterConfig, stall_s: float | None = None,
                 handshake_s: float | None = None) -> None:
        made = make_door(cfg, 1, "0")
        assert made is not None
        self.door: RespDoor = made
        if stall_s is not None:
            self.door.stall_timeout_s = stall_s
        if handshake_s is not None:
            self.door.handshake_timeout_s = handshake_s
        self.core = core(1, n=1)
        self.poller = zmq.Poller()
        self.door.register(self.poller)
        self.port = self.door.door.tcp_port
        #: Cycles run, and those in which the door said it was busy (must not sleep).
        self.cycles = self.busy_cycles = 0

    def cycle(self, timeout_ms: int = 20) -> None:
        now = time.monotonic()
        self.cycles += 1
        self.busy_cycles += self.door.busy
        self.door.start_cycle()
        for fd, events in self.poller.poll(0 if self.door.busy else timeout_ms):
            self.door.on_event(fd, events, self.core, now)
        self.door.pump(self.core, now)
        for m in self.core.take_outputs().messages:
            if isinstance(m, ToClient) and isinstance(m.client, RespClient):
                self.door.deliver(m.client, m.reply, now)  # type: ignore[arg-type]

    def until(self, done: Callable[[], object], what: str, limit_s: float = 10.0) -> None:
        deadline = time.monotonic() + limit_s
        while not done():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            self.cycle()

    def beside(self, work: Callable[[], T]) -> T:
        """Run a blocking client in a thread while this thread runs the loop."""
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(work)
            self.until(future.done, "the client")
            return future.result()

    def close(self) -> None:
        self.door.close()
