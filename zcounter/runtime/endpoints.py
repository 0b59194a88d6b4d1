"""The node's ZeroMQ sockets: which it opens, their options (each with its reason), its
binds and connects, and the monitors that watch them.

* ROUTER (``[nodes.N] router``): every client and every peer's DEALER; requests in,
  replies out.
* PUB (``[nodes.N] pub``): this node's broadcasts (deltas, heartbeats) to every peer's SUB.
* SUB: one socket connected to every peer's PUB.
* DEALER: one per peer, connected to that peer's ROUTER (repair requests, their replies).
* Monitors: :class:`~.auth.Redial`'s (``curve`` mode: a failed handshake is redialled) and
  one :class:`~.zmqcap.AcceptCap` per bound socket (libzmq accepts without a cap).

Every socket is appended to the caller's list as soon as it exists, so a setup that
fails half way still has each one closed before the context ends
(:meth:`.server.NodeServer.run`).
"""

from __future__ import annotations

from dataclasses import dataclass

import zmq

from ..config import ClusterConfig
from ..errors import ConfigError
from ..limits import HANDSHAKE_TIMEOUT_MS
from ..protocol.codec import MAX_PEER_MESSAGE_BYTES
from .auth import Guard, Redial
from .sockets import tune, tune_router
from .zmqcap import AcceptCap


@dataclass(frozen=True, eq=False)
class NodeSockets:
    """The sockets of one node, opened by :func:`open_sockets`."""

    router: zmq.Socket[bytes]
    pub: zmq.Socket[bytes]
    sub: zmq.Socket[bytes]
    #: peer -> the DEALER connected to its ROUTER, and back.
    dealers: dict[int, zmq.Socket[bytes]]
    peer_of: dict[zmq.Socket[bytes], int]
    redial: Redial
    #: The connection caps of the bound sockets (ROUTER, PUB), by monitor socket.
    caps: dict[zmq.Socket[bytes], AcceptCap]
    #: Every socket above, in the order they were opened (the poll order).
    opened: list[zmq.Socket[bytes]]

    def register(self, poller: zmq.Poller) -> None:
        """Poll every socket but the PUB (which is only written) for input."""
        for sock in self.opened:
            if sock is not self.pub:
                poller.register(sock, zmq.POLLIN)


def open_sockets(ctx: zmq.Context[zmq.Socket[bytes]], config: ClusterConfig, node_id: int,
                 guard: Guard, opened: list[zmq.Socket[bytes]]) -> NodeSockets:
    """Open, bind and connect node ``node_id``'s sockets; each is appended to ``opened``
    (for the caller to close) as soon as it exists.  A bind that fails raises
    :class:`ConfigError` naming the setting."""
    address = config.node(node_id)
    router = ctx.socket(zmq.ROUTER)
    opened.append(router)
    # Frames past the peer limit drop the sender's connection; sizes between the
    # client limit and it get a readable error reply from the decoder instead.
    tune_router(router, MAX_PEER_MESSAGE_BYTES)
    guard.serve(router, peers_only=False)
    # Before the bind: libzmq copies a socket's options into its listener then.
    router.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_TIMEOUT_MS)
    _bind(router, address.router, config, node_id, "router")
    pub = ctx.socket(zmq.PUB)
    opened.append(pub)
    tune(pub)
    guard.serve(pub, peers_only=True)
    pub.setsockopt(zmq.SNDHWM, 100_000)
    pub.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_TIMEOUT_MS)
    _bind(pub, address.pub, config, node_id, "pub")
    sub = ctx.socket(zmq.SUB)
    opened.append(sub)
    tune(sub)
    # A broadcast is one frame of at most the peer limit; a larger frame drops the
    # publisher's connection before it is read (zmq reconnects).
    sub.setsockopt(zmq.MAXMSGSIZE, MAX_PEER_MESSAGE_BYTES)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    peers = config.peers_of(node_id)
    redial = Redial(guard)
    redial.watch(sub, {peer: config.nodes[peer].pub for peer in peers})
    dealers: dict[int, zmq.Socket[bytes]] = {}
    for peer in peers:
        guard.connect_to(sub, peer)
        sub.connect(config.nodes[peer].pub)
        dealers[peer] = _dealer(ctx, config, guard, redial, peer, opened)
    # Closed with the others (before the context ends), and polled with them.
    opened += list(redial.monitors)
    # libzmq accepts without a cap: count and shed (limits set with the budget).
    caps: dict[zmq.Socket[bytes], AcceptCap] = {}
    for bound, name in ((router, "native"), (pub, "pub")):
        cap = AcceptCap(bound, name, 1)
        caps[cap.monitor] = cap
        opened.append(cap.monitor)
    return NodeSockets(router, pub, sub, dealers,
                       {dealer: peer for peer, dealer in dealers.items()}, redial, caps,
                       opened)


def _dealer(ctx: zmq.Context[zmq.Socket[bytes]], config: ClusterConfig, guard: Guard,
            redial: Redial, peer: int, opened: list[zmq.Socket[bytes]]) -> zmq.Socket[bytes]:
    """The DEALER to ``peer``'s ROUTER, connected."""
    dealer = ctx.socket(zmq.DEALER)
    opened.append(dealer)
    tune(dealer)
    dealer.setsockopt(zmq.MAXMSGSIZE, MAX_PEER_MESSAGE_BYTES)  # a peer's reply
    guard.connect_to(dealer, peer)
    # Queue only on live connections: a request to a dead peer fails fast and is
    # retried by the core's timers instead of piling up stale work.
    dealer.setsockopt(zmq.IMMEDIATE, 1)
    redial.watch(dealer, {peer: config.nodes[peer].router})
    dealer.connect(config.nodes[peer].router)
    return dealer


def _bind(sock: zmq.Socket[bytes], endpoint: str, config: ClusterConfig, node_id: int,
          field: str) -> None:
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        raise ConfigError(
            f"{config.source}: nodes.{node_id}.{field}: cannot bind {endpoint} "
            f"({exc.strerror})") from None
