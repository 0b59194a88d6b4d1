"""Port helper: one cluster file must never name a port twice (CI failed once when
``bind(0)`` handed back a port it had just freed: nodes.3.pub equal to nodes.2.pub)."""

from __future__ import annotations

import socket

from zcounter.procs import _ephemeral_range, free_port, free_ports


def test_free_ports_are_distinct_across_calls_and_bindable() -> None:
    ports = free_ports(200) + [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    for port in ports[:20]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_free_ports_lie_below_the_ephemeral_range() -> None:
    lo, _hi = _ephemeral_range()
    if lo < 2024 + 1000:
        return  # no room below it on this machine: the OS chooses, inside the range
    assert all(max(1024, lo - 12_000) <= p < lo for p in free_ports(50))
