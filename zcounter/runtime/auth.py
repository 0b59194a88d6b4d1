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
(fetch, merge, repair, request-id pages) is served only if that key is a node key, and
any other request only if the key is still authorized: ZAP sees a key once, at the
handshake, so without this a client key removed from the directory would keep working
on the connections it already had (a test found that: issue 10).  That check starts with
the first removal: while keys are only added, every key ZAP accepted is still good.
``none`` mode has no keys, so the role comes from the connection's source address
(``Peer-Address``): peer operations only from the host of a configured node.

The clients directory is re-read on SIGHUP and every ``CLIENT_KEYS_RELOAD_S``, so adding
or removing a ``*.key`` file takes effect without a restart.

A handshake with a peer that fails (its key changed, or ours, during a node key rotation)
is retried by :class:`Redial`: libzmq itself never connects again after one.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
from pathlib import Path

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from ..config import ClusterConfig
from ..errors import ConfigError
from ..security import read_client_keys, read_secret_certificate

log = logging.getLogger("zcounter.node")

DOMAIN_ALL = "zcounter"
DOMAIN_PEERS = "zcounter-peers"
#: How often the clients directory is re-read (SIGHUP re-reads at once).
CLIENT_KEYS_RELOAD_S = 5.0
#: After a failed handshake with a peer, connect to it again this much later (as often
#: as libzmq's own reconnects at their slowest, RECONNECT_IVL_MAX in sockets.py).
REDIAL_S = 1.0
_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
           | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


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
        #: The same keys as libzmq reports them in ``User-Id`` (str), so the per-message
        #: checks cost one property read and one set lookup (~1.2 us here), no encoding.
        self._node_users = frozenset(k.decode() for k in self.node_keys)
        self._users = self._node_users
        #: Set once a client key is removed: until then every key ZAP accepted at a
        #: handshake is still authorized, and the per-request check is skipped (it is
        #: ~1.2 us of the ~6 us per increment CurveZMQ costs at window 256).
        self.revoked = False
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
            self.reload_clients(strict=True, reason="start")
        else:
            self.peer_hosts = _resolve({config.nodes[p].host for p in config.peers_of(node_id)})
            warning = none_mode_warning(config)
            if warning is not None:
                log.warning("%s", warning)

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
            return frame.get("User-Id") in self._node_users
        address = frame.get("Peer-Address")
        return isinstance(address, str) and address in self.peer_hosts

    def is_authorized(self, frame: zmq.Frame) -> bool:
        """``curve`` mode: is the key this frame's connection authenticated with still a
        node key or a client key of the directory as last read?  (Only needed once a key
        was removed: :attr:`revoked`.)"""
        return frame.get("User-Id") in self._users

    # ------------------------------------------------------------------ key rotation

    @property
    def client_keys(self) -> frozenset[bytes]:
        return self._client_keys

    def reload_clients(self, strict: bool = False, reason: str = "periodic") -> None:
        """Re-read the clients directory.  At start (``strict``) a bad file stops the
        node; later it is logged and the previous set of keys is kept.  ``reason``
        (start, SIGHUP, periodic) goes to the log line, written when the keys changed
        and after every SIGHUP, so an operator sees that the signal was acted on."""
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
        if keys != self._client_keys or reason == "SIGHUP" or strict:
            log.info("client keys re-read (%s) from %s: %d (%+d)", reason, directory, len(keys),
                     len(keys) - len(self._client_keys))
        if keys != self._client_keys:
            if self._client_keys - keys:
                self.revoked = True
            self._client_keys = keys
            allowed = keys | self.node_keys
            self._all.allowed = allowed
            self._users = frozenset(k.decode() for k in allowed)


class Redial:
    """Connect again to a peer whose CurveZMQ handshake failed.

    libzmq gives a connect endpoint up for good once a handshake on it fails: the
    failure is a protocol error, which ends the session instead of reconnecting
    (``session_base_t::engine_error``).  Checked with libzmq 4.3.5: a DEALER refused by
    ZAP had not connected again 8 s after its key was authorized, and connected at once
    after ``disconnect`` + ``connect``.  Between nodes a handshake fails while a node key
    rotation is rolled out (one side still has the other's old public key) or while a
    node runs with a stale cluster file; without this, the link stayed dead after every
    node had restarted with the new keys, until the node that had been refused restarted
    once more (found by the rotation test, issue 10).

    Every DEALER and the SUB are watched by a monitor socket (``curve`` mode only: the
    NULL mechanism has no handshake to fail); a failure schedules a ``disconnect`` +
    ``connect`` of that peer's endpoint ``REDIAL_S`` later, and again every ``REDIAL_S``
    until a handshake with that peer succeeds - at most one pending per socket and peer,
    so a peer that keeps refusing costs one attempt a second.
    """

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        #: monitor socket -> (the watched socket, peer -> its endpoint on that socket)
        self.monitors: dict[zmq.Socket[bytes], tuple[zmq.Socket[bytes], dict[int, str]]] = {}
        self._endpoints: dict[zmq.Socket[bytes], dict[int, str]] = {}
        self._due: dict[tuple[zmq.Socket[bytes], int], float] = {}
        self._failing: set[tuple[zmq.Socket[bytes], int]] = set()

    def watch(self, sock: zmq.Socket[bytes], endpoints: dict[int, str]) -> None:
        """Watch ``sock`` (before its connects) for failed handshakes with ``endpoints``."""
        if self.guard.curve:
            monitor = sock.get_monitor_socket(_FAILED | zmq.EVENT_HANDSHAKE_SUCCEEDED)
            self.monitors[monitor] = (sock, endpoints)
            self._endpoints[sock] = endpoints

    def on_event(self, monitor: zmq.Socket[bytes], now: float) -> None:
        sock, endpoints = self.monitors[monitor]
        for _ in range(100):  # bounded: events left over are read next cycle
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            address = bytes(event["endpoint"]).decode(errors="replace")
            # The event names the address connected to: the configured endpoint, unless
            # the cluster file names a host by name; then redial every peer of the socket.
            peers = [p for p, ep in endpoints.items() if ep == address] or list(endpoints)
            for peer in peers:
                key = (sock, peer)
                if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    self._due.pop(key, None)
                    if key in self._failing:
                        self._failing.discard(key)
                        log.info("handshake with node %d (%s) succeeded again", peer, address)
                    continue
                if key not in self._failing:
                    self._failing.add(key)
                    log.warning("handshake with node %d (%s) failed (%s); connecting again "
                                "every %gs", peer, address, _why(event["event"]), REDIAL_S)
                self._due.setdefault(key, now + REDIAL_S)

    def tick(self, now: float) -> None:
        if not self._due:
            return
        for (sock, peer), at in list(self._due.items()):
            if at > now:
                continue
            del self._due[(sock, peer)]
            endpoint = self._endpoints[sock][peer]
            with contextlib.suppress(zmq.ZMQError):  # already gone from the socket
                sock.disconnect(endpoint)
            self.guard.connect_to(sock, peer)
            sock.connect(endpoint)
            if (sock, peer) in self._failing:
                # Again in REDIAL_S unless a handshake succeeds first: the new connection
                # may meet the peer mid-restart, and libzmq need not report anything
                # more.  A CI run of the rotation test saw node 1's SUB redial node 3's
                # PUB while node 3 restarted, then neither fail nor succeed for 15 s.
                self._due[(sock, peer)] = now + REDIAL_S

    def close(self) -> None:
        for monitor, (sock, _) in self.monitors.items():
            with contextlib.suppress(zmq.ZMQError):
                sock.disable_monitor()
            monitor.close(linger=0)
        self.monitors.clear()


def _why(event: int) -> str:
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return "it refused this node's key: its cluster file has another public key for us"
    return ("it could not be authenticated: its public_key in our cluster file is not its "
            "key")


def is_loopback_host(host: str) -> bool:
    """Does ``host`` (an address or a name) reach only this machine?  A wildcard
    (``0.0.0.0``, ``::``, ``*``) does not: it listens on every interface.  A name counts
    as loopback only if every address it resolves to is; one that does not resolve
    does not."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None)
        except (OSError, UnicodeError):
            return False
        return bool(infos) and all(is_loopback_host(str(info[4][0])) for info in infos)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def none_mode_warning(config: ClusterConfig) -> str | None:
    """The one warning a ``none``-mode node logs at start when its cluster file names a
    host that is not loopback (None otherwise): what ``none`` trusts, and ``curve``."""
    hosts = sorted({address.host for address in config.nodes.values()})
    exposed = [host for host in hosts if not is_loopback_host(host)]
    if not exposed:
        return None
    return (f"security mode none with nodes on {', '.join(exposed)}: any process on a "
            "node's host is trusted as a node (it may merge any state into any key and "
            "read every replication message), any process that reaches a ROUTER port is a "
            "client, and everything travels in plaintext.  Unless every node is on one "
            "host whose every process you trust, set [security] mode = \"curve\" (README, "
            "Security; bin/cluster --secure shows it)")


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


__all__ = ["CLIENT_KEYS_RELOAD_S", "DOMAIN_ALL", "DOMAIN_PEERS", "REDIAL_S", "Guard", "Redial",
           "is_loopback_host", "none_mode_warning"]
