from __future__ import annotations

import pytest

from zcounter.config import default_cluster, load_config
from zcounter.errors import ConfigError


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
