"""The load generators against a real three-node cluster: a few seconds, bounded."""

from __future__ import annotations

from pathlib import Path

import pytest

from zcounter.bench.keys import KeySpec, KeyStream
from zcounter.bench.load import TEMPLATES, closed_loop, numbered, open_loop, pipelined
from zcounter.bench.servers import BenchCluster
from zcounter.bench.suite import wait_same_root

pytestmark = pytest.mark.integration


def test_load_loops_against_a_real_cluster(tmp_path: Path) -> None:
    with BenchCluster(tmp_path / "cluster") as cluster:
        ready = cluster.start_all()
        assert set(ready) == {1, 2, 3}
        fill = pipelined([(cluster.router(i), numbered(TEMPLATES["increment"], iter(range(300))))
                          for i in cluster.ids], 64, 30.0)
        assert fill["acked"] == 900 and fill["errors"] == 0
        assert wait_same_root(cluster, 15.0) is not None
        assert {cluster.status(i)["keys"] for i in cluster.ids} == {300}
        assert cluster.channel(2).counts(["k0", "k299"])["counts"] == [3, 3]

        spec = KeySpec(300, "zipf", seed=1)
        run = closed_loop(cluster.router(1), "increment", KeyStream(spec), 16, 500, 10.0)
        assert run["acked"] == 500 and run["errors"] == 0 and not run["stalled"]
        reads = closed_loop(cluster.router(1), "get", KeyStream(spec), 1, 50, 10.0)
        assert reads["acked"] == 50

        lat = open_loop(cluster.router(1), 400, 0.5, spec,
                        [cluster.router(2), cluster.router(3)], 0.0005)
        assert lat["acked"] == 200 and lat["errors"] == 0
        assert lat["convergence_unseen"] == 0
        assert lat["convergence_s"]["n"] == 200
        assert lat["latency_s"]["p50"] > 0
