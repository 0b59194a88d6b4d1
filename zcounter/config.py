"""Cluster configuration: which nodes exist, where they listen, and the tunables.

Sources, first found wins: ``--config FILE``, the ``ZCOUNTER_CONFIG`` environment
variable, the built-in three-node cluster on 127.0.0.1 (node N: ROUTER on port 555N,
PUB on port 556N, Redis-protocol door on 637N, metrics on 957N).  Every problem is a
:class:`ConfigError` whose message names the file and the field, because that is what a
user has to edit.  Paths in the file (keys, the clients directory) are relative to it.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .limits import (
    MAX_HELD_PER_CONNECTION,
    MAX_HELD_PER_NODE,
    METRICS_MAX_CLIENTS,
    RESP_MAX_ARGUMENT_BYTES,
    RESP_MAX_CLIENTS,
    RESP_MAX_COMMAND_BYTES,
    RESP_MAX_KEYS_PER_COMMAND,
    RESP_TLS_HANDSHAKE_TIMEOUT_S,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

ENV_CONFIG = "ZCOUNTER_CONFIG"
ENV_DATA_HOME = "ZCOUNTER_DATA_HOME"
DEFAULT_SOURCE = "<built-in default cluster>"

#: Old setting name -> its name now.  A cluster file may still use the old one: it is
#: read as the new one, with one warning naming the file.
RENAMED_SETTINGS = {"snapshot_interval_s": "repair_interval_s",
                    "anti_entropy_interval_s": "repair_check_interval_s"}

log = logging.getLogger("zcounter.config")

_ENDPOINT_RE = re.compile(r"^tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+):([0-9]{1,5})$")


@dataclass(frozen=True)
class Settings:
    """Tunables, all optional in the ``[settings]`` table.  Units are in the names."""

    heartbeat_interval_s: float = 0.2
    #: A peer silent this long is "not heard"; we then pull its state over DEALER.
    peer_timeout_s: float = 1.0
    #: At most one repair per peer per this interval (also: one read of a peer's
    #: request-id log).  Called ``snapshot_interval_s`` up to 0.2: still accepted in
    #: cluster files (:data:`RENAMED_SETTINGS`).
    repair_interval_s: float = 0.5
    #: Every this often, one live peer (in turn) whose hash-tree root differs from ours
    #: is repaired from, whatever else says (defence in depth; Riak exchanges every 15 s).
    #: Called ``anti_entropy_interval_s`` up to 0.2: still accepted (:data:`RENAMED_SETTINGS`).
    repair_check_interval_s: float = 10.0
    #: How often a replication level still unmet re-pushes / re-pulls.
    retry_interval_s: float = 0.1
    #: Request ids remembered for exactly-once retries: at most this many ...
    request_id_window: int = 100_000
    #: ... and for at most this long.
    request_id_max_age_s: float = 3600.0
    #: Most client messages handled per poll cycle (one commit, one broadcast each).
    max_batch: int = 4096
    #: A RESP client whose replies have not moved for this long (it stopped reading) is
    #: disconnected, so it cannot hold the node's memory.
    resp_stall_timeout_s: float = 10.0
    #: A RESP connection whose TLS handshake has not finished this long after its accept
    #: is closed (zcounter.limits.RESP_TLS_HANDSHAKE_TIMEOUT_S).
    resp_tls_handshake_timeout_s: float = RESP_TLS_HANDSHAKE_TIMEOUT_S
    #: Bytes of one RESP argument; a longer one is refused and the connection closed.
    resp_max_argument_bytes: int = RESP_MAX_ARGUMENT_BYTES
    #: Bytes of one RESP command as sent (also what a connection keeps of an unfinished one).
    resp_max_command_bytes: int = RESP_MAX_COMMAND_BYTES
    #: Keys of one RESP MGET/EXISTS/DEL (more: an error reply; the loop's work is per key).
    resp_max_keys_per_command: int = RESP_MAX_KEYS_PER_COMMAND
    #: RESP connections at once (Redis's ``maxclients``); the door holds at most its
    #: share of the open files limit (zcounter/runtime/fdbudget.py), whichever is less.
    resp_max_clients: int = RESP_MAX_CLIENTS
    #: ``/metrics`` connections at once (likewise bounded by the descriptor budget).
    metrics_max_clients: int = METRICS_MAX_CLIENTS
    #: Requests held waiting (``confirm``, waits and reads for a level) per connection ...
    max_held_per_connection: int = MAX_HELD_PER_CONNECTION
    #: ... and per node; beyond either, a request is refused at once with ``busy``.
    max_held_per_node: int = MAX_HELD_PER_NODE
    #: A peer whose heartbeats show a wall clock further than this from ours is warned
    #: about (a log line and zcounter_clock_skew_warnings_total); also the margin of the
    #: start-time rule of collection (zcounter/protocol/intake.py).
    max_clock_skew_s: float = 1.0
    #: How often collection takes dead keys and asks every peer to confirm them (Hold).
    gc_interval_s: float = 0.5
    #: How long a collected key's dead state (a grave) is kept in memory, to catch
    #: stale states of it that were still in flight.
    gc_grace_s: float = 10.0
    #: States of a key this node does not hold, read by their sender longer ago than
    #: this, are dropped (they may be of a key collected here).
    max_message_age_s: float = 5.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"setting {f.name} must be a positive number")
        # A state in flight is caught by a grave while younger than the grace, and
        # dropped by its age once older than max_message_age_s by the receiver's clock:
        # with clocks up to max_clock_skew_s apart both ways, the two must overlap.
        if self.gc_grace_s < self.max_message_age_s + 2 * self.max_clock_skew_s:
            raise ConfigError(
                f"setting gc_grace_s ({self.gc_grace_s:g}) must be at least "
                f"max_message_age_s + 2 * max_clock_skew_s "
                f"({self.max_message_age_s + 2 * self.max_clock_skew_s:g})")


@dataclass(frozen=True)
class NodeAddress:
    node_id: int
    router: str
    pub: str
    #: CurveZMQ public key (Z85) and the file it came from (``curve`` mode).
    public_key: bytes | None = None
    public_key_file: Path | None = None
    #: Redis-protocol (RESP2) endpoint, ``tcp://HOST:PORT`` (None: no RESP door).
    resp: str | None = None
    #: Prometheus metrics, ``HOST:PORT`` serving ``/metrics`` (None: none).
    metrics: str | None = None

    @property
    def host(self) -> str:
        """The host part of the ROUTER endpoint (brackets of IPv6 removed)."""
        match = _ENDPOINT_RE.match(self.router)
        assert match is not None
        return match.group(1).strip("[]")


class Mode(str, Enum):
    """How nodes and clients authenticate and encrypt (``[security] mode``)."""

    NONE = "none"
    CURVE = "curve"


@dataclass(frozen=True)
class Security:
    mode: Mode = Mode.NONE
    #: Directory of authorized client public keys (``*.key``), ``curve`` mode.
    clients: Path | None = None
    #: File holding the password RESP clients must AUTH with (in ``curve`` mode the door
    #: needs it, or client certificates, to open at all).
    resp_password_file: Path | None = None
    #: TLS on the RESP door, as Redis's ``tls-cert-file`` / ``tls-key-file`` /
    #: ``tls-ca-cert-file``: the server's PEM certificate (chain) and private key; with
    #: ``resp_tls_ca`` every client must present a certificate signed by that CA.
    #: They sit here, not in ``[settings]``, beside the other files of secrets
    #: (``clients``, ``resp_password_file``), read relative to the cluster file; settings
    #: are positive numbers only.
    resp_tls_cert: Path | None = None
    resp_tls_key: Path | None = None
    resp_tls_ca: Path | None = None
    #: ``curve`` mode only: serve the RESP door without TLS when its address is loopback.
    #: An explicit opt-in, because plain TCP bypasses what CurveZMQ protects.
    resp_plaintext_loopback: bool = False

    @property
    def resp_tls(self) -> bool:
        return self.resp_tls_cert is not None


@dataclass(frozen=True)
class ClusterConfig:
    nodes: dict[int, NodeAddress]
    settings: Settings = field(default_factory=Settings)
    source: str = DEFAULT_SOURCE
    #: Names the cluster in default data directories, so two clusters never share one.
    name: str = "default"
    security: Security = field(default_factory=Security)

    @property
    def curve(self) -> bool:
        return self.security.mode is Mode.CURVE

    def node_keys(self) -> dict[bytes, int]:
        """Public key -> node id (``curve`` mode)."""
        return {n.public_key: n.node_id for n in self.nodes.values() if n.public_key}

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
        i: NodeAddress(i, f"tcp://127.0.0.1:{5550 + i}", f"tcp://127.0.0.1:{5560 + i}",
                       resp=f"tcp://127.0.0.1:{6370 + i}", metrics=f"127.0.0.1:{9570 + i}")
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


_HOSTPORT_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+):([0-9]{1,5})$")


def check_hostport(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string like 127.0.0.1:9571")
    match = _HOSTPORT_RE.match(value)
    if not match or not 1 <= int(match.group(2)) <= 65535:
        raise ConfigError(f"{where}: malformed address {value!r} (expected HOST:PORT)")
    return value


def _path(value: Any, base: Path, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a path (relative to the cluster file)")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


_TLS_FILES = ("resp_tls_cert", "resp_tls_key", "resp_tls_ca")


def _security(raw: Any, source: str, base: Path) -> Security:
    if raw is None:
        return Security()
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: security must be a table")
    unknown = set(raw) - {"mode", "clients", "resp_password_file", *_TLS_FILES,
                          "resp_plaintext_loopback"}
    if unknown:
        raise ConfigError(f"{source}: security.{sorted(unknown)[0]} is not a known field")
    try:
        mode = Mode(raw.get("mode", "none"))
    except ValueError:
        raise ConfigError(f"{source}: security.mode must be \"none\" or \"curve\"") from None
    clients = (_path(raw["clients"], base, f"{source}: security.clients")
               if "clients" in raw else None)
    password = (_path(raw["resp_password_file"], base, f"{source}: security.resp_password_file")
                if "resp_password_file" in raw else None)
    if mode is Mode.CURVE and clients is None:
        raise ConfigError(f"{source}: security.clients is missing (a directory of client "
                          "public keys, needed in curve mode)")
    tls = {name: _path(raw[name], base, f"{source}: security.{name}")
           for name in _TLS_FILES if name in raw}
    # Redis, too, needs both tls-cert-file and tls-key-file, and a CA only with them.
    for name, needs in (("resp_tls_cert", "resp_tls_key"), ("resp_tls_key", "resp_tls_cert"),
                        ("resp_tls_ca", "resp_tls_cert")):
        if name in tls and needs not in tls:
            raise ConfigError(f"{source}: security.{needs} is missing (security.{name} is set; "
                              "TLS on the RESP door needs a certificate and its key)")
    loopback = raw.get("resp_plaintext_loopback", False)
    if not isinstance(loopback, bool):
        raise ConfigError(f"{source}: security.resp_plaintext_loopback must be true or false")
    return Security(mode, clients, password, tls.get("resp_tls_cert"), tls.get("resp_tls_key"),
                    tls.get("resp_tls_ca"), loopback)


def _renamed(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """``raw`` with every old setting name (:data:`RENAMED_SETTINGS`) replaced by its new
    one, logging one deprecation line per old name found."""
    out = dict(raw)
    for old, new in RENAMED_SETTINGS.items():
        if old not in out:
            continue
        if new in out:
            raise ConfigError(f"{source}: settings.{old} and settings.{new} are the same "
                              f"setting ({old} is its old name): keep only {new}")
        log.warning("%s: settings.%s is deprecated, its name is now %s", source, old, new)
        out[new] = out.pop(old)
    return out


def parse_config(data: dict[str, Any], source: str, name: str = "default",
                 base: Path | None = None) -> ClusterConfig:
    """``base``: the directory relative paths start from (the cluster file's)."""
    from .security import read_public_key  # zmq is imported only where keys are read

    base = base or Path.cwd()
    unknown = set(data) - {"nodes", "settings", "name", "security"}
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key {sorted(unknown)[0]!r}")
    raw_nodes = data.get("nodes")
    if not isinstance(raw_nodes, dict) or not raw_nodes:
        raise ConfigError(f"{source}: needs a [nodes.N] table for each node")
    nodes: dict[int, NodeAddress] = {}
    seen_endpoints: dict[str, str] = {}
    for key, entry in raw_nodes.items():
        where = f"{source}: nodes.{key}"
        # isascii: str.isdigit() also accepts "\u00b2" and other digits int() refuses (a
        # ValueError out of load_config, found by bin/fuzz: tests/regressions/config/).
        if not (key.isascii() and key.isdigit()) or not 1 <= int(key) <= 999_999_999:
            raise ConfigError(f"{where}: node ids must be positive integers")
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table with router and pub")
        extra = set(entry) - {"router", "pub", "public_key", "resp", "metrics"}
        if extra:
            raise ConfigError(f"{where}: unknown key {sorted(extra)[0]!r}")
        for part in ("router", "pub", "resp", "metrics"):
            if part not in entry:
                if part in ("router", "pub"):
                    raise ConfigError(f"{where}.{part} is missing")
                continue
            endpoint = (check_hostport(entry[part], f"{where}.{part}") if part == "metrics"
                        else check_endpoint(entry[part], f"{where}.{part}"))
            if endpoint in seen_endpoints:
                raise ConfigError(f"{where}.{part}: {endpoint} is also {seen_endpoints[endpoint]}")
            seen_endpoints[endpoint] = f"nodes.{key}.{part}"
        key_file = public_key = None
        if "public_key" in entry:
            key_file = _path(entry["public_key"], base, f"{where}.public_key")
            public_key = read_public_key(key_file, f"{where}.public_key")
        nodes[int(key)] = NodeAddress(int(key), entry["router"], entry["pub"], public_key,
                                      key_file, entry.get("resp"), entry.get("metrics"))
    raw_settings = data.get("settings", {})
    if not isinstance(raw_settings, dict):
        raise ConfigError(f"{source}: settings must be a table")
    raw_settings = _renamed(raw_settings, source)
    known = {f.name: f for f in fields(Settings)}
    for key, value in raw_settings.items():
        if key not in known:
            raise ConfigError(f"{source}: settings.{key} is not a known setting")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{source}: settings.{key} must be a positive number")
        if known[key].type in ("int", int) and not isinstance(value, int):
            raise ConfigError(f"{source}: settings.{key} must be an integer")
    try:
        settings = replace(Settings(), **raw_settings)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if settings.peer_timeout_s <= settings.heartbeat_interval_s:
        raise ConfigError(f"{source}: settings.peer_timeout_s must exceed heartbeat_interval_s")
    cluster_name = data.get("name", name)
    if not isinstance(cluster_name, str) or not re.match(r"^[A-Za-z0-9._-]{1,64}$", cluster_name):
        raise ConfigError(f"{source}: name must be 1-64 letters, digits, '.', '_' or '-'")
    security = _security(data.get("security"), source, base)
    if security.mode is Mode.CURVE:
        for node_id, node in sorted(nodes.items()):
            if node.public_key is None:
                raise ConfigError(f"{source}: nodes.{node_id}.public_key is missing "
                                  "(every node needs one in curve mode)")
        seen_keys: dict[bytes, int] = {}
        for node_id, node in sorted(nodes.items()):
            assert node.public_key is not None
            if node.public_key in seen_keys:
                raise ConfigError(f"{source}: nodes.{node_id}.public_key is the same key as "
                                  f"nodes.{seen_keys[node.public_key]}.public_key")
            seen_keys[node.public_key] = node_id
    return ClusterConfig(nodes=nodes, settings=settings, source=source, name=cluster_name,
                         security=security)


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
    except UnicodeDecodeError as exc:
        # tomllib decodes the whole file first; its UnicodeDecodeError is not a
        # TOMLDecodeError (found by bin/fuzz: tests/regressions/config/).
        raise ConfigError(f"{source}: not valid TOML (not UTF-8 at byte {exc.start})") from None
    return parse_config(data, source, name=Path(source).stem,
                        base=Path(source).resolve().parent)
