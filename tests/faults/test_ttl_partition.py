"""Expiry and collection across a real partition (issue 21; network namespaces, root).

A rate-limit load runs through real clients (agent.py's ``RateLimit``: per node, keys of
5 increments with a 2 s ttl on the first, and between them increments of a few keys
with a one-hour ttl whose applied amounts the agent counts).  After ``WARM_S`` node 3 is
cut from nodes 1 and 2 for ``ZCOUNTER_FAULT_CUT_S`` seconds (default 60; clients still
reach every node), then healed, and the load goes on for ``AFTER_S``.  Checked:

* reads honour every deadline on every node: sampled ``rl:`` keys read 0 (as never
  written) on every node 50 ms after first acknowledgement + ttl, during the cut too
  (node 3 judges the keys it got before the cut by its own clock);
* collection waits while the node is cut: nodes 1 and 2 name node 3 in
  ``status.collection.waiting_for`` (and node 3 names them), and they hold more keys
  than their side's live ones plus its last 5 s of dead ones - the state is kept (seen
  once the cut lasts more than ttl + 5 s);
* it catches up within ``CATCH_UP_S`` (10 s) of the heal: no node waits longer than
  ``SLACK_S`` for any peer (the status's ``waiting_for`` since, and ``lag_s``) and none
  holds a key whose deadline passed more than ``SLACK_S`` (5 s, the issue's target)
  ago - at most the long keys plus the ``rl:`` keys first acknowledged since
  ``now - ttl - SLACK_S``;
* the live keys' counts are exact at the end: every long key reads, on every node,
  exactly the amounts the clients were told were applied.

Time: WARM_S + cut + catch-up (<= 10 s) + AFTER_S + convergence: about 85 s with the
default 60 s cut, about 35 s with ``ZCOUNTER_FAULT_CUT_S=10``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from .netns import NetCluster, unavailable_reason

pytestmark = pytest.mark.netns

CUT_S = float(os.environ.get("ZCOUNTER_FAULT_CUT_S", "60"))
WARM_S = 5.0
AFTER_S = 5.0
TTL_S = 2.0
#: The issue's target: an expired key's state gone from every node within 5 s.
SLACK_S = 5.0
CATCH_UP_S = 10.0
LONG_KEYS = 10
POLL_S = 0.25


@pytest.fixture(scope="module")
def netns_usable() -> None:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)


def _statuses(c: NetCluster) -> dict[int, dict[str, Any] | None]:
    out: dict[int, dict[str, Any] | None] = {}
    for n in c.ids:
        reply = c.client().call("status", node=n)
        out[n] = reply.get("status")
    return out


def _waiting_for(status: dict[str, Any] | None) -> set[int]:
    collection = (status or {}).get("collection") or {}
    return {int(k) for k in collection.get("waiting_for") or {}}


def _bound(c: NetCluster, now: float, writers: list[int] | None = None) -> int:
    """Keys a node may hold at wall time ``now`` if nothing dead waits longer than
    SLACK_S: the long keys and the rl: keys first acknowledged since now - ttl - slack
    (written at ``writers``: the nodes whose keys reach it; default every node)."""
    since = c.client().call("rl_since", since=now - TTL_S - SLACK_S, nodes=writers)
    return int(since["rl"]) + int(since["long"])


#: While node 3 is cut: whose new keys reach each node.
SIDES = {1: [1, 2], 2: [1, 2], 3: [3]}


def _during_cut(c: NetCluster, until: float) -> dict[str, Any]:
    """Poll every node's status while node 3 is cut: who waits for whom, how much is held."""
    seen: dict[int, set[int]] = {n: set() for n in c.ids}
    over_bound = {n: 0 for n in c.ids}
    while time.monotonic() < until:
        statuses = _statuses(c)
        now = time.time()
        for n, st in statuses.items():
            seen[n] |= _waiting_for(st)
            # More than its side could hold if collection went on: dead state is kept.
            if st is not None and st.get("keys", 0) > _bound(c, now, SIDES[n]):
                over_bound[n] += 1
        time.sleep(min(1.0, max(0.0, until - time.monotonic())))
    return {"waiting_for": seen, "polls_over_bound": over_bound}


def _caught_up(status: dict[str, Any], now: float) -> bool:
    """No dead key waits longer than SLACK_S, for any peer: under a steady load some key
    always waits for the next round (``waiting_for`` is rarely empty), but the oldest
    one waiting for each peer died recently."""
    collection = status.get("collection") or {}
    waits = (collection.get("waiting_for") or {}).values()
    return all(now - float(since) <= SLACK_S for since in waits) and float(
        collection.get("lag_s", 0.0)) <= SLACK_S


def _catch_up(c: NetCluster, t_heal: float) -> tuple[float | None, dict[int, Any]]:
    """Seconds from the heal until no node has waited longer than SLACK_S for any peer
    and every one holds at most the bound; None if not within CATCH_UP_S + 5 (the
    assertion then shows the last poll)."""
    last: dict[int, Any] = {}
    while time.monotonic() < t_heal + CATCH_UP_S + 5:
        statuses = _statuses(c)
        bound = _bound(c, time.time())
        last = {n: (None if st is None else (st.get("keys"), sorted(_waiting_for(st))), bound)
                for n, st in statuses.items()}
        if all(st is not None and _caught_up(st, time.time()) and st.get("keys", 0) <= bound
               for st in statuses.values()):
            return time.monotonic() - t_heal, last
        time.sleep(POLL_S)
    return None, last


def test_a_cut_node_delays_collection_not_expiry_and_counts_stay_exact(
        tmp_path: Path, netns_usable: None) -> None:
    with NetCluster(tmp_path / "cluster") as c:
        c.start_all()
        agent = c.client()
        agent.call("rl_start", nodes=c.ids, ttl=TTL_S, long_ttl=3600.0, per_key=5,
                   long_keys=LONG_KEYS, probe_every=5, max_s=WARM_S + CUT_S + 60, seed=21)
        time.sleep(WARM_S)
        c.partition([3], [1, 2])
        t_cut = time.time()
        cut = _during_cut(c, time.monotonic() + CUT_S)
        c.heal()
        t_heal = time.monotonic()
        caught_up_s, last = _catch_up(c, t_heal)
        time.sleep(max(0.0, AFTER_S - (time.monotonic() - t_heal)))
        load = agent.call("rl_stop", rpc_timeout=60.0)

        assert load["stuck_threads"] == 0
        assert len(load["keys"]) > 100, f"the load made too few keys: {load['errors'][:5]}"
        # Collection waited, on both sides, and kept the state meanwhile.
        assert {3} <= cut["waiting_for"][1] and {3} <= cut["waiting_for"][2], cut
        assert {1, 2} <= cut["waiting_for"][3], cut
        if CUT_S > TTL_S + SLACK_S + 2:  # else no dead key can be older than the slack
            assert cut["polls_over_bound"][1] > 0 and cut["polls_over_bound"][3] > 0, cut
        # ... and caught up within 10 s of the heal.
        assert caught_up_s is not None and caught_up_s <= CATCH_UP_S, (
            f"not caught up {CATCH_UP_S} s after the heal: (keys, waiting for), bound: {last}")
        # Every deadline honoured on every node, also on node 3 while it was cut.
        probes = load["probes"]
        wrong = [p for p in probes if isinstance(p[3], int) and p[3] != 0]
        assert not wrong, f"{len(wrong)} of {len(probes)} reads past a deadline: {wrong[:5]}"
        # A read that got no answer (a node busy right after the heal) judges nothing.
        unanswered = [p for p in probes if not isinstance(p[3], int)]
        assert len(unanswered) <= len(probes) // 100, unanswered[:5]
        during = [p for p in probes if p[1] == 3 and t_cut + TTL_S < p[2] < t_cut + CUT_S]
        assert during, "no deadline was probed on node 3 during the cut"
        # The live keys' counts are exact, on every node.
        expected = {k: v[0] for k, v in load["long"].items() if not v[1]}
        assert len(expected) >= len(load["long"]) - 1, load["long"]
        counts, _ = c.wait_converged(sorted(expected), timeout=30.0)
        assert counts == expected
        print(f"\ncut {CUT_S:.0f} s: caught up {caught_up_s:.2f} s after the heal; "
              f"{len(load['keys'])} rl keys, {len(probes)} deadline probes, "
              f"{len(expected)} long keys exact")
