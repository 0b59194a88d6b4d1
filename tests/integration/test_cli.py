"""The commands as a user runs them: help, output, exit codes, one-line errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from harness import FakeRouter, LocalCluster, free_port, wait_for, write_config

from zcounter import __version__

pytestmark = pytest.mark.integration


def zc(*args: str, env: dict[str, str] | None = None,
       timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zcounter.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("command", [
    ["node"], ["client"], ["cluster"], ["client", "increment"], ["client", "decrement"],
    ["client", "getCount"], ["client", "reset"], ["client", "keys"], ["client", "status"],
    ["client", "expire"], ["client", "ttl"], ["client", "persist"]])
def test_every_command_has_help(command):
    result = zc(*command, "--help")
    assert result.returncode == 0 and "Usage:" in result.stdout


def test_version():
    for command in ([], ["client"], ["node"], ["cluster"]):
        result = zc(*command, "--version")
        assert result.returncode == 0 and result.stdout.strip().endswith(__version__)


@pytest.mark.parametrize("module, prog", [
    ("zcounter.sim", "zcounter-sim"), ("zcounter.fuzz", "zcounter-fuzz"),
    ("zcounter.bench", "zcounter-bench"), ("tests.faults.report", "zcounter-fault-report"),
    ("tests.faults.demo", "zcounter-partition-demo")])
def test_every_other_command_shows_the_one_version(module, prog):
    """bin/sim, bin/fuzz, bin/bench, bin/fault-report and bin/partition-demo run these
    modules; each says its name and zcounter's one version, in one format."""
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True,
                            text=True, timeout=60, cwd=root,
                            env={**os.environ, "PYTHONPATH": str(root)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{prog} {__version__}"


def test_client_commands_against_a_cluster(cluster: LocalCluster):
    cfg = str(cluster.config_path)
    assert zc("client", "--config", cfg, "--node", "1", "increment").stdout == "1\n"
    assert zc("client", "--config", cfg, "--node", "2", "increment", "--by", "4").stdout == "5\n"
    cluster.wait_converged(5)
    got = zc("client", "--config", cfg, "getCount")
    assert got.returncode == 0 and got.stdout == "5\n"
    # The seed's form, with the cluster file from the environment: key "default".
    seed = zc("client", "--nodeId", "3", "--action=getCount", env={"ZCOUNTER_CONFIG": cfg})
    assert seed.stdout == "5\n"
    seed_inc = zc("client", "--nodeId", "3", "--action=increment", env={"ZCOUNTER_CONFIG": cfg})
    assert seed_inc.returncode == 0 and seed_inc.stdout == "6\n"
    # ... and through the installed script that bin/client runs.
    script = Path(sys.executable).parent / "zcounter-client"
    assert script.exists(), f"{script}: the package's console script is not installed"
    via_script = subprocess.run([str(script), "--nodeId", "2", "--action=increment"],
                                capture_output=True, text=True, timeout=30,
                                env={**os.environ, "ZCOUNTER_CONFIG": cfg})
    assert (via_script.returncode, via_script.stdout) == (0, "7\n"), via_script.stderr
    cluster.wait_converged(7)
    assert cluster.listing(3) == {"default": 7}
    status = zc("client", "--config", cfg, "status")
    assert status.returncode == 0, status.stderr
    lines = status.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["node 1", "node 2", "node 3"]
    assert "1 keys (1 live)" in lines[2] and "live" in lines[0]
    as_json = zc("client", "--config", cfg, "--node", "2", "status", "--json")
    view = orjson.loads(as_json.stdout)["2"]
    assert view["node"] == 2 and view["keys"] == 1 and set(view["peers"]) == {"1", "3"}


def test_keys_decrement_and_reset_commands(cluster: LocalCluster):
    cfg = str(cluster.config_path)

    def client(*args: str) -> subprocess.CompletedProcess[str]:
        return zc("client", "--config", cfg, *args)
    assert client("--node", "1", "increment", "--key", "a", "--by", "10").stdout == "10\n"
    assert client("--node", "2", "decrement", "--key", "b", "--by", "3").stdout == "-3\n"
    assert client("--node", "3", "decrement", "--key", "\u00e9t\u00e9").stdout == "-1\n"
    cluster.wait_keys_converged({"a": 10, "b": -3, "\u00e9t\u00e9": -1})
    assert client("--node", "1", "decrement", "--key", "a", "--by", "4",
                  "--wait", "all").stdout == "6\n"
    # Several keys: KEY<TAB>COUNT lines, in the order given.
    many = client("--node", "2", "getCount", "--key", "b", "--key", "nope", "--key", "a",
                  "--read", "majority")
    assert many.returncode == 0 and many.stdout == "b\t-3\nnope\t0\na\t6\n", many.stderr
    one = client("--node", "2", "getCount", "--key", "b")
    assert one.stdout == "-3\n"
    assert client("--node", "3", "reset", "--key", "a", "--wait", "majority").stdout == "0\n"
    assert client("--node", "3", "reset").stdout == "0\n"  # key "default", never written
    cluster.wait_keys_converged({"a": 0, "b": -3, "\u00e9t\u00e9": -1})
    listed = client("--node", "1", "keys")
    assert listed.returncode == 0 and listed.stdout == "b\t-3\n\u00e9t\u00e9\t-1\n"
    assert client("--node", "1", "keys", "--prefix", "\u00e9").stdout == "\u00e9t\u00e9\t-1\n"
    assert client("--node", "1", "keys", "--limit", "1").stdout == "b\t-3\n"
    assert client("--node", "1", "keys", "--prefix", "zz").stdout == ""
    # The same request id counts once, also for a decrement and a reset.
    for _ in range(2):
        again = client("--node", "1", "decrement", "--key", "b", "--request-id", "d-1")
        assert again.stdout == "-4\n"
    assert client("--node", "1", "increment", "--key", "b", "--by", "9").stdout == "5\n"
    for expected in ("0\n", "0\n"):
        assert client("--node", "1", "reset", "--key", "b", "--request-id", "r-1").stdout == \
            expected
    assert client("--node", "1", "increment", "--key", "b").stdout == "1\n"
    # A retry of the reset after later updates is a duplicate: it does not reset again.
    assert client("--node", "1", "reset", "--key", "b", "--request-id", "r-1").stdout == "1\n"


def test_get_count_of_several_keys_is_one_request(tmp_path: Path):
    """Against a stand-in node that records what it receives: one ``get`` naming every
    key, in order (duplicates once), and the lines printed in the order given."""
    def answer(request: Any) -> bytes:
        keys = request.get("keys", [request.get("key", "default")])
        counts = [len(k) for k in keys]
        return orjson.dumps({"id": request["id"], "node": 1, "ok": True, "count": counts[0],
                             "counts": counts})

    with FakeRouter(answer) as node:
        port = int(node.endpoint.rsplit(":", 1)[1])
        cfg = write_config(tmp_path / "c.toml", {1: ("127.0.0.1", port, free_port())})
        out = zc("client", "--config", str(cfg), "--node", "1", "getCount", "--key", "ccc",
                 "--key", "a", "--key", "ccc", "--key", "bb")
        assert out.returncode == 0, out.stderr
        assert out.stdout == "ccc\t3\na\t1\nccc\t3\nbb\t2\n"
        assert [r["op"] for r in node.received] == ["get"]
        assert node.received[0]["keys"] == ["ccc", "a", "bb"]
        # With no --key: one request for "default", a bare integer.
        node.received.clear()
        bare = zc("client", "--config", str(cfg), "--node", "1", "getCount")
        assert bare.stdout == "7\n" and [r["keys"] for r in node.received] == [["default"]]


def test_usage_errors_exit_2(cluster: LocalCluster):
    cfg = str(cluster.config_path)
    for args in (["increment", "--by", "0"], ["increment", "--by", "x"],
                 ["increment", "--by", "4294967297"], ["decrement", "--by", "-1"],
                 ["increment", "--wait", "some"], ["getCount", "--read", "most"],
                 ["increment", "--key", ""], ["decrement", "--key", "k" * 257],
                 ["reset", "--key", ""], ["getCount", "--key", "a", "--key", ""],
                 ["keys", "--limit", "-1"], ["frobnicate"]):
        result = zc("client", "--config", cfg, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stdout == ""
    # A malformed request id is a usage error like a bad key (exit 2), naming the option.
    bad_rid = zc("client", "--config", cfg, "increment", "--request-id", "not ok")
    assert bad_rid.returncode == 2 and "--request-id" in bad_rid.stderr
    assert "request id" in bad_rid.stderr
    unknown = zc("client", "--config", cfg, "--node", "9", "getCount")
    assert unknown.returncode == 2 and "unknown node id 9" in unknown.stderr
    assert cluster.listing(1) == {}, "a refused command changed nothing"


def test_unreachable_node_exits_1_with_one_line_naming_it(tmp_path: Path):
    cfg = write_config(tmp_path / "c.toml", {1: ("127.0.0.1", free_port(), free_port())})
    for command in (["increment"], ["decrement", "--key", "k"], ["reset"]):
        started = time.monotonic()
        result = zc("client", "--config", str(cfg), "--node", "1", "--timeout", "0.5",
                    *command)
        assert time.monotonic() - started < 10
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1 and "node 1" in result.stderr
        assert "may or may not have been applied" in result.stderr
    for command in (["getCount"], ["getCount", "--key", "a", "--key", "b"], ["keys"]):
        result = zc("client", "--config", str(cfg), "--node", "1", "--timeout", "0.5",
                    *command)
        assert result.returncode == 1, (command, result)
        assert result.stderr.count("\n") == 1 and "node 1" in result.stderr
    status = zc("client", "--config", str(cfg), "--timeout", "0.5", "status")
    assert status.returncode == 1 and status.stdout.startswith("node 1: unavailable")


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
                   "increment", "--key", "via-cluster")
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
    # none mode: it says first what that trusts, and where to go instead (issue 19).
    assert err.startswith("[cluster] security mode none: every process on this machine")
    assert "bin/cluster --secure" in err.splitlines()[0]
