"""The descriptor budget's arithmetic, the accept back-off and the throttled log
(zcounter.runtime.fdbudget), without a process; the real thing is
tests/integration/test_fd_budget.py."""

from __future__ import annotations

import logging

import pytest

from zcounter.errors import ConfigError
from zcounter.limits import (
    FD_MIN_FOR_CONNECTIONS,
    FD_RESERVE_PER_PEER,
    FD_RESERVE_SLACK,
    FD_RESERVE_STORAGE,
)
from zcounter.runtime.fdbudget import AcceptBackoff, Throttled, open_fds, plan

RESERVED_2_PEERS = FD_RESERVE_STORAGE + FD_RESERVE_SLACK + 2 * FD_RESERVE_PER_PEER


def test_the_doors_share_what_is_left_after_the_reserves() -> None:
    b = plan(1024, 24, 2, 10_000, 32)
    free = 1024 - 24 - RESERVED_2_PEERS
    assert b.reserved == RESERVED_2_PEERS
    assert b.metrics_clients == 32
    assert b.resp_clients == (free - 32) // 2
    assert b.native_room == free - 32 - b.resp_clients
    assert b.in_use + b.reserved + b.resp_clients + b.metrics_clients + b.native_room == 1024


def test_settings_below_the_share_are_kept_and_off_doors_get_nothing() -> None:
    b = plan(1_048_576, 24, 2, 10_000, 32)
    assert (b.resp_clients, b.metrics_clients) == (10_000, 32)
    off = plan(1024, 24, 2, None, None)
    assert (off.resp_clients, off.metrics_clients) == (0, 0)
    assert off.native_room == 1024 - 24 - RESERVED_2_PEERS


def test_a_limit_too_low_to_serve_anyone_refuses_to_start() -> None:
    enough = 24 + RESERVED_2_PEERS + FD_MIN_FOR_CONNECTIONS
    plan(enough, 24, 2, 10_000, 32)
    with pytest.raises(ConfigError, match="ulimit -n"):
        plan(enough - 1, 24, 2, 10_000, 32)


def test_accept_backoff_doubles_to_its_maximum_and_starts_over_after_a_success() -> None:
    b = AcceptBackoff(0.01, 1.0)
    pauses = [b.failed(100.0) for _ in range(10)]
    assert pauses[:4] == [0.01, 0.02, 0.04, 0.08] and pauses[-1] == 1.0
    assert max(pauses) == 1.0
    assert not b.due(100.5) and b.due(101.0) and not b.due(101.0)  # once
    b.succeeded()
    assert b.failed(200.0) == 0.01


def test_a_cause_is_logged_once_per_interval_with_its_count(
        caplog: pytest.LogCaptureFixture) -> None:
    noise = Throttled(logging.getLogger("t"), interval_s=10.0)
    with caplog.at_level(logging.INFO, "t"):
        written = [noise.log(logging.WARNING, "emfile", 100.0 + i * 0.001, "accept failed")
                   for i in range(10_000)]
        written.append(noise.log(logging.WARNING, "other", 101.0, "other cause"))
        written.append(noise.log(logging.WARNING, "emfile", 111.0, "accept failed"))
    assert sum(written) == 3
    assert [r.getMessage().split(" (")[1] for r in caplog.records] == [
        "1 time since the last such line; at most one line per 10s)",
        "1 time since the last such line; at most one line per 10s)",
        "10000 times since the last such line; at most one line per 10s)"]


def test_open_fds_counts_this_process_descriptors() -> None:
    import os
    before = open_fds()
    r, w = os.pipe()
    try:
        assert open_fds() == before + 2
    finally:
        os.close(r)
        os.close(w)
