"""Cluster configuration: which nodes exist, where they listen, and the tunables.

Sources, first found wins: ``--config FILE``, the ``ZCOUNTER_CONFIG`` environment
variable, the built-in three-node cluster on 127.0.0.1 (node N: ROUTER on port 555N,
PUB on port 556N).  Every problem is a :class:`ConfigError` whose message names the
file and the field, because that is what a user has to edit.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

ENV_CONFIG = "ZCOUNTER_CONFIG"
ENV_DATA_HOME = "ZCOUNTER_DATA_HOME"
DEFAULT_SOURCE = "<built-in default cluster>"

_ENDPOINT_RE = re.compile(r"^tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+):([0-9]{1,5})$")


@dataclass(frozen=True)
class Settings:
    """Tunables, all optional in the ``[settings]`` table.  Units are in the names."""

    heartbeat_interval_s: float = 0.2
    #: A peer silent this long is "not heard"; we then pull its state over DEALER.
    peer_timeout_s: float = 1.0
    #: At most one repair (anti-entropy sync) per peer per this interval.
    snapshot_interval_s: float = 0.5
    #: Every this often, one live peer (in turn) whose hash-tree root differs from ours
    #: is repaired from, whatever else says (defence in depth; Riak exchanges every 15 s).
    anti_entropy_interval_s: float = 10.0
    #: How often a replication level still unmet re-pushes / re-pulls.
    retry_interval_s: float = 0.1
    #: Request ids remembered for exactly-once retries: at most this many ...
    request_id_window: int = 100_000
    #: ... and for at most this long.
    request_id_max_age_s: float = 3600.0
    #: Most client messages handled per poll cycle (one commit, one broadcast each).
    max_batch: int = 4096

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"setting {f.name} must be a positive number")


@dataclass(frozen=True)
class NodeAddress:
    node_id: int
    router: str
    pub: str


@dataclass(frozen=True)
class ClusterConfig:
    nodes: dict[int, NodeAddress]
    settings: Settings = field(default_factory=Settings)
    source: str = DEFAULT_SOURCE
    #: Names the cluster in default data directories, so two clusters never share one.
    name: str = "default"

    def node(self, node_id: int) -> NodeAddress:
        try:
            return self.nodes[node_id]
        except KeyError:
            known = ", ".join(str(n) for n in sorted(self.nodes))
            raise ConfigError(
                f"{self.source}: unknown node id {node_id} (configured: {known})"
            ) from None

    def peers_of(self, node_id: int) -> list[int]:
        return [n for n in sorted(self.nodes) if n != node_id]

    def default_data_dir(self, node_id: int) -> Path:
        """``$ZCOUNTER_DATA_HOME`` or ``$XDG_DATA_HOME/zcounter`` or ``~/.local/share/zcounter``,
        then ``<cluster name>/node-<id>``."""
        home = os.environ.get(ENV_DATA_HOME)
        if home:
            base = Path(home)
        else:
            xdg = os.environ.get("XDG_DATA_HOME")
            base = (Path(xdg) if xdg else Path.home() / ".local" / "share") / "zcounter"
        return base / self.name / f"node-{node_id}"


def default_cluster(n: int = 3) -> ClusterConfig:
    nodes = {
        i: NodeAddress(i, f"tcp://127.0.0.1:{5550 + i}", f"tcp://127.0.0.1:{5560 + i}")
        for i in range(1, n + 1)
    }
    return ClusterConfig(nodes=nodes)


def check_endpoint(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string like tcp://127.0.0.1:5551")
    match = _ENDPOINT_RE.match(value)
    if not match or not 1 <= int(match.group(2)) <= 65535:
        raise ConfigError(f"{where}: malformed endpoint {value!r} (expected tcp://HOST:PORT)")
    return value


def parse_config(data: dict[str, Any], source: str, name: str = "default") -> ClusterConfig:
    unknown = set(data) - {"nodes", "settings", "name"}
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key {sorted(unknown)[0]!r}")
    raw_nodes = data.get("nodes")
    if not isinstance(raw_nodes, dict) or not raw_nodes:
        raise ConfigError(f"{source}: needs a [nodes.N] table for each node")
    nodes: dict[int, NodeAddress] = {}
    seen_endpoints: dict[str, str] = {}
    for key, entry in raw_nodes.items():
        where = f"{source}: nodes.{key}"
        if not key.isdigit() or not 1 <= int(key) <= 999_999_999:
            raise ConfigError(f"{where}: node ids must be positive integers")
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table with router and pub")
        extra = set(entry) - {"router", "pub"}
        if extra:
            raise ConfigError(f"{where}: unknown key {sorted(extra)[0]!r}")
        for part in ("router", "pub"):
            if part not in entry:
                raise ConfigError(f"{where}.{part} is missing")
            endpoint = check_endpoint(entry[part], f"{where}.{part}")
            if endpoint in seen_endpoints:
                raise ConfigError(f"{where}.{part}: {endpoint} is also {seen_endpoints[endpoint]}")
            seen_endpoints[endpoint] = f"nodes.{key}.{part}"
        nodes[int(key)] = NodeAddress(int(key), entry["router"], entry["pub"])
    raw_settings = data.get("settings", {})
    if not isinstance(raw_settings, dict):
        raise ConfigError(f"{source}: settings must be a table")
    known = {f.name: f for f in fields(Settings)}
    for key, value in raw_settings.items():
        if key not in known:
            raise ConfigError(f"{source}: settings.{key} is not a known setting")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{source}: settings.{key} must be a positive number")
        if known[key].type in ("int", int) and not isinstance(value, int):
            raise ConfigError(f"{source}: settings.{key} must be an integer")
    settings = replace(Settings(), **raw_settings)
    if settings.peer_timeout_s <= settings.heartbeat_interval_s:
        raise ConfigError(f"{source}: settings.peer_timeout_s must exceed heartbeat_interval_s")
    cluster_name = data.get("name", name)
    if not isinstance(cluster_name, str) or not re.match(r"^[A-Za-z0-9._-]{1,64}$", cluster_name):
        raise ConfigError(f"{source}: name must be 1-64 letters, digits, '.', '_' or '-'")
    return ClusterConfig(nodes=nodes, settings=settings, source=source, name=cluster_name)


def load_config(path: str | os.PathLike[str] | None = None) -> ClusterConfig:
    """Load the cluster from ``path``, else ``$ZCOUNTER_CONFIG``, else the default."""
    if path is None:
        path = os.environ.get(ENV_CONFIG) or None
    if path is None:
        return default_cluster()
    source = str(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read cluster file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML ({exc})") from None
    return parse_config(data, source, name=Path(source).stem)
