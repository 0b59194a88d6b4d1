"""The Python client: ``from zcounter import Client``.

A client is a *session*: it remembers the slots it has observed and sends them with
every request, so a node that is behind what the session saw catches up first or refuses
(read-your-writes and monotonic reads, also across nodes).  Increments carry a request id
and are retried with the same id, so a lost reply never counts twice at one node.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import secrets
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import zmq

from .config import ClusterConfig, load_config
from .errors import (
    ConfigError,
    Indeterminate,
    ProtocolError,
    RequestRefused,
    SessionBehind,
    Unavailable,
)
from .wire import (
    LEVELS,
    ClientRequest,
    GetCount,
    Increment,
    Level,
    Ping,
    Reply,
    Status,
    Tag,
    decode_reply,
    encode_request,
    validate_rid,
)

_BACKOFF_S = 0.02
#: Error codes after which the same request may be re-sent to the same node: the node
#: either applied nothing (behind, unavailable) or remembers the request id (indeterminate).
_RETRYABLE = frozenset({"indeterminate", "behind", "unavailable"})


def new_request_id() -> str:
    """A fresh random request id (96 bits, URL-safe)."""
    return secrets.token_urlsafe(12)


class Client:
    """A session with a zcounter cluster.

    ``node``: talk to this node id; ``None`` picks the first node that answers a ping.
    ``config``: a cluster file path or a :class:`ClusterConfig`; defaults to
    ``$ZCOUNTER_CONFIG``, then the built-in three-node cluster.
    ``timeout``: overall seconds per call, retries included.
    ``retries``: extra attempts on the same node after an attempt timed out.
    ``failover``: after the retries, try other nodes.  An increment whose reply was lost
    may then count twice if its first node had not yet replicated it - opt in knowingly.
    ``seen``: start from another session's observed slots (e.g. ``other.seen``), so the
    new client keeps that session's guarantees.

    To move a session to another node, call :meth:`use`: the guarantees travel with the
    ``seen`` vector, not with the connection, so the next call on the new node answers
    with at least what this session saw or raises :class:`SessionBehind`.
    """

    def __init__(self, node: int | None = None, config: str | os.PathLike[str] | ClusterConfig
                 | None = None, timeout: float = 2.0, retries: int = 2,
                 failover: bool = False, seen: Mapping[str, int] | None = None) -> None:
        self.config = config if isinstance(config, ClusterConfig) else load_config(config)
        if node is not None:
            self.config.node(node)  # raises ConfigError for unknown ids
        if not timeout > 0:
            raise ConfigError("timeout must be positive")
        if retries < 0:
            raise ConfigError("retries must be zero or more")
        self.node = node
        self.timeout = float(timeout)
        self.retries = retries
        self.failover = failover
        #: Slots this session has observed (max per slot): its causal past.
        self.seen: dict[str, int] = dict(seen or {})
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._sockets: dict[int, zmq.Socket[bytes]] = {}
        self._tags = itertools.count(1)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close(linger=0)
        self._sockets.clear()
        self._ctx.term()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------------ API

    def use(self, node: int | None) -> None:
        """Send this session's next calls to ``node`` (``None``: the first that answers).

        The session (``seen``) is kept, so read-your-writes and monotonic reads hold
        across the move.  Raises :class:`ConfigError` for a node not in the cluster.
        """
        if node is not None:
            self.config.node(node)
        self.node = node

    def increment(self, by: int = 1, wait: Level = "local", request_id: str | None = None) -> int:
        """Add ``by`` (1..2**32); return the node's count after it.

        Raises :class:`Indeterminate` if it was applied but ``wait`` was not confirmed in
        time, :class:`Unavailable` if no node answered (it may or may not have applied),
        :class:`RequestRefused` if a node refused it (certainly not applied).
        """
        if wait not in LEVELS:
            raise ConfigError(f"wait must be one of {', '.join(LEVELS)}")
        rid = validate_rid(request_id) if request_id is not None else new_request_id()
        reply = self._call(lambda tag, ms: Increment(tag, by, rid, wait, ms, dict(self.seen)),
                           "; the increment may or may not have been applied")
        assert reply.count is not None
        return reply.count

    def get_count(self, read: Level = "local") -> int:
        """Return the count after merging the states of ``read`` nodes."""
        if read not in LEVELS:
            raise ConfigError(f"read must be one of {', '.join(LEVELS)}")
        reply = self._call(lambda tag, ms: GetCount(tag, read, ms, dict(self.seen)))
        assert reply.count is not None
        return reply.count

    def status(self, node: int) -> dict[str, Any]:
        """Node ``node``'s view: count, slots, peers last heard, counters."""
        self.config.node(node)
        deadline = time.monotonic() + self.timeout
        reply = self._attempt(node, Status(next(self._tags)), deadline)
        if reply is None:
            raise Unavailable(f"node {node} did not answer within {self.timeout:g}s", node)
        return reply.status or {}

    # ------------------------------------------------------------------ plumbing

    def _socket(self, node: int) -> zmq.Socket[bytes]:
        sock = self._sockets.get(node)
        if sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            # Do not sit in the kernel's SYN backoff after a partition heals.
            sock.setsockopt(zmq.CONNECT_TIMEOUT, 1000)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
            # ZMTP heartbeats: drop a connection whose peer stopped answering (a
            # partition) and reconnect, instead of waiting on TCP's retransmit backoff.
            sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
            sock.connect(self.config.node(node).router)
            self._sockets[node] = sock
        return sock

    def _attempt(self, node: int, request: ClientRequest, deadline: float) -> Reply | None:
        """Send once; wait for the reply with this request's tag until ``deadline``."""
        sock = self._socket(node)
        try:
            sock.send(encode_request(request), zmq.NOBLOCK)
        except zmq.Again:
            return None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sock.poll(_ms(remaining), zmq.POLLIN):
                return None
            try:
                reply = decode_reply(sock.recv())
            except ProtocolError as exc:
                raise ProtocolError(f"node {node} sent a malformed reply: {exc}") from None
            if reply.id == request.id:
                return reply
            # A late reply to an earlier attempt or request: ignore it.

    def _pick_node(self, deadline: float) -> int:
        """The first node to answer a ping (the whole cluster asked at once)."""
        nodes = sorted(self.config.nodes)
        tags: dict[Tag, int] = {}
        for node in nodes:
            tag = next(self._tags)
            tags[tag] = node
            # A full send queue means that node is not answering anyway.
            with contextlib.suppress(zmq.Again):
                self._socket(node).send(encode_request(Ping(tag)), zmq.NOBLOCK)
        poller = zmq.Poller()
        for node in nodes:
            poller.register(self._socket(node), zmq.POLLIN)
        while (remaining := deadline - time.monotonic()) > 0:
            for sock, _ in poller.poll(_ms(remaining)):
                try:
                    reply = decode_reply(sock.recv())
                except ProtocolError:
                    continue
                if reply.ok and reply.id in tags:
                    return tags[reply.id]
        raise Unavailable(f"no node answered within {self.timeout:g}s "
                          f"(tried {', '.join(map(str, nodes))})")

    def _call(self, make: Callable[[int, int], ClientRequest],
              unknown_outcome: str = "") -> Reply:
        """Run one logical request with retries (same request id) and optional failover.

        The time left is shared among the attempts still allowed, and each attempt tells
        the node its share, so a negative answer arrives before we give up on it.
        A *retryable* answer (``indeterminate``, ``behind``, ``unavailable``) is retried
        on the same node while attempts and time remain: an increment re-sent with its
        request id is answered as a duplicate and simply waits again for its level, so a
        retry is never a second count, and a slow replica gets the whole timeout rather
        than one attempt's share.
        """
        start = time.monotonic()
        deadline = start + self.timeout
        node = self.node if self.node is not None else self._pick_node(deadline)
        order = [node] + ([n for n in sorted(self.config.nodes) if n != node]
                          if self.failover else [])
        tried: list[int] = []
        last_error: Exception | None = None
        for index, target in enumerate(order):
            tried.append(target)
            attempts = self.retries + 1 if index == 0 else 1
            for attempt in range(attempts):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                share = left / (attempts - attempt + len(order) - index - 1)
                request = make(next(self._tags), max(1, int(share * 1000)))
                reply = self._attempt(target, request, time.monotonic() + share)
                if reply is None:
                    backoff = _BACKOFF_S * (2 ** attempt)
                    time.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
                    continue
                if reply.ok:
                    if reply.slots:
                        seen = self.seen
                        for slot, value in reply.slots.items():
                            if value > seen.get(slot, 0):
                                seen[slot] = value
                    return reply
                last_error = _error_from(reply)
                if reply.error not in _RETRYABLE:
                    raise last_error
            if isinstance(last_error, Indeterminate):
                # Applied at ``target``: only that node surely remembers the request id,
                # so moving on could count it twice.  Stop here; it may still spread.
                break
        if last_error is not None:
            raise last_error
        raise Unavailable(f"node {', '.join(map(str, tried))} did not answer within "
                          f"{self.timeout:g}s{unknown_outcome}", node)


def _ms(seconds: float) -> int:
    # zmq polls in whole milliseconds; round up so a short remainder still waits.
    return max(1, math.ceil(seconds * 1000))


def _error_from(reply: Reply) -> Exception:
    message = f"node {reply.node}: {reply.message}"
    if reply.error == "indeterminate":
        return Indeterminate(message, reply.node)
    if reply.error == "behind":
        return SessionBehind(message, "behind", reply.node)
    return RequestRefused(message, reply.error or "refused", reply.node)
