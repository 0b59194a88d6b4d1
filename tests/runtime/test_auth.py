"""The node's guard (:mod:`zcounter.runtime.auth`) without sockets: which keys it takes
at start, and how a re-read of the clients directory treats a bad file."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import zmq.auth

from zcounter.config import load_config
from zcounter.errors import ConfigError
from zcounter.runtime.auth import Guard
from zcounter.security import generate


def cluster(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A two-node curve cluster file; returns it, node 1's secret, the clients dir."""
    keys = tmp_path / "keys"
    clients = keys / "clients"
    clients.mkdir(parents=True)
    _, secret = generate("node1", keys)
    generate("node2", keys)
    path = tmp_path / "c.toml"
    path.write_text("[nodes.1]\nrouter = 'tcp://10.9.0.1:1'\npub = 'tcp://10.9.0.1:2'\n"
                    "public_key = 'keys/node1.key'\n"
                    "[nodes.2]\nrouter = 'tcp://10.9.0.2:1'\npub = 'tcp://10.9.0.2:2'\n"
                    "public_key = 'keys/node2.key'\n"
                    "[security]\nmode = 'curve'\nclients = 'keys/clients'\n")
    return path, secret, clients


def add_client(clients: Path, name: str) -> bytes:
    public, _ = generate(name, clients.parent / "made")
    shutil.copy(public, clients / public.name)
    key = zmq.auth.load_certificate(public)[0]
    assert key is not None
    return key


def test_a_bad_file_at_start_stops_the_node_but_later_keeps_the_previous_keys(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path, secret, clients = cluster(tmp_path)
    alice = add_client(clients, "alice")
    config = load_config(path)
    guard = Guard(config, 1, secret)
    assert guard.client_keys == {alice}
    bob = add_client(clients, "bob")
    guard.reload_clients(reason="SIGHUP")
    assert guard.client_keys == {alice, bob}
    # Keys only added so far: every key ZAP accepted is still good, no per-request check.
    assert not guard.revoked
    (clients / "broken.key").write_text("oops\n")
    with caplog.at_level(logging.WARNING, logger="zcounter.node"):
        guard.reload_clients()
    assert guard.client_keys == {alice, bob}
    assert "keeping the previous client keys" in caplog.text
    assert str(clients / "broken.key") in caplog.text
    with pytest.raises(ConfigError, match=r"broken\.key"):
        Guard(config, 1, secret)  # at start, the same file stops the node
    (clients / "broken.key").unlink()
    (clients / "bob.key").unlink()
    guard.reload_clients()
    assert guard.client_keys == {alice}
    assert guard.revoked  # from now on each request's key is checked again


def test_none_mode_knows_its_peers_by_host(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[nodes.1]\nrouter = 'tcp://10.9.0.1:1'\npub = 'tcp://10.9.0.1:2'\n"
                    "[nodes.2]\nrouter = 'tcp://10.9.0.2:1'\npub = 'tcp://10.9.0.2:2'\n"
                    "[nodes.3]\nrouter = 'tcp://10.9.0.3:1'\npub = 'tcp://10.9.0.3:2'\n")
    guard = Guard(load_config(path), 1, None)
    # Its own host is no peer: a client on node 1's machine is a client.
    assert guard.peer_hosts == {"10.9.0.2", "10.9.0.3"}


# --------------------------------------------------------------------------- none mode


@pytest.mark.parametrize("host,loopback", [
    ("127.0.0.1", True), ("127.0.0.9", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("*", False),  # wildcards: every interface
    ("10.9.0.1", False), ("192.0.2.7", False), ("fe80::1", False),
])
def test_which_hosts_reach_only_this_machine(host: str, loopback: bool) -> None:
    from zcounter.runtime.auth import is_loopback_host
    assert is_loopback_host(host) is loopback


def none_cluster(tmp_path: Path, hosts: tuple[str, str]) -> Path:
    path = tmp_path / "none.toml"
    path.write_text("".join(f"[nodes.{i}]\nrouter = 'tcp://{h}:{i}1'\npub = 'tcp://{h}:{i}2'\n"
                            for i, h in enumerate(hosts, 1)))
    return path


@pytest.mark.parametrize("hosts,warned", [
    (("127.0.0.1", "127.0.0.1"), False),
    (("127.0.0.1", "10.9.0.2"), True),  # a peer elsewhere
    (("0.0.0.0", "127.0.0.1"), True),  # this node listening on every interface
])
def test_none_mode_warns_once_at_start_when_a_node_is_not_on_loopback(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, hosts: tuple[str, str],
        warned: bool) -> None:
    """(IP literals only: nothing is resolved or sent.)"""
    config = load_config(none_cluster(tmp_path, hosts))
    with caplog.at_level(logging.WARNING, logger="zcounter.node"):
        Guard(config, 1, None)
    lines = [r.getMessage() for r in caplog.records if "security mode none" in r.getMessage()]
    assert len(lines) == (1 if warned else 0), lines
    if warned:
        exposed = [h for h in hosts if h != "127.0.0.1"]
        assert f"nodes on {exposed[0]}" in lines[0]
        assert 'mode = "curve"' in lines[0] and "trusted as a node" in lines[0]
