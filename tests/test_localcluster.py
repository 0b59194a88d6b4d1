"""The one local-cluster launcher (zcounter/localcluster.py), without starting nodes:
the cluster file it writes and the command lines it runs."""

from __future__ import annotations

import sys
from pathlib import Path

from zcounter.config import Mode, load_config
from zcounter.localcluster import (
    LocalCluster,
    NodeProcesses,
    loopback_nodes,
    make_keys,
    node_command,
    write_cluster_file,
)


def test_the_cluster_file_reads_back_as_written(tmp_path: Path) -> None:
    nodes = loopback_nodes(2, resp=True, metrics=True)
    keys = make_keys(tmp_path / "keys", nodes)
    secret = tmp_path / 'pass "it\'s" \\ word'  # both quotes and a backslash
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    path = write_cluster_file(tmp_path / "cluster.toml", nodes, {"peer_timeout_s": 0.5}, keys,
                              {"resp_password_file": str(secret)})
    text = path.read_text()
    # Keys beside the file are named relative to it, as a user writes them.
    assert "public_key = 'keys/node1.key'" in text and "clients = 'keys/clients'" in text
    config = load_config(path)
    assert config.security.mode is Mode.CURVE and config.curve
    assert config.security.clients == keys.clients
    assert config.security.resp_password_file == secret
    assert config.settings.peer_timeout_s == 0.5
    for i, address in nodes.items():
        node = config.node(i)
        assert (node.router, node.pub, node.resp, node.metrics) == (
            address.router, address.pub, address.resp, address.metrics)
        assert node.public_key_file == keys.nodes[i][0]


def test_node_command_names_the_cluster_file_only_when_given(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "zcounter.cli", "node", "--id", "2"]
    # zcounter-cluster: the nodes read $ZCOUNTER_CONFIG, as before the launcher was shared.
    assert node_command(2, None) == base
    assert node_command(2, tmp_path / "c.toml", tmp_path / "d", tmp_path / "s") == [
        *base, "--config", str(tmp_path / "c.toml"), "--data-dir", str(tmp_path / "d"),
        "--secret-key", str(tmp_path / "s")]
    nodes = NodeProcesses(None, [1, 2], {"X": "1"}, data_dirs={1: tmp_path / "n1"})
    assert nodes.command(1) == [*base[:-1], "1", "--data-dir", str(tmp_path / "n1")]
    assert nodes.command(2) == base and nodes.env["X"] == "1"
    assert nodes.log_path(1) is None  # piped: zcounter-cluster relays the output


def test_a_local_cluster_lays_out_its_root(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "c", n=2, secure=True)
    assert cluster.ids == [1, 2] and cluster.config_path == tmp_path / "c" / "cluster.toml"
    assert cluster.command(2) == node_command(2, cluster.config_path, tmp_path / "c" / "node-2",
                                              tmp_path / "c" / "keys" / "node2.key_secret")
    assert cluster.log_path(1) == tmp_path / "c" / "node-1.log"
    assert cluster.curve(1) == (cluster.cert, tmp_path / "c" / "keys" / "node1.key")
    assert cluster.config.curve and cluster.procs == {}
