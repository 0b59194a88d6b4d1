"""The commands as a user runs them: help, output, exit codes, one-line errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness import LocalCluster, free_port, wait_for, write_config

pytestmark = pytest.mark.integration


def zc(*args: str, env: dict[str, str] | None = None,
       timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zcounter.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("command", [["node"], ["client"], ["cluster"], ["client", "increment"],
                                     ["client", "getCount"], ["client", "status"]])
def test_every_command_has_help(command):
    result = zc(*command, "--help")
    assert result.returncode == 0 and "Usage:" in result.stdout


def test_client_commands_against_a_cluster(cluster: LocalCluster):
    cfg = str(cluster.config_path)
    assert zc("client", "--config", cfg, "--node", "1", "increment").stdout == "1\n"
    assert zc("client", "--config", cfg, "--node", "2", "increment", "--by", "4").stdout == "5\n"
    cluster.wait_converged(5)
    got = zc("client", "--config", cfg, "getCount")
    assert got.returncode == 0 and got.stdout == "5\n"
    # The seed's form, with the cluster file from the environment.
    seed = zc("client", "--nodeId", "3", "--action=getCount", env={"ZCOUNTER_CONFIG": cfg})
    assert seed.stdout == "5\n"
    seed_inc = zc("client", "--nodeId", "3", "--action=increment", env={"ZCOUNTER_CONFIG": cfg})
    assert seed_inc.returncode == 0 and seed_inc.stdout == "6\n"
    status = zc("client", "--config", cfg, "status")
    assert status.returncode == 0
    lines = status.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["node 1", "node 2", "node 3"]
    assert "count 6" in lines[2] and "heard" in lines[0]


def test_usage_errors_exit_2(cluster: LocalCluster):
    cfg = str(cluster.config_path)
    for args in (["increment", "--by", "0"], ["increment", "--by", "x"],
                 ["increment", "--wait", "some"], ["frobnicate"]):
        result = zc("client", "--config", cfg, *args)
        assert result.returncode == 2, (args, result.stderr)
    unknown = zc("client", "--config", cfg, "--node", "9", "getCount")
    assert unknown.returncode == 2 and "unknown node id 9" in unknown.stderr


def test_unreachable_node_exits_1_with_one_line_naming_it(tmp_path: Path):
    cfg = write_config(tmp_path / "c.toml", {1: ("127.0.0.1", free_port(), free_port())})
    started = time.monotonic()
    result = zc("client", "--config", str(cfg), "--node", "1", "--timeout", "0.5", "increment")
    assert time.monotonic() - started < 10
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "node 1" in result.stderr
    assert "may or may not have been applied" in result.stderr


def test_bad_config_stops_the_node_with_one_line_naming_file_and_field(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[nodes.1]\nrouter = "tcp://127.0.0.1:notaport"\npub = "tcp://127.0.0.1:1"\n')
    result = zc("node", "--id", "1", "--config", str(bad), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2
    assert str(bad) in result.stderr and "nodes.1.router" in result.stderr
    assert result.stderr.count("\n") == 1
    missing = zc("node", "--id", "1", "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    cfg = write_config(tmp_path / "ok.toml", {1: ("127.0.0.1", free_port(), free_port())})
    unknown = zc("node", "--id", "4", "--config", str(cfg))
    assert unknown.returncode == 2 and "unknown node id 4" in unknown.stderr


def test_port_in_use_is_a_one_line_error(cluster: LocalCluster, tmp_path: Path):
    result = zc("node", "--id", "1", "--config", str(cluster.config_path),
                "--data-dir", str(tmp_path / "other"))
    assert result.returncode == 2
    assert "nodes.1.router" in result.stderr and "in use" in result.stderr


def test_data_dir_of_another_node_is_refused(cluster: LocalCluster):
    result = zc("node", "--id", "2", "--config", str(cluster.config_path),
                "--data-dir", str(cluster.data_dir(1)))
    assert result.returncode == 2 and "belongs to node 1" in result.stderr


def test_sigterm_and_sigint_stop_a_node_cleanly(cluster: LocalCluster):
    for node, sig in ((1, signal.SIGTERM), (2, signal.SIGINT)):
        proc = cluster.procs[node]
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
        assert "stopping" in cluster.log_path(node).read_text()


def test_cluster_command_starts_all_nodes_and_ctrl_c_stops_them(tmp_path: Path):
    nodes = {i: ("127.0.0.1", free_port(), free_port()) for i in (1, 2, 3)}
    cfg = write_config(tmp_path / "c.toml", nodes)
    proc = subprocess.Popen(
        [sys.executable, "-m", "zcounter.cli", "cluster", "--config", str(cfg),
         "--data-home", str(tmp_path / "data")],
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        def answers() -> bool:
            r = zc("client", "--config", str(cfg), "--node", "3", "--timeout", "0.5",
                   "increment")
            return r.returncode == 0
        wait_for(answers, 20, interval=0.2, what="bin/cluster nodes to answer")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    for node in (1, 2, 3):
        assert f"[node {node}]" in err
    assert "all nodes stopped" in err
