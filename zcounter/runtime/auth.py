"""Who may connect, and who may do what: CurveZMQ + ZAP in ``curve`` mode, peer hosts in
``none`` mode.

``curve`` mode (ZeroMQ RFC 26 and 27, through pyzmq's ``ThreadAuthenticator``): every
socket is encrypted and authenticated.  The ROUTER and PUB are CURVE servers with the
node's key pair; the SUB and DEALERs are CURVE clients that know each peer's public key
from the cluster file.  The ZAP handler accepts, on the ROUTER (domain ``zcounter``),
node keys and the client keys found in the clients directory, and on the PUB (domain
``zcounter-peers``) node keys only - so nobody else can subscribe to replication.  An
unknown key never completes the handshake: nothing it sends reaches the node.

Roles are checked per message: libzmq attaches the key that ZAP authenticated to every
message of the connection (the ``User-Id`` property, Z85 of the key); a peer operation
(fetch, merge, repair, request-id pages) is served only if that key is a node key.
``none`` mode has no keys, so the role comes from the connection's source address
(``Peer-Address``): peer operations only from the host of a configured node.

The clients directory is re-read on SIGHUP and every ``CLIENT_KEYS_RELOAD_S``, so adding
or removing a ``*.key`` file takes effect without a restart.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import zmq
from zmq.auth.thread import ThreadAuthenticator

from ..config import ClusterConfig
from ..errors import ConfigError
from ..security import read_client_keys, read_secret_certificate

log = logging.getLogger("zcounter.node")

DOMAIN_ALL = "zcounter"
DOMAIN_PEERS = "zcounter-peers"
#: How often the clients directory is re-read (SIGHUP re-reads at once).
CLIENT_KEYS_RELOAD_S = 5.0


class _Provider:
    """ZAP credentials callback (runs in the authenticator's thread): a membership test
    against a set the main thread replaces whole (an atomic reference swap)."""

    def __init__(self, allowed: frozenset[bytes]) -> None:
        self.allowed = allowed

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self.allowed


class Guard:
    """This node's security: socket options, the ZAP handler, role checks."""

    def __init__(self, config: ClusterConfig, node_id: int, secret_key: Path | None) -> None:
        self.config = config
        self.node_id = node_id
        self.curve = config.curve
        self._auth: ThreadAuthenticator | None = None
        self.public: bytes | None = None
        self._secret: bytes | None = None
        self.node_keys = frozenset(config.node_keys())
        self._client_keys: frozenset[bytes] = frozenset()
        self._all = _Provider(frozenset())
        self._peers = _Provider(self.node_keys)
        self.peer_hosts: frozenset[str] = frozenset()
        if self.curve:
            if secret_key is None:
                raise ConfigError(f"{config.source}: security.mode is curve: node {node_id} "
                                  "needs its secret key (--secret-key FILE or "
                                  "ZCOUNTER_SECRET_KEY)")
            self.public, self._secret = read_secret_certificate(secret_key, "--secret-key")
            expected = config.node(node_id)
            if self.public != expected.public_key:
                raise ConfigError(
                    f"{secret_key} (--secret-key): its public key does not match "
                    f"nodes.{node_id}.public_key ({expected.public_key_file}) in {config.source}")
            self.reload_clients(strict=True)
        else:
            self.peer_hosts = _resolve({config.nodes[p].host for p in config.peers_of(node_id)})

    # ------------------------------------------------------------------ sockets

    def start(self, ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
        if not self.curve:
            return
        auth = self._auth = ThreadAuthenticator(ctx, log=logging.getLogger("zcounter.zap"))
        auth.start()
        auth.configure_curve_callback(domain=DOMAIN_ALL, credentials_provider=self._all)
        auth.configure_curve_callback(domain=DOMAIN_PEERS, credentials_provider=self._peers)

    def stop(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def serve(self, sock: zmq.Socket[bytes], peers_only: bool) -> None:
        """Make ``sock`` (a ROUTER or PUB, before bind) a CURVE server."""
        if self.curve:
            assert self.public is not None and self._secret is not None
            sock.curve_secretkey = self._secret
            sock.curve_publickey = self.public
            sock.curve_server = True
            sock.zap_domain = (DOMAIN_PEERS if peers_only else DOMAIN_ALL).encode()

    def connect_to(self, sock: zmq.Socket[bytes], peer: int) -> None:
        """Make the next ``connect`` of ``sock`` a CURVE client of ``peer`` (socket
        options apply per connect, so one SUB can hold peers with different keys)."""
        if self.curve:
            assert self.public is not None and self._secret is not None
            sock.curve_secretkey = self._secret
            sock.curve_publickey = self.public
            server = self.config.node(peer).public_key
            assert server is not None
            sock.curve_serverkey = server

    # ------------------------------------------------------------------ roles

    def is_peer(self, frame: zmq.Frame) -> bool:
        """Did the message this frame belongs to come from a node?"""
        if self.curve:
            user = frame.get("User-Id")
            return isinstance(user, str) and user.encode() in self.node_keys
        address = frame.get("Peer-Address")
        return isinstance(address, str) and address in self.peer_hosts

    # ------------------------------------------------------------------ key rotation

    @property
    def client_keys(self) -> frozenset[bytes]:
        return self._client_keys

    def reload_clients(self, strict: bool = False) -> None:
        """Re-read the clients directory.  At start (``strict``) a bad file stops the
        node; later it is logged and the previous set of keys is kept."""
        directory = self.config.security.clients
        assert directory is not None
        try:
            found = read_client_keys(directory, "security.clients")
        except ConfigError as exc:
            if strict:
                raise
            log.warning("keeping the previous client keys: %s", exc)
            return
        keys = frozenset(found)
        if keys != self._client_keys:
            if self._client_keys or strict:
                log.info("client keys from %s: %d (%+d)", directory, len(keys),
                         len(keys) - len(self._client_keys))
            self._client_keys = keys
            self._all.allowed = keys | self.node_keys


def _resolve(hosts: set[str]) -> frozenset[str]:
    """Addresses of ``hosts`` as libzmq reports them in ``Peer-Address``."""
    out: set[str] = set()
    for host in hosts:
        out.add(host)
        try:
            for info in socket.getaddrinfo(host, None):
                out.add(str(info[4][0]))
        except OSError:
            log.warning("cannot resolve peer host %s: peer operations from it will be "
                        "refused", host)
    return frozenset(out)


__all__ = ["CLIENT_KEYS_RELOAD_S", "DOMAIN_ALL", "DOMAIN_PEERS", "Guard"]
