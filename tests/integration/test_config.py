from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import zmq.auth

from zcounter.config import default_cluster, load_config
from zcounter.errors import ConfigError
from zcounter.security import generate, read_client_keys, read_secret_certificate


def test_default_cluster_matches_the_documented_ports():
    c = default_cluster()
    assert sorted(c.nodes) == [1, 2, 3]
    assert c.node(2).router == "tcp://127.0.0.1:5552"
    assert c.node(3).pub == "tcp://127.0.0.1:5563"


def test_env_var_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "c.toml"
    path.write_text('[nodes.7]\nrouter = "tcp://10.0.0.1:1"\npub = "tcp://[::1]:2"\n'
                    "[settings]\nheartbeat_interval_s = 0.05\n")
    monkeypatch.setenv("ZCOUNTER_CONFIG", str(path))
    c = load_config()
    assert list(c.nodes) == [7] and c.settings.heartbeat_interval_s == 0.05
    assert c.name == "c"


@pytest.mark.parametrize("text,fragment", [
    ("[nodes.1]\nrouter = 'tcp://h:1'\n", "nodes.1.pub is missing"),
    ("[nodes.1]\nrouter = 'http://h:1'\npub = 'tcp://h:2'\n", "nodes.1.router: malformed"),
    ("[nodes.1]\nrouter = 'tcp://h:70000'\npub = 'tcp://h:2'\n", "malformed endpoint"),
    ("[nodes.x]\nrouter = 'tcp://h:1'\npub = 'tcp://h:2'\n", "positive integers"),
    ("[nodes.1]\nrouter = 'tcp://h:1'\npub = 'tcp://h:1'\n", "is also"),
    ("[nodes.1]\nrouter = 'tcp://h:1'\npub = 'tcp://h:2'\n[settings]\nfoo = 1\n", "settings.foo"),
    ("[nodes.1]\nrouter = 'tcp://h:1'\npub = 'tcp://h:2'\n[settings]\nmax_batch = 0\n",
     "positive"),
    ("[nodes.1]\nrouter = 'tcp://h:1'\npub = 'tcp://h:2'\n[settings]\nmax_batch = 1.5\n",
     "integer"),
    ("nodes = 3\n", "[nodes.N]"),
    ("this is = = not toml", "not valid TOML"),
])
def test_bad_files_name_file_and_field(tmp_path, text, fragment):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert fragment in str(info.value)


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_unknown_node():
    with pytest.raises(ConfigError, match="unknown node id 9"):
        default_cluster().node(9)


def test_default_data_dir_is_per_cluster_and_node(monkeypatch, tmp_path):
    monkeypatch.setenv("ZCOUNTER_DATA_HOME", str(tmp_path))
    assert default_cluster().default_data_dir(2) == tmp_path / "default" / "node-2"


# --------------------------------------------------------------------------- [security] (issue 10)


def _keys(where: Path, *names: str) -> dict[str, tuple[Path, Path]]:
    return {name: generate(name, where) for name in names}


def _curve_file(path: Path, body: str = "", mode: str = "curve",
                clients: str | None = "keys/clients") -> Path:
    security = f'[security]\nmode = "{mode}"\n' + (f'clients = "{clients}"\n' if clients else "")
    path.write_text(
        "[nodes.1]\nrouter = 'tcp://10.0.0.1:5551'\npub = 'tcp://10.0.0.1:5561'\n"
        "public_key = 'keys/node1.key'\n"
        "[nodes.2]\nrouter = 'tcp://10.0.0.2:5551'\npub = 'tcp://10.0.0.2:5561'\n"
        "public_key = 'keys/node2.key'\n" + body + security)
    return path


def test_key_paths_are_relative_to_the_cluster_file_not_the_working_directory(
        tmp_path, monkeypatch):
    keys = _keys(tmp_path / "conf" / "keys", "node1", "node2")
    (tmp_path / "conf" / "keys" / "clients").mkdir()
    path = _curve_file(tmp_path / "conf" / "cluster.toml")
    monkeypatch.chdir(tmp_path)  # "keys/node1.key" does not exist from here
    c = load_config(path)
    assert c.curve and c.security.clients == tmp_path / "conf" / "keys" / "clients"
    assert c.node(1).public_key_file == keys["node1"][0]
    assert c.node(1).public_key == zmq.auth.load_certificate(keys["node1"][0])[0]
    assert c.node_keys() == {c.node(1).public_key: 1, c.node(2).public_key: 2}


@pytest.mark.parametrize("body,mode,clients,fragments", [
    ("", "curve", None, ["security.clients is missing"]),
    ("", "tls", "keys/clients", ['security.mode must be "none" or "curve"']),
    ("[security]\nmod = 'curve'\n", "none", None, ["security.mod is not a known field"]),
])
def test_bad_security_tables_name_file_and_field(tmp_path, body, mode, clients, fragments):
    _keys(tmp_path / "keys", "node1", "node2")
    path = tmp_path / "c.toml"
    if body.startswith("[security]"):
        path.write_text("[nodes.1]\nrouter = 'tcp://h:1'\npub = 'tcp://h:2'\n" + body)
    else:
        _curve_file(path, body, mode, clients)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_curve_mode_needs_every_nodes_public_key(tmp_path):
    _keys(tmp_path / "keys", "node1")
    path = tmp_path / "c.toml"
    path.write_text("[nodes.1]\nrouter = 'tcp://h:1'\npub = 'tcp://h:2'\n"
                    "public_key = 'keys/node1.key'\n"
                    "[nodes.2]\nrouter = 'tcp://h:3'\npub = 'tcp://h:4'\n"
                    "[security]\nmode = 'curve'\nclients = 'keys'\n")
    with pytest.raises(ConfigError, match=r"nodes\.2\.public_key is missing") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_two_nodes_with_one_key_are_refused(tmp_path):
    _keys(tmp_path / "keys", "node1", "node2")
    path = _curve_file(tmp_path / "c.toml")
    path.write_text(path.read_text().replace("keys/node2.key", "keys/node1.key"))
    with pytest.raises(ConfigError, match=r"nodes\.2\.public_key is the same key as nodes\.1"):
        load_config(path)


@pytest.mark.parametrize("content,fragment", [
    ("not a certificate\n", "not a zmq certificate"),
    ('metadata\ncurve\n    public-key = "tooshort"\n', "no valid public-key"),
    (b"\xff\xfe\x00binary", "not a zmq certificate"),
])
def test_a_malformed_public_key_file_names_the_file_and_the_field(tmp_path, content, fragment):
    _keys(tmp_path / "keys", "node1", "node2")
    bad = tmp_path / "keys" / "node2.key"
    if isinstance(content, bytes):
        bad.write_bytes(content)
    else:
        bad.write_text(content)
    path = _curve_file(tmp_path / "c.toml")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(bad) in message and "nodes.2.public_key" in message and fragment in message


def test_none_mode_needs_no_keys_and_ignores_none_it_is_given(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[nodes.1]\nrouter = 'tcp://h:1'\npub = 'tcp://h:2'\n"
                    "[security]\nmode = 'none'\n")
    c = load_config(path)
    assert not c.curve and c.node_keys() == {}


def test_the_clients_directory_holds_public_keys_only(tmp_path):
    keys = _keys(tmp_path / "elsewhere", "alice", "bob")
    clients = tmp_path / "clients"
    clients.mkdir()
    for name in ("alice", "bob"):
        shutil.copy(keys[name][0], clients / f"{name}.key")
    # Not *.key: ignored (a note, a secret someone dropped there by mistake).
    (clients / "README").write_text("public keys of our clients\n")
    shutil.copy(keys["alice"][1], clients / "alice.key_secret")
    found = read_client_keys(clients, "security.clients")
    assert sorted(found.values()) == ["alice.key", "bob.key"]
    (clients / "broken.key").write_text("oops\n")
    with pytest.raises(ConfigError) as info:
        read_client_keys(clients, "security.clients")
    assert str(clients / "broken.key") in str(info.value)
    assert "security.clients" in str(info.value)
    with pytest.raises(ConfigError, match="cannot list"):
        read_client_keys(tmp_path / "absent", "security.clients")


def test_a_secret_is_checked_for_its_mode_before_it_is_read(tmp_path):
    public, secret = generate("node1", tmp_path)
    assert read_secret_certificate(secret, "--secret-key") == zmq.auth.load_certificate(secret)
    for mode in (0o640, 0o604, 0o620, 0o602):
        secret.chmod(mode)
        with pytest.raises(ConfigError, match=f"group or others \\(mode {mode:04o}\\)"):
            read_secret_certificate(secret, "--secret-key")
    secret.chmod(0o400)  # read-only for the owner is fine
    read_secret_certificate(secret, "--secret-key")
    public.chmod(0o600)
    with pytest.raises(ConfigError, match="holds no secret-key"):
        read_secret_certificate(public, "--secret-key")


@pytest.mark.parametrize("old, new, value", [
    ("snapshot_interval_s", "repair_interval_s", 0.75),
    ("anti_entropy_interval_s", "repair_check_interval_s", 3.0)])
def test_the_old_name_of_a_setting_is_read_with_one_deprecation_line(
        tmp_path, caplog, old, new, value):
    path = tmp_path / "old.toml"
    path.write_text("[nodes.1]\nrouter = 'tcp://h:1'\npub = 'tcp://h:2'\n"
                    f"[settings]\n{old} = {value}\n")
    with caplog.at_level("WARNING", logger="zcounter.config"):
        c = load_config(path)
    assert getattr(c.settings, new) == value
    lines = [r.getMessage() for r in caplog.records if r.name == "zcounter.config"]
    assert len(lines) == 1
    assert str(path) in lines[0] and old in lines[0]
    assert new in lines[0]


def test_a_setting_under_its_old_and_new_name_at_once_is_refused(tmp_path):
    path = tmp_path / "both.toml"
    path.write_text("[nodes.1]\nrouter = 'tcp://h:1'\npub = 'tcp://h:2'\n[settings]\n"
                    "snapshot_interval_s = 0.75\nrepair_interval_s = 0.5\n")
    with pytest.raises(ConfigError, match="keep only repair_interval_s"):
        load_config(path)

