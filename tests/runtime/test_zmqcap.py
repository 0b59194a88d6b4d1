"""The cap on connections libzmq accepts (zcounter.runtime.zmqcap), on a real ROUTER in
this process: connections past the cap are shut down (their clients read end-of-file),
counted, and a slot freed by a leaving client is taken again."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import zmq

from zcounter.runtime.fdbudget import Rejection
from zcounter.runtime.zmqcap import AcceptCap

DEADLINE_S = 10.0


@pytest.fixture
def router() -> Iterator[zmq.Socket[bytes]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind("tcp://127.0.0.1:0")
    yield sock
    sock.close(linger=0)
    ctx.term()


def port_of(sock: zmq.Socket[bytes]) -> int:
    return int(sock.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])


def pump(cap: AcceptCap, until: object) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not until():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        if cap.monitor.poll(50):
            cap.on_event(time.monotonic())


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed: everything it sent read, then end-of-file."""
    sock.settimeout(0.05)
    try:
        while data := sock.recv(4096):
            del data
        return True
    except (TimeoutError, BlockingIOError):
        return False
    except OSError:
        return True


def test_connections_past_the_cap_are_shut_down_and_counted(router: zmq.Socket[bytes]) -> None:
    cap = AcceptCap(router, "native", 5)
    try:
        clients = [socket.create_connection(("127.0.0.1", port_of(router)), 5)
                   for _ in range(20)]
        pump(cap, lambda: cap.rejected.get(Rejection.MAX_CLIENTS, 0) == 15)
        assert len(cap.live) == 5
        deadline = time.monotonic() + DEADLINE_S
        gone: set[int] = set()
        while len(gone) < 15 and time.monotonic() < deadline:
            gone |= {i for i, c in enumerate(clients) if i not in gone and closed_by_server(c)}
        assert len(gone) == 15
        # A client that leaves frees its slot: the next connection is kept.
        for i, client in enumerate(clients):
            if i not in gone:
                client.close()
                break
        pump(cap, lambda: len(cap.live) == 4)
        late = socket.create_connection(("127.0.0.1", port_of(router)), 5)
        pump(cap, lambda: len(cap.live) == 5)
        assert cap.rejected[Rejection.MAX_CLIENTS] == 15
        assert cap.stats()["clients"] == 5
        for client in [*clients, late]:
            client.close()
    finally:
        cap.close()


def test_a_lost_disconnect_event_does_not_keep_a_slot_taken(router: zmq.Socket[bytes]) -> None:
    """Descriptors the cap holds that are no longer connections on its port (as if an
    EVENT_DISCONNECTED had been lost) are forgotten before it sheds."""
    cap = AcceptCap(router, "native", 2)
    try:
        r, w = socket.socketpair()  # a socket, but not on the router's port
        cap.live |= {r.fileno(), 1_000_000}  # and a descriptor that is not open
        client = socket.create_connection(("127.0.0.1", port_of(router)), 5)
        pump(cap, lambda: len(cap.live) == 1)
        assert not cap.rejected
        client.close()
        r.close()
        w.close()
    finally:
        cap.close()
