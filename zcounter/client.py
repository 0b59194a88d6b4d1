"""The Python client: ``from zcounter import Client``.

A client is a *session*: for every key it touches it remembers the state it has
observed, and sends that (for the keys of the request only) with every request, so a
node that is behind what the session saw catches up first or refuses (read-your-writes
and monotonic reads, also across nodes).  Writes carry a request id and are retried
with the same id, so a lost reply never counts twice at one node.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from .config import ClusterConfig, load_config
from .errors import (
    AuthenticationError,
    Busy,
    ConfigError,
    Indeterminate,
    ProtocolError,
    RequestRefused,
    SessionBehind,
    Unavailable,
)
from .model.pncounter import MAX_STEP, Record, merge_into
from .protocol.codec import (
    MAX_KEYS_PER_GET,
    decode_reply,
    encode_request,
    validate_key,
    validate_rid,
)
from .protocol.messages import (
    DEFAULT_KEY,
    MAX_TTL_MS,
    Add,
    ClientReply,
    ClientRequest,
    Counted,
    ErrorCode,
    Expire,
    ExpireMode,
    Get,
    KeysPage,
    Level,
    ListKeys,
    Ping,
    Refused,
    Reset,
    States,
    Status,
    StatusReply,
    Tag,
    Ttl,
)
from .security import read_secret_certificate

_BACKOFF_S = 0.02
#: Keys a session remembers (least recently used forgotten first): forgetting a key only
#: drops the session guarantees for that key.
MAX_SESSION_KEYS = 100_000
#: Keys per page when listing.
PAGE = 1000
ENV_CERT = "ZCOUNTER_CERT"
#: Handshake events the client watches on each node socket (CurveZMQ failures).
_HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                     | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_SUCCEEDED)

LevelLike = Level | str


def new_request_id() -> str:
    """A fresh random request id (96 bits, URL-safe)."""
    return secrets.token_urlsafe(12)


def _level(value: LevelLike, name: str) -> Level:
    try:
        return Level(value)
    except ValueError:
        raise ConfigError(f"{name} must be one of {', '.join(lv.value for lv in Level)}") from None


def _key(value: Any) -> str:
    try:
        return validate_key(value)
    except ProtocolError as exc:
        raise RequestRefused(f"bad key {str(value)[:60]!r}: {exc}",
                             ErrorCode.BAD_REQUEST) from None


def _step(by: Any) -> int:
    if type(by) is not int or not 1 <= by <= MAX_STEP:
        raise RequestRefused(f"by must be an integer from 1 to 2**32, got {by!r}",
                             ErrorCode.BAD_REQUEST)
    return by


def _ttl_ms(seconds: Any, name: str = "ttl") -> int:
    """An expiry in whole ms from seconds (fractions allowed): more than 0, at most 10
    years; anything else is a bad request, refused before it is sent."""
    if (type(seconds) not in (int, float) or not math.isfinite(seconds) or seconds <= 0
            or seconds * 1000 > MAX_TTL_MS):
        raise RequestRefused(f"{name} must be a number of seconds above 0 and at most "
                             f"{MAX_TTL_MS // 1000} (10 years), got {seconds!r}",
                             ErrorCode.BAD_REQUEST)
    return max(1, round(float(seconds) * 1000))


def _mode(mode: Any) -> ExpireMode | None:
    if mode is None:
        return None
    try:
        return ExpireMode(mode.lower() if isinstance(mode, str) else mode)
    except ValueError:
        raise RequestRefused(f"mode must be one of None, 'nx', 'xx', 'gt', 'lt', got "
                             f"{mode!r}", ErrorCode.BAD_REQUEST) from None


#: Makes one attempt's write: (tag, timeout ms, key, request id, level, seen) -> request.
WriteMaker = Callable[[int, int, str, str, Level, States], ClientRequest]


class Client:
    """A session with a zcounter cluster.

    ``node``: talk to this node id; ``None`` picks the first node that answers a ping.
    ``config``: a cluster file path or a :class:`ClusterConfig`; defaults to
    ``$ZCOUNTER_CONFIG``, then the built-in three-node cluster.
    ``timeout``: overall seconds per call, retries included.
    ``retries``: extra attempts on the same node after an attempt timed out.
    ``failover``: after the retries, try other nodes.  A write whose reply was lost may
    then count twice if its first node had not yet replicated it - opt in knowingly.
    ``seen``: start from another session's observed states (e.g. ``other.seen``), so the
    new client keeps that session's guarantees.
    ``cert``: this client's secret certificate (``bin/keygen``) for a cluster in ``curve``
    mode; defaults to ``$ZCOUNTER_CERT``.  The nodes are authenticated by their public
    keys from the cluster file.

    To move a session to another node, call :meth:`use`: the guarantees travel with the
    ``seen`` states, not with the connection, so the next call on the new node answers
    with at least what this session saw or raises :class:`SessionBehind`.
    """

    def __init__(self, node: int | None = None, config: str | os.PathLike[str] | ClusterConfig
                 | None = None, timeout: float = 2.0, retries: int = 2,
                 failover: bool = False,
                 seen: Mapping[str, Mapping[str, Record]] | None = None,
                 cert: str | os.PathLike[str] | None = None) -> None:
        self.config = config if isinstance(config, ClusterConfig) else load_config(config)
        cert = cert if cert is not None else (os.environ.get(ENV_CERT) or None)
        self.cert = Path(cert) if cert is not None else None
        self._keys: tuple[bytes, bytes] | None = None
        if self.cert is not None and self.config.curve:
            self._keys = read_secret_certificate(self.cert, f"--cert / {ENV_CERT}")
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
        #: key -> {slot: (p, n, bp, bn)}: what this session has observed of each key.
        self.seen: OrderedDict[str, dict[str, Record]] = OrderedDict(
            (k, dict(v)) for k, v in (seen or {}).items())
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._sockets: dict[int, zmq.Socket[bytes]] = {}
        self._monitors: dict[int, zmq.Socket[bytes]] = {}
        #: Nodes whose handshake failed: their socket is replaced at the next call.
        self._refused: set[int] = set()
        self._tags = itertools.count(1)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        for sock in self._monitors.values():
            sock.close(linger=0)
        self._monitors.clear()
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

    def increment(self, by: int = 1, *, key: str = DEFAULT_KEY, wait: LevelLike = "local",
                  request_id: str | None = None, ttl: float | None = None) -> int:
        """Add ``by`` (1..2**32) to ``key``; return the node's count of it after.

        ``ttl``: seconds (fractions allowed, above 0, at most 10 years): give the key
        this expiry if it has none after the step, in the same durable request - Redis's
        ``INCR`` + ``EXPIRE NX``, the rate limiter in one round trip.

        Raises :class:`Indeterminate` if it was applied but ``wait`` was not confirmed in
        time, :class:`Unavailable` if no node answered (it may or may not have applied),
        :class:`RequestRefused` if a node refused it (certainly not applied).
        """
        return self._write(key, _step(by), wait, request_id, ttl)

    def decrement(self, by: int = 1, *, key: str = DEFAULT_KEY, wait: LevelLike = "local",
                  request_id: str | None = None, ttl: float | None = None) -> int:
        """Subtract ``by`` (1..2**32) from ``key``; return the count after.  Counts may go
        below zero.  ``ttl`` and errors as for :meth:`increment`."""
        return self._write(key, -_step(by), wait, request_id, ttl)

    def expire(self, key: str, seconds: float, *, mode: str | ExpireMode | None = None,
               wait: LevelLike = "local", request_id: str | None = None) -> bool:
        """Make ``key`` expire ``seconds`` from now (the answering node's clock; fractions
        allowed, above 0, at most 10 years).  ``mode``: ``"nx"`` only if it has no
        expiry, ``"xx"`` only if it has one, ``"gt"`` / ``"lt"`` only if the new one is
        later / earlier (no expiry counts as never), as Redis's EXPIRE options.  True if
        the expiry was set; False if the key does not exist or ``mode`` said no."""
        ttl_ms, how = _ttl_ms(seconds, "seconds"), _mode(mode)

        def make(tag: int, ms: int, name: str, rid: str, level: Level, seen: States
                 ) -> ClientRequest:
            return Expire(tag, name, None, how, rid, level, ms, seen, True, ttl_ms)
        return self._change(key, wait, request_id, make)

    def persist(self, key: str, *, wait: LevelLike = "local",
                request_id: str | None = None) -> bool:
        """Remove ``key``'s expiry: True if it had one, False if not (or no such key)."""
        def make(tag: int, ms: int, name: str, rid: str, level: Level, seen: States
                 ) -> ClientRequest:
            return Expire(tag, name, None, None, rid, level, ms, seen, True)
        return self._change(key, wait, request_id, make)

    def ttl(self, key: str, *, read: LevelLike = "local") -> float | None:
        """Seconds until ``key`` expires (ms precision); None if it has no expiry or
        does not exist (:meth:`pttl` tells the two apart)."""
        ms = self.pttl(key, read=read)
        return None if ms < 0 else ms / 1000

    def pttl(self, key: str, *, read: LevelLike = "local") -> int:
        """Redis's PTTL: ms until ``key`` expires, -1 without expiry, -2 if it does not
        exist, after merging the states of ``read`` nodes."""
        names = (_key(key),)
        level = _level(read, "read")
        reply = self._call(lambda tag, ms: Ttl(tag, names[0], level, ms, self._seen_of(names),
                                               True))
        return _counts(reply, 2)[0]

    def reset(self, key: str = DEFAULT_KEY, *, wait: LevelLike = "local",
              request_id: str | None = None) -> int:
        """Observed reset: ``key`` becomes 0 as of everything the answering node has seen
        of it; updates made elsewhere that it had not seen survive and still count.
        Returns the count after it (0 unless such updates arrived meanwhile)."""
        return self._write(key, 0, wait, request_id)

    def get_count(self, key: str = DEFAULT_KEY, *, read: LevelLike = "local") -> int:
        """Return ``key``'s count after merging the states of ``read`` nodes (0 for a key
        never written)."""
        return self.get_counts([key], read=read)[_key(key)]

    def get_counts(self, keys: Iterable[str], *, read: LevelLike = "local") -> dict[str, int]:
        """Counts of several keys from one request, in the order given."""
        names = tuple(dict.fromkeys(_key(k) for k in keys))
        if not names:
            return {}
        if len(names) > MAX_KEYS_PER_GET:
            raise ConfigError(f"at most {MAX_KEYS_PER_GET} keys per request, got {len(names)}")
        level = _level(read, "read")
        reply = self._call(lambda tag, ms: Get(tag, names, level, ms, self._seen_of(names), True))
        return dict(zip(names, _counts(reply, len(names)), strict=True))

    def keys(self, prefix: str = "", limit: int | None = None) -> Iterator[tuple[str, int]]:
        """``(key, count)`` of every live key starting with ``prefix``, sorted, fetched a
        page at a time (never one huge message); at most ``limit`` of them."""
        if limit is not None and limit < 0:
            raise ConfigError("limit must be zero or more")
        if prefix and len(prefix.encode("utf-8", "surrogatepass")) > 256:
            raise RequestRefused("prefix is longer than 256 bytes", ErrorCode.BAD_REQUEST)
        after: str | None = None
        left = limit
        node = self.node
        while left is None or left > 0:
            size = PAGE if left is None else min(PAGE, left)

            def make(tag: int, ms: int, after: str | None = after, size: int = size) -> ListKeys:
                return ListKeys(tag, prefix, after, size)
            reply = self._call(make, pin=node)
            if not isinstance(reply, KeysPage):
                raise _mismatch(reply, "a page of keys")
            node = reply.node  # one node's view for the whole listing
            yield from reply.entries
            if left is not None:
                left -= len(reply.entries)
            if not reply.more or not reply.entries:
                return
            after = reply.entries[-1][0]

    def status(self, node: int) -> dict[str, Any]:
        """Node ``node``'s view: keys, peers, repairs, counters."""
        self.config.node(node)
        deadline = time.monotonic() + self.timeout
        reply = self._attempt(node, Status(next(self._tags)), deadline)
        if reply is None:
            raise Unavailable(f"node {node} did not answer within {self.timeout:g}s", node)
        if isinstance(reply, Refused):
            raise _error_from(reply)
        if not isinstance(reply, StatusReply):
            raise _mismatch(reply, "its status")
        return reply.status

    # ------------------------------------------------------------------ plumbing

    def _write(self, key: str, amount: int, wait: LevelLike, request_id: str | None,
               ttl: float | None = None) -> int:
        ttl_ms = 0 if ttl is None else _ttl_ms(ttl)

        def make(tag: int, ms: int, name: str, rid: str, level: Level, seen: States
                 ) -> ClientRequest:
            if amount == 0:
                return Reset(tag, name, rid, level, ms, seen, True)
            return Add(tag, name, amount, rid, level, ms, seen, True, ttl_ms)
        return self._send_write(key, wait, request_id, make)

    def _change(self, key: str, wait: LevelLike, request_id: str | None,
                make: WriteMaker) -> bool:
        """An Expire: its count is 1 if it changed the key's expiry."""
        return self._send_write(key, wait, request_id, make) == 1

    def _send_write(self, key: str, wait: LevelLike, request_id: str | None,
                    make: WriteMaker) -> int:
        """One write with its request id (the same in every attempt); its one count."""
        name = _key(key)
        level = _level(wait, "wait")
        rid = validate_rid(request_id) if request_id is not None else new_request_id()
        keys = (name,)
        reply = self._call(lambda tag, ms: make(tag, ms, name, rid, level,
                                                self._seen_of(keys)),
                           "; it may or may not have been applied")
        return _counts(reply, 1)[0]

    def _seen_of(self, keys: tuple[str, ...]) -> States:
        seen = self.seen
        return {k: seen[k] for k in keys if k in seen}

    def _observe(self, states: States) -> None:
        seen = self.seen
        for key, state in states.items():
            mine = seen.get(key)
            if mine is None:
                seen[key] = dict(state)
                if len(seen) > MAX_SESSION_KEYS:
                    seen.popitem(last=False)
                continue
            seen.move_to_end(key)
            merge_into(mine, state)

    def _socket(self, node: int) -> zmq.Socket[bytes]:
        sock = self._sockets.get(node)
        if sock is not None and node in self._refused:
            # libzmq never connects again after a failed handshake (see
            # zcounter.runtime.auth.Redial): a fresh socket, so a key authorized since
            # the refusal works on this client's next call.
            self._refused.discard(node)
            self._monitors.pop(node).close(linger=0)
            del self._sockets[node]
            sock.close(linger=0)
            sock = None
        if sock is None:
            address = self.config.node(node)
            if self.config.curve and self._keys is None:
                raise AuthenticationError(
                    f"node {node}: the cluster ({self.config.source}) is in curve mode and "
                    f"this client has no certificate (--cert FILE or {ENV_CERT})", node)
            sock = self._ctx.socket(zmq.DEALER)
            if self._keys is not None:
                sock.curve_publickey, sock.curve_secretkey = self._keys
                assert address.public_key is not None
                sock.curve_serverkey = address.public_key
            # Handshake failures (a refused key, a wrong node key) end a call at once
            # with the reason, instead of a silent timeout.
            self._monitors[node] = sock.get_monitor_socket(_HANDSHAKE_EVENTS)
            sock.setsockopt(zmq.LINGER, 0)
            # Do not sit in the kernel's SYN backoff after a partition heals.
            sock.setsockopt(zmq.CONNECT_TIMEOUT, 1000)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
            # ZMTP heartbeats: drop a connection whose peer stopped answering (a
            # partition) and reconnect, instead of waiting on TCP's retransmit backoff.
            sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
            sock.connect(address.router)
            self._sockets[node] = sock
        return sock

    def _check_handshake(self, node: int) -> None:
        """Raise :class:`AuthenticationError` if a handshake with ``node`` failed."""
        monitor = self._monitors.get(node)
        while monitor is not None and monitor.poll(0):
            event = recv_monitor_message(monitor)["event"]
            if event != zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._refused.add(node)
            if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                raise AuthenticationError(
                    f"node {node} refused this client's key ({self.cert}): it is not among "
                    "the node's authorized client keys", node)
            if event in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                         zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
                if self.config.curve:
                    key_file = self.config.node(node).public_key_file
                    raise AuthenticationError(
                        f"node {node}: secure handshake failed: the node's public key "
                        f"({key_file}) does not match the node, or the node is not in "
                        "curve mode", node)
                raise AuthenticationError(
                    f"node {node}: handshake failed: the node requires CurveZMQ keys but "
                    f"the cluster file ({self.config.source}) says security mode none", node)

    def _attempt(self, node: int, request: ClientRequest, deadline: float) -> ClientReply | None:
        """Send once; wait for the reply with this request's tag until ``deadline``."""
        sock = self._socket(node)
        try:
            sock.send(encode_request(request), zmq.NOBLOCK)
        except zmq.Again:
            return None
        monitor = self._monitors[node]
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        while True:
            remaining = deadline - time.monotonic()
            ready = dict(poller.poll(_ms(remaining))) if remaining > 0 else {}
            if monitor in ready:
                self._check_handshake(node)
            if sock not in ready:
                if remaining <= 0 or not ready:
                    return None
                continue
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
        monitors = {}
        for node in nodes:
            poller.register(self._socket(node), zmq.POLLIN)
            poller.register(self._monitors[node], zmq.POLLIN)
            monitors[self._monitors[node]] = node
        refused: list[AuthenticationError] = []
        while (remaining := deadline - time.monotonic()) > 0:
            for sock, _ in poller.poll(_ms(remaining)):
                if sock in monitors:
                    try:
                        self._check_handshake(monitors[sock])
                    except AuthenticationError as exc:
                        refused.append(exc)
                        poller.unregister(sock)
                        if len(refused) == len(nodes):
                            raise refused[0] from None
                    continue
                try:
                    reply = decode_reply(sock.recv())
                except ProtocolError:
                    continue
                if not isinstance(reply, Refused) and reply.id in tags:
                    return tags[reply.id]
        if refused:
            raise refused[0]
        raise Unavailable(f"no node answered within {self.timeout:g}s "
                          f"(tried {', '.join(map(str, nodes))})")

    def _call(self, make: Callable[[int, int], ClientRequest], unknown_outcome: str = "",
              pin: int | None = None) -> ClientReply:
        """Run one logical request with retries (same request id) and optional failover.

        The time left is shared among the attempts still allowed, and each attempt tells
        the node its share, so a negative answer arrives before we give up on it.
        A *retryable* answer (``indeterminate``, ``behind``, ``unavailable``) is retried
        on the same node while attempts and time remain: a write re-sent with its
        request id is answered as a duplicate and simply waits again for its level, so a
        retry is never a second count, and a slow replica gets the whole timeout rather
        than one attempt's share.
        """
        start = time.monotonic()
        deadline = start + self.timeout
        node = pin if pin is not None else (
            self.node if self.node is not None else self._pick_node(deadline))
        order = [node] + ([n for n in sorted(self.config.nodes) if n != node]
                          if self.failover and pin is None else [])
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
                if not isinstance(reply, Refused):
                    if isinstance(reply, Counted) and reply.states:
                        self._observe(reply.states)
                    return reply
                last_error = _error_from(reply)
                if not reply.code.retryable:
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


def _mismatch(reply: ClientReply, wanted: str) -> ProtocolError:
    what = (f"{len(reply.counts)} counts" if isinstance(reply, Counted)
            else type(reply).__name__)
    return ProtocolError(f"node {reply.node} answered with {what}, not {wanted}")


def _counts(reply: ClientReply, n: int) -> tuple[int, ...]:
    """The counts of a reply that must carry exactly ``n`` of them (one per key asked);
    anything else is the node's protocol error, never a silently shorter answer."""
    if not isinstance(reply, Counted) or len(reply.counts) != n:
        raise _mismatch(reply, f"{n} count{'s' if n != 1 else ''}")
    return reply.counts


def _error_from(reply: Refused) -> Exception:
    # ``reply.code`` is an ErrorCode already: a code this client does not know (a newer
    # node's) never gets here, decode_reply makes it a ProtocolError that _attempt
    # raises at once - neither retried nor sent to another node, since nothing says
    # whether the request was applied (a second node could count it twice).
    message = f"node {reply.node}: {reply.message}"
    if reply.code is ErrorCode.INDETERMINATE:
        return Indeterminate(message, reply.node)
    if reply.code is ErrorCode.BEHIND:
        return SessionBehind(message, reply.code, reply.node)
    if reply.code is ErrorCode.BUSY:
        return Busy(f"busy: {message}", reply.code, reply.node)
    return RequestRefused(message, reply.code, reply.node)
