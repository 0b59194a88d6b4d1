"""``bin/bench --secure`` end to end on two small real clusters (a few seconds, bounded):
both modes measured, the curve cluster reached through CURVE client sockets."""

from __future__ import annotations

from pathlib import Path

import pytest

from zcounter.bench.keys import KeySpec
from zcounter.bench.progress import Progress
from zcounter.bench.secure import render_secure, run_secure

pytestmark = pytest.mark.integration


def test_the_secure_section_measures_both_modes(tmp_path: Path) -> None:
    res = run_secure(tmp_path, ops=400, seconds=5.0, latency_seconds=0.5, rounds=1,
                     keys=KeySpec(1, "uniform", 1), poll_interval_s=0.0005,
                     progress=Progress(enabled=False), rates=(200,))
    summary = res["summary"]
    assert set(summary) == {"w1", "w16", "w256", "r200"}
    for mode in ("none", "curve"):
        for w in ("w1", "w16", "w256"):
            runs = res["runs"][mode][w]
            assert len(runs) == 1 and runs[0]["errors"] == 0 and not runs[0]["stalled"]
            assert runs[0]["acked"] == (400 if w != "w1" else 100)
            # /proc/PID/stat counts CPU in 10 ms ticks, and 400 increments at window 256
            # cost node 1 about 10 ms since commits run inline (58 us / 25 us each at w16 /
            # w256): one window may read 0 ticks. So each window only gives an ordered,
            # non-negative figure; w1 (100 increments, ~50 ms of node CPU) must see some.
            assert summary[w][mode]["cpu_us_all"] >= summary[w][mode]["cpu_us_node1"] >= 0
        assert summary["w1"][mode]["cpu_us_node1"] > 0
        assert summary["r200"][mode]["acked"] == 100
        assert summary["r200"][mode]["unseen"] == 0
    assert summary["w256"]["ratio"] == (summary["w256"]["curve"]["ops_per_s"]
                                       / summary["w256"]["none"]["ops_per_s"])
    text = render_secure(res)
    assert "throughput, window 256" in text and "convergence at 200/s, p99" in text
    # The curve cluster really was in curve mode.
    log = (tmp_path / "curve" / "node-1.log").read_text()
    assert "security curve" in log
