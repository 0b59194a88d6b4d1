"""One RESP connection, sans I/O: bytes in, core requests and reply bytes out.

Theory of operation
-------------------
The runtime (:mod:`zcounter.runtime.resp`) owns the socket.  It hands what it reads to
:meth:`Session.receive`; hiredis's ``Reader`` (the parser every hiredis-based client
uses) turns the bytes into commands, however TCP cut them: a command split over reads
waits in the reader, many pipelined commands in one read are taken one by one.

Every command takes a *slot* at the tail of the connection's FIFO, at once, so replies
leave in command order whatever order they are produced in:

* commands that reveal no state (``PING``, ``ECHO``, ``CLIENT``, ``SELECT``, ``HELLO``,
  ``COMMAND``, ``AUTH``, argument errors) fill their slot at once;
* commands that read or change counters become requests of the node's core, the same
  :mod:`~zcounter.protocol.messages` the native protocol sends, tagged with a number of
  this session, and queued in :attr:`Session.requests` for the runtime to hand to
  :meth:`NodeCore.handle_request <zcounter.protocol.node.NodeCore.handle_request>`
  under this session's :class:`RespClient`.  The core's answers come back through the
  runtime's commit pipeline - so only once the batch whose state they reveal is durable -
  to :meth:`Session.deliver`, which fills the slot (one command may take several
  requests: ``MGET`` of many keys, ``DEL``, ``KEYS`` pages, ``WAIT``).  ``INFO`` and
  ``DBSIZE`` ask the core for its ``Status`` for the same reason: key counts are state.

:meth:`Session.take_output` returns the replies of the filled slots at the head of the
FIFO.  So the door needs no ordering or durability rule of its own: order comes from the
FIFO, durability from the core's outputs, which the runtime sends only after the commit.

Mapping onto the core: ``INCR``/``INCRBY``/``DECR``/``DECRBY`` are ``Add`` (``wait=local``:
durable here before the reply, like the native default); ``GET``/``MGET``/``EXISTS`` are
``Get`` asking for states, so that a key that is not live (never written, or reset) reads
as nil; ``DEL`` is a ``Get`` (was the key live?) then a ``Reset`` per key: an observed
reset; ``SCAN``/``KEYS`` are ``ListKeys`` pages; ``ZC.INCRBY``/``ZC.DEL`` carry a request
id; ``WAIT`` is a :class:`~zcounter.protocol.messages.Confirm` per key this connection
wrote and no node is yet known to hold everywhere.

Limits (every one bounded, see the constants): a command's size, the commands in flight
per connection (:data:`MAX_PIPELINE`: past it the runtime stops reading the socket), SCAN
cursors per connection, keys tracked for WAIT, WAIT's timeout.
"""

from __future__ import annotations

import hmac
import re
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import hiredis

from ...errors import ProtocolError
from ...limits import RESP_MAX_CLIENTS
from ...model.pncounter import MAX_STEP, is_live
from ..codec import MAX_KEYS_PER_GET, MAX_PAGE, validate_rid
from ..messages import (
    MAX_KEY_BYTES,
    Add,
    ClientReply,
    ClientRequest,
    Confirm,
    Counted,
    ErrorCode,
    Get,
    Held,
    KeysPage,
    ListKeys,
    Refused,
    Reset,
    Status,
    StatusReply,
)
from . import replies as R
from .commands import BY_NAME, REDIS_VERSION, SUBCOMMANDS, command_docs, command_info
from .glob import compile_glob, literal_prefix
from .info import render_info

#: A command larger than this (bytes, as sent) is a protocol error: the connection is
#: answered and closed.  Keys are at most 256 bytes, so this allows MGET/DEL of ~10,000
#: keys per command; Redis's own limit is 512 MB per argument.
MAX_COMMAND_BYTES = 4 * 1024 * 1024
#: ... and before AUTH, when a password is required (Redis refuses big unauthenticated
#: multibulks too, networking.c "unauthenticated multibulk length").
MAX_UNAUTHENTICATED_BYTES = 16 * 1024
#: Commands parsed and not yet answered; past this the runtime stops reading the socket
#: until replies have left (the client's own sends then block: TCP backpressure).
MAX_PIPELINE = 1024
#: SCAN cursors a connection may hold open; the least recently used is forgotten first
#: (continuing it then answers "ERR invalid cursor").
MAX_CURSORS = 64
#: Keys a connection may write between WAITs that confirm them everywhere.
MAX_WAIT_KEYS = 1000
#: WAIT's timeout, in ms, when the client asks for none (0) or for more.
MAX_WAIT_MS = 60_000
#: How long the core may take over a request of the door (it matters only while a node
#: bootstraps or a session catches up; plain commands are answered in one batch).
REQUEST_TIMEOUT_MS = 5000

_INT64 = re.compile(rb"-?(?:0|[1-9][0-9]{0,18})")
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_NOT_INT = "ERR value is not an integer or out of range"
_SYNTAX = "ERR syntax error"

Handler = Callable[[ClientReply], bytes | None]


class RespClient(NamedTuple):
    """How the core knows a RESP connection (``ToClient.client``): its number.  Numbers
    are never reused, so an answer for a connection that has gone is recognisably late."""

    conn: int


class BadArgument(Exception):
    """An argument the command refuses; its text is the Redis error to answer with."""


@dataclass
class Door:
    """What every session of one node shares: the node's identity, the password, the
    counters INFO and the metrics report.  Sans I/O: the runtime fills in the figures
    only it knows (``tcp_port``, ``process_id``, ``connected``)."""

    node_id: int
    cluster: tuple[int, ...]
    password: bytes | None = None
    #: Filled by the runtime: INFO's server section.
    tcp_port: int = 0
    process_id: int = 0
    started: float = 0.0
    version: str = ""
    #: peer id -> (host, port) for INFO's replication section.
    peer_addresses: dict[int, tuple[str, int]] = field(default_factory=dict)
    connected: int = 0
    #: Connections the door holds at most (INFO's maxclients): set by the runtime.
    max_clients: int = RESP_MAX_CLIENTS
    connections_received: int = 0
    rejected_connections: int = 0
    commands_processed: int = 0
    #: Sessions blocked in WAIT.
    blocked: int = 0
    protocol_errors: int = 0
    commands: dict[str, int] = field(default_factory=dict)
    #: Called with each answered command's seconds from arrival to reply (metrics).
    observe: Callable[[float], None] | None = None
    _cursor: int = 0
    _client: int = 0

    @property
    def peers(self) -> int:
        return len(self.cluster) - 1

    def next_cursor(self) -> int:
        """Cursors are numbered node-wide, so one from another connection (or one this
        connection forgot) is unknown here rather than silently someone else's."""
        self._cursor += 1
        return self._cursor

    def next_client_id(self) -> int:
        self._client += 1
        return self._client


class _Slot:
    """A command's place in the reply order; ``data`` once its reply is known."""

    __slots__ = ("data", "started")

    def __init__(self, started: float, data: bytes | None = None) -> None:
        self.started = started
        self.data = data


class _Parts:
    """A reply assembled from several core answers (``parts`` in request order)."""

    __slots__ = ("combine", "left", "parts")

    def __init__(self, n: int, combine: Callable[[list[ClientReply]], bytes]) -> None:
        self.parts: list[ClientReply | None] = [None] * n
        self.left = n
        self.combine = combine

    def handler(self, index: int) -> Handler:
        def fill(reply: ClientReply) -> bytes | None:
            self.parts[index] = reply
            self.left -= 1
            if self.left:
                return None
            parts = [p for p in self.parts if p is not None]
            for part in parts:
                if isinstance(part, Refused):
                    return _refusal(part)
            return self.combine(parts)
        return fill


class Session:
    """One connection's protocol state.  See the module docstring."""

    def __init__(self, door: Door, conn: int, now: float, address: str = "") -> None:
        self.door = door
        self.client = RespClient(conn)
        self.id = door.next_client_id()
        self.address = address
        self.created = now
        self.reader = hiredis.Reader()
        self.fifo: deque[_Slot] = deque()
        #: Core requests to hand to the core under :attr:`client`, in order (see
        #: :meth:`take_requests`).
        self.requests: list[ClientRequest] = []
        self._fed_cycle = -1
        self._waiting: dict[int, tuple[_Slot, Handler]] = {}
        self._tag = 0
        self._fed = 0
        #: Bytes fed to the reader that no complete command has covered yet (see
        #: :meth:`receive`).
        self._buf = bytearray()
        self.authenticated = door.password is None
        #: QUIT, or a protocol error: answer what came before, then close.
        self.closing = False
        #: The protocol error that closes the connection, if one did (for the log).
        self.protocol_error: str | None = None
        self.closed = False
        self.name: bytes | None = None
        self.lib_name: bytes | None = None
        self.lib_ver: bytes | None = None
        self.cursors: OrderedDict[int, str] = OrderedDict()
        #: key -> [generation of this connection's last write to it, peers known to hold it]
        self.written: dict[str, list[int]] = {}
        self.written_overflow = False
        self._generation = 0
        self._in_wait = 0
        #: The clock of the latest input or answer (INFO's uptime).
        self.now = now

    # ------------------------------------------------------------------ input

    def receive(self, data: bytes, now: float) -> None:
        """Bytes from the socket: parse and run every complete command."""
        if self.closing or self.closed:
            return  # after QUIT or a protocol error nothing more is read
        self.now = now
        # Blank lines between commands are skipped, as Redis does (an empty inline
        # command): redis-cli --pipe sends "\r\n" before its closing ECHO, and hiredis's
        # Reader would take the CR for a type byte.  Skipping them needs to know where a
        # command ends: its size, exact because hiredis accepts canonical lengths only
        # ("$04" is "Bad bulk string length"); ``_buf`` keeps the bytes not yet covered.
        buf = self._buf
        if not buf:
            data = data.lstrip(b"\r\n")
            if not data:
                return
        reader = self.reader
        reader.feed(data)
        self._fed += len(data)
        buf += data
        at = 0
        while not self.closing:
            try:
                words = reader.gets()
            except hiredis.ProtocolError:
                self._protocol_error(
                    "Protocol error: expected a RESP array of bulk strings (every Redis "
                    "client sends those; inline commands are not supported)", now)
                return
            if words is False:
                break
            # The bytes of a partial command after the last complete one are counted from
            # here: the bound errs by at most one read (64 KiB) of slack.
            self._fed = 0
            # "*-1" and "*0" (None, []) are ignored, as Redis does.
            if words is not None and (type(words) is not list
                                      or not all(type(w) is bytes for w in words)):
                self._protocol_error("Protocol error: expected '$', got something else", now)
                return
            at += _encoded_size(words)
            if at < len(buf) and buf[at] in b"\r\n":
                end = at
                while end < len(buf) and buf[end] in b"\r\n":
                    end += 1
                reader = self.reader = hiredis.Reader()
                reader.feed(bytes(buf[end:]))
                at = end
            if words:
                self._command(words, now)
        del buf[:at]
        limit = MAX_COMMAND_BYTES if self.authenticated else MAX_UNAUTHENTICATED_BYTES
        if self._fed > limit and not self.closing:
            self._protocol_error("Protocol error: "
                                 + ("too big command" if self.authenticated
                                    else "unauthenticated command too big"), now)

    def _protocol_error(self, text: str, now: float) -> None:
        self.door.protocol_errors += 1
        self.protocol_error = text
        self.fifo.append(_Slot(now, R.error(f"ERR {text}")))
        self.closing = True

    @property
    def backlog(self) -> int:
        """Commands taken and not yet answered (the runtime pauses reading past
        :data:`MAX_PIPELINE`)."""
        return len(self.fifo)

    # ------------------------------------------------------------------ output

    def take_requests(self, cycle: int) -> list[ClientRequest]:
        """The requests the runtime may hand to the core now, in poll cycle ``cycle``.

        ``ListKeys`` and ``Status`` read the keyspace's sorted index and live-key count,
        which the core brings up to date at the end of each batch (``Keyspace.flush``):
        fed in the batch of this connection's own writes they would miss them (a
        pipelined ``INCR x`` then ``KEYS *`` not listing ``x``).  So such a request goes
        first in a cycle of its own, and what follows it waits behind it (order)."""
        requests = self.requests
        if not requests:
            return []
        fresh = self._fed_cycle != cycle
        n = 0
        for request in requests:
            if type(request) in _BARRIERS and (n or not fresh):
                break
            n += 1
        if not n:
            return []
        self._fed_cycle = cycle
        taken = requests[:n]
        del requests[:n]
        return taken

    def take_output(self, now: float) -> bytes:
        """The replies that may be sent now: the filled slots at the head of the FIFO."""
        fifo = self.fifo
        if not fifo or fifo[0].data is None:
            return b""
        out: list[bytes] = []
        observe = self.door.observe
        while fifo and fifo[0].data is not None:
            slot = fifo.popleft()
            out.append(slot.data)  # type: ignore[arg-type]
            if observe is not None:
                observe(now - slot.started)
        return b"".join(out)

    @property
    def done(self) -> bool:
        """Closing, and every reply has been taken: the runtime may close the socket."""
        return self.closing and not self.fifo

    def deliver(self, reply: ClientReply, now: float) -> None:
        """The core's answer to one of this session's requests (after its commit)."""
        entry = self._waiting.pop(reply.id, None)  # type: ignore[arg-type]
        if entry is None:
            return
        slot, handler = entry
        self.now = now
        data = handler(reply)
        if data is not None:
            slot.data = data

    def close(self) -> None:
        """The connection is gone: forget everything (late answers are dropped)."""
        self.closed = True
        self.door.blocked -= self._in_wait
        self._in_wait = 0
        self._waiting.clear()
        self.requests.clear()
        self.fifo.clear()
        self.reader = hiredis.Reader()

    # ------------------------------------------------------------------ helpers

    def _ask(self, slot: _Slot, request_of: Callable[[int], ClientRequest],
             handler: Handler) -> None:
        self._tag += 1
        tag = self._tag
        self.requests.append(request_of(tag))
        self._waiting[tag] = (slot, handler)

    def _ask_parts(self, slot: _Slot, makers: Sequence[Callable[[int], ClientRequest]],
                   combine: Callable[[list[ClientReply]], bytes]) -> None:
        parts = _Parts(len(makers), combine)
        for i, make in enumerate(makers):
            self._ask(slot, make, parts.handler(i))

    def _wrote(self, key: str) -> None:
        """A write to ``key`` was sent: WAIT must confirm it."""
        self._generation += 1
        entry = self.written.get(key)
        if entry is not None:
            entry[0], entry[1] = self._generation, 0
        elif len(self.written) < MAX_WAIT_KEYS:
            self.written[key] = [self._generation, 0]
        else:
            self.written_overflow = True

    # ------------------------------------------------------------------ commands

    def _command(self, words: list[bytes], now: float) -> None:
        door = self.door
        door.commands_processed += 1
        slot = _Slot(now)
        self.fifo.append(slot)
        raw = words[0]
        name = raw.lower().decode("latin-1")
        spec = BY_NAME.get(name)
        if not self.authenticated and name not in ("auth", "hello", "quit"):
            slot.data = R.error("NOAUTH Authentication required.")
            return
        if spec is None:
            slot.data = R.error(_unknown(raw, words[1:]))
            return
        door.commands[name] = door.commands.get(name, 0) + 1
        if not spec.accepts(len(words)):
            slot.data = R.error(f"ERR wrong number of arguments for '{name}' command")
            return
        method = _HANDLERS[name]
        try:
            method(self, words, slot)
        except BadArgument as exc:
            slot.data = R.error(str(exc))

    # counters -------------------------------------------------------------

    def _add(self, slot: _Slot, key: str, amount: int, rid: str | None = None) -> None:
        if amount == 0:
            # INCRBY k 0 changes nothing: answer the count (a Get, so it waits for the
            # same commit as any read).
            self._ask(slot, lambda t: Get(t, (key,), timeout_ms=REQUEST_TIMEOUT_MS),
                      _count_reply)
            return
        self._wrote(key)
        self._ask(slot, lambda t: Add(t, key, amount, rid, timeout_ms=REQUEST_TIMEOUT_MS),
                  _count_reply)

    def cmd_incr(self, words: list[bytes], slot: _Slot) -> None:
        self._add(slot, _key(words[1]), 1)

    def cmd_decr(self, words: list[bytes], slot: _Slot) -> None:
        self._add(slot, _key(words[1]), -1)

    def cmd_incrby(self, words: list[bytes], slot: _Slot) -> None:
        self._add(slot, _key(words[1]), _step(words[2]))

    def cmd_decrby(self, words: list[bytes], slot: _Slot) -> None:
        by = _int64(words[2])
        if by == _I64_MIN:
            raise BadArgument("ERR decrement would overflow")  # Redis's own text
        self._add(slot, _key(words[1]), _step(words[2], -by))

    def cmd_zc_incrby(self, words: list[bytes], slot: _Slot) -> None:
        key, step = _key(words[1]), _step(words[2])
        rid = _rid(words[3])
        if step == 0:
            raise BadArgument(_NOT_INT)  # a request id names a change: 0 is none
        self._add(slot, key, step, rid)

    def _delete(self, slot: _Slot, keys: list[str], rid: str | None = None) -> None:
        """DEL: first Gets (which keys are live: DEL answers how many it removed), then a
        Reset per key.  The core takes them in this order within one batch, so nothing
        happens to the keys in between at this node.  A Reset answered as a duplicate
        (ZC.DEL retried) removed nothing this time."""
        chunks = _chunks(keys)
        makers = _getters(chunks)
        for key in keys:
            self._wrote(key)
            makers.append(_resetter(key, rid))

        def removed(parts: list[ClientReply]) -> bytes:
            live = _live_counts(chunks, parts)
            resets = parts[len(chunks):]
            return R.integer(sum(1 for was, reset in zip(live, resets, strict=True)
                                 if was is not None and not getattr(reset, "duplicate", False)))
        self._ask_parts(slot, makers, removed)

    def cmd_del(self, words: list[bytes], slot: _Slot) -> None:
        # DEL k k removes k once (and answers 1), as in Redis.
        self._delete(slot, list(dict.fromkeys(_key(w) for w in words[1:])))

    def cmd_zc_del(self, words: list[bytes], slot: _Slot) -> None:
        self._delete(slot, [_key(words[1])], _rid(words[2]))

    def _get(self, slot: _Slot, keys: list[str],
             combine: Callable[[list[bytes | None]], bytes]) -> None:
        chunks = _chunks(keys)
        self._ask_parts(slot, _getters(chunks),
                        lambda parts: combine(_live_counts(chunks, parts)))

    def cmd_get(self, words: list[bytes], slot: _Slot) -> None:
        self._get(slot, [_key(words[1])],
                  lambda values: R.NIL if values[0] is None else R.bulk(values[0]))

    def cmd_mget(self, words: list[bytes], slot: _Slot) -> None:
        self._get(slot, [_key(w) for w in words[1:]], R.bulk_array)

    def cmd_exists(self, words: list[bytes], slot: _Slot) -> None:
        self._get(slot, [_key(w) for w in words[1:]],
                  lambda values: R.integer(sum(v is not None for v in values)))

    # keyspace -------------------------------------------------------------

    def cmd_scan(self, words: list[bytes], slot: _Slot) -> None:
        cursor = _cursor(words[1])
        count, pattern, type_ok = 10, b"*", True
        i = 2
        while i < len(words):
            option = words[i].lower()
            if option == b"count" and i + 1 < len(words):
                count = _int64(words[i + 1])
                if count < 1:
                    raise BadArgument(_SYNTAX)
            elif option == b"match" and i + 1 < len(words):
                pattern = words[i + 1]
            elif option == b"type" and i + 1 < len(words):
                name = words[i + 1].lower()
                if name not in (b"string", b"list", b"set", b"zset", b"hash", b"stream"):
                    raise BadArgument(f"ERR unknown type name '{_text(words[i + 1])}'")
                type_ok = name == b"string"  # every counter reads as a string
            else:
                raise BadArgument(_SYNTAX)
            i += 2
        if cursor == 0:
            after = None
        else:
            try:
                after = self.cursors.pop(cursor)
            except KeyError:
                raise BadArgument("ERR invalid cursor") from None
        match = compile_glob(pattern)
        limit = min(count, MAX_PAGE)

        def page(reply: ClientReply) -> bytes:
            if isinstance(reply, Refused):
                return _refusal(reply)
            assert isinstance(reply, KeysPage)
            found = [k.encode() for k, _ in reply.entries if type_ok and match(k)]
            nxt = 0
            if reply.more and reply.entries:
                nxt = self.door.next_cursor()
                self.cursors[nxt] = reply.entries[-1][0]
                while len(self.cursors) > MAX_CURSORS:
                    self.cursors.popitem(last=False)
            return R.array([str(nxt).encode(), found])
        self._ask(slot, lambda t: ListKeys(t, literal_prefix(pattern), after, limit), page)

    def cmd_keys(self, words: list[bytes], slot: _Slot) -> None:
        pattern = words[1]
        prefix = literal_prefix(pattern)
        match = compile_glob(pattern)
        found: list[bytes] = []

        def page(reply: ClientReply) -> bytes | None:
            if isinstance(reply, Refused):
                return _refusal(reply)
            assert isinstance(reply, KeysPage)
            found.extend(k.encode() for k, _ in reply.entries if match(k))
            if reply.more and reply.entries and not self.closed:
                # The next page is asked for after this one's commit: KEYS walks the
                # keyspace in pages like SCAN (no snapshot), 10,000 keys a batch.
                last = reply.entries[-1][0]
                self._ask(slot, lambda t: ListKeys(t, prefix, last, MAX_PAGE), page)
                return None
            return R.bulk_array(found)
        self._ask(slot, lambda t: ListKeys(t, prefix, None, MAX_PAGE), page)

    def cmd_dbsize(self, words: list[bytes], slot: _Slot) -> None:
        self._ask(slot, Status, lambda r: _status(r, lambda s: R.integer(int(s["live_keys"]))))

    def cmd_info(self, words: list[bytes], slot: _Slot) -> None:
        sections = [w.decode("utf-8", "replace").lower() for w in words[1:]]
        self._ask(slot, Status, lambda r: _status(
            r, lambda s: R.bulk(render_info(sections, s, self.door, self.now))))

    # replication ----------------------------------------------------------

    def cmd_wait(self, words: list[bytes], slot: _Slot) -> None:
        wanted = _int64(words[1])
        timeout = _int64(words[2], "ERR timeout is not an integer or out of range")
        if timeout < 0:
            raise BadArgument("ERR timeout is negative")
        timeout_ms = MAX_WAIT_MS if timeout == 0 else min(timeout, MAX_WAIT_MS)
        if self.written_overflow:
            self.written.clear()
            self.written_overflow = False
            raise BadArgument(
                f"ERR WAIT cannot confirm this connection's writes: more than {MAX_WAIT_KEYS} "
                "keys were written since they were last confirmed on every node (zcounter "
                "tracks that many per connection); later writes can be confirmed again")
        written = self.written
        todo = [(k, e[0]) for k, e in written.items() if e[1] < wanted]
        if not todo:
            slot.data = R.integer(self._confirmed())
            return
        nodes = min(wanted, self.door.peers + 1) + 1  # more than exist: waits it out
        self._in_wait += 1
        self.door.blocked += 1

        def combine(parts: list[ClientReply]) -> bytes:
            for (key, generation), reply in zip(todo, parts, strict=True):
                entry = written.get(key)
                if isinstance(reply, Held) and entry is not None and entry[0] == generation:
                    entry[1] = max(entry[1], reply.nodes - 1)
            self._in_wait -= 1
            self.door.blocked -= 1
            return R.integer(self._confirmed())
        self._ask_parts(slot, [_confirmer(key, nodes, timeout_ms) for key, _ in todo], combine)

    def _confirmed(self) -> int:
        """Peers known to hold every write of this connection; keys every peer holds are
        forgotten (nothing is left to confirm for them)."""
        written = self.written
        if not written:
            return self.door.peers
        held = min(e[1] for e in written.values())
        everywhere = [k for k, e in written.items() if e[1] >= self.door.peers]
        for key in everywhere:
            del written[key]
        return held

    # connection -----------------------------------------------------------

    def cmd_ping(self, words: list[bytes], slot: _Slot) -> None:
        if len(words) > 2:
            raise BadArgument("ERR wrong number of arguments for 'ping' command")
        slot.data = R.PONG if len(words) == 1 else R.bulk(words[1])

    def cmd_echo(self, words: list[bytes], slot: _Slot) -> None:
        slot.data = R.bulk(words[1])

    def cmd_select(self, words: list[bytes], slot: _Slot) -> None:
        index = _int64(words[1])
        slot.data = R.OK if index == 0 else R.error("ERR DB index is out of range")

    def cmd_quit(self, words: list[bytes], slot: _Slot) -> None:
        slot.data = R.OK
        self.closing = True

    def _authenticate(self, user: bytes | None, password: bytes) -> str | None:
        """None if accepted, else the error to answer."""
        expected = self.door.password
        if expected is None:
            if user is None:
                return ("ERR AUTH <password> called without any password configured for the "
                        "default user. Are you sure your configuration is correct?")
            return None if user == b"default" else _WRONGPASS
        if (user is None or user == b"default") and hmac.compare_digest(password, expected):
            self.authenticated = True
            return None
        return _WRONGPASS

    def cmd_auth(self, words: list[bytes], slot: _Slot) -> None:
        if len(words) > 3:
            raise BadArgument(_SYNTAX)
        user = words[1] if len(words) == 3 else None
        failure = self._authenticate(user, words[-1])
        slot.data = R.OK if failure is None else R.error(failure)

    def cmd_hello(self, words: list[bytes], slot: _Slot) -> None:
        if len(words) >= 2:
            version = _int64(words[1], "ERR Protocol version is not an integer or out of range")
            if version != 2:
                # RESP3 is not spoken: clients that try it fall back to RESP2 on this.
                raise BadArgument("NOPROTO unsupported protocol version")
        name: bytes | None = None
        i = 2
        while i < len(words):
            option = words[i].lower()
            more = len(words) - 1 - i
            if option == b"auth" and more >= 2:
                failure = self._authenticate(words[i + 1], words[i + 2])
                if failure is not None:
                    raise BadArgument(failure)
                i += 3
            elif option == b"setname" and more >= 1:
                name = _client_name(words[i + 1])
                i += 2
            else:
                raise BadArgument("ERR Syntax error in HELLO option "
                                  f"'{words[i].decode('utf-8', 'replace')}'")
        if not self.authenticated:
            raise BadArgument(
                "NOAUTH HELLO must be called with the client already authenticated, "
                "otherwise the HELLO <proto> AUTH <user> <pass> option can be used to "
                "authenticate the client and select the RESP protocol version at the same time")
        if name is not None:
            self.name = name or None
        slot.data = R.array(["server", "zcounter", "version", REDIS_VERSION, "proto", 2,
                             "id", self.id, "mode", "standalone", "role", "master",
                             "modules", []])

    def cmd_client(self, words: list[bytes], slot: _Slot) -> None:
        sub = words[1].lower().decode("latin-1")
        spec = SUBCOMMANDS["client"].get(sub)
        if spec is None:
            raise BadArgument(_unknown_sub(words[1], "CLIENT"))
        if not spec.accepts(len(words)):
            raise BadArgument(f"ERR wrong number of arguments for '{spec.name}' command")
        if sub == "id":
            slot.data = R.integer(self.id)
        elif sub == "getname":
            slot.data = R.NIL if self.name is None else R.bulk(self.name)
        elif sub == "setname":
            self.name = _client_name(words[2]) or None
            slot.data = R.OK
        elif sub == "setinfo":
            attr = words[2].lower()
            if attr not in (b"lib-name", b"lib-ver"):
                raise BadArgument(f"ERR Unrecognized option '{_text(words[2])}'")
            if not _printable(words[3]):
                raise BadArgument(f"ERR {words[2].decode('utf-8', 'replace')} cannot contain "
                                  "spaces, newlines or special characters.")
            if attr == b"lib-name":
                self.lib_name = words[3]
            else:
                self.lib_ver = words[3]
            slot.data = R.OK
        else:
            slot.data = R.array([R.Status(line) for line in _CLIENT_HELP])

    def cmd_command(self, words: list[bytes], slot: _Slot) -> None:
        if len(words) == 1:
            slot.data = R.array(command_info())
            return
        sub = words[1].lower().decode("latin-1")
        spec = SUBCOMMANDS["command"].get(sub)
        if spec is None:
            raise BadArgument(_unknown_sub(words[1], "COMMAND"))
        if not spec.accepts(len(words)):
            raise BadArgument(f"ERR wrong number of arguments for '{spec.name}' command")
        names = [w.lower().decode("latin-1") for w in words[2:]] or None
        if sub == "count":
            slot.data = R.integer(len(BY_NAME))
        elif sub == "info":
            slot.data = R.array(command_info(names))
        elif sub == "docs":
            slot.data = R.array(command_docs(names))
        else:
            slot.data = R.array([R.Status(line) for line in _COMMAND_HELP])


# --------------------------------------------------------------------------- arguments

_BARRIERS = (ListKeys, Status)
_WRONGPASS = "WRONGPASS invalid username-password pair or user is disabled."
_CLIENT_HELP = ("CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GETNAME", "    Return the name of the current connection.",
                "ID", "    Return the ID of the current connection.",
                "SETINFO <option> <value>", "    Set client meta attr (LIB-NAME, LIB-VER).",
                "SETNAME <connection-name>", "    Assign the name <connection-name> to the "
                "current connection.", "HELP", "    Print this help.")
_COMMAND_HELP = ("COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                 "(no subcommand)", "    Return details about all commands.",
                 "COUNT", "    Return the total number of commands.",
                 "DOCS [<command-name> ...]", "    Return documentation about commands.",
                 "INFO [<command-name> ...]", "    Return details about the commands.",
                 "HELP", "    Print this help.")


def _int64(raw: bytes, message: str = _NOT_INT) -> int:
    """Redis's ``string2ll``: an optional minus, no leading zeros, no spaces, no plus,
    within signed 64 bits."""
    if _INT64.fullmatch(raw) is None:
        raise BadArgument(message)
    value = int(raw)
    if not _I64_MIN <= value <= _I64_MAX:
        raise BadArgument(message)
    return value


def _step(raw: bytes, value: int | None = None) -> int:
    """A step of INCRBY/DECRBY: an int64 (Redis's check) within zcounter's +-2**32."""
    step = _int64(raw) if value is None else value
    if not -MAX_STEP <= step <= MAX_STEP:
        raise BadArgument(_NOT_INT)
    return step


def _cursor(raw: bytes) -> int:
    """Redis's ``string2ull``: a non-negative integer, else "invalid cursor"."""
    try:
        value = _int64(raw, "ERR invalid cursor")
    except BadArgument:
        if raw.isdigit() and raw[:1] != b"0" and int(raw) < 2**64:
            return int(raw)  # beyond int64: a valid cursor for Redis, unknown here
        raise
    if value < 0:
        raise BadArgument("ERR invalid cursor")
    return value


def _key(raw: bytes) -> str:
    """A zcounter key: 1-256 bytes of UTF-8 (Redis allows any bytes; the native protocol
    and the storage need text)."""
    if not raw:
        raise BadArgument("ERR invalid key: zcounter keys are 1 to 256 bytes of UTF-8, "
                          "not empty")
    if len(raw) > MAX_KEY_BYTES:
        raise BadArgument(f"ERR invalid key: {len(raw)} bytes long, zcounter keys are at most "
                          f"{MAX_KEY_BYTES} bytes of UTF-8")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadArgument("ERR invalid key: not UTF-8 (zcounter keys are text)") from None


def _rid(raw: bytes) -> str:
    try:
        return validate_rid(raw.decode("latin-1"))
    except ProtocolError as exc:
        raise BadArgument(f"ERR invalid request id: {exc}") from None


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _printable(raw: bytes) -> bool:
    return all(0x21 <= b <= 0x7E for b in raw)


def _client_name(raw: bytes) -> bytes:
    if raw and not _printable(raw):
        raise BadArgument("ERR Client names cannot contain spaces, newlines or special "
                          "characters.")
    return raw


def _unknown(name: bytes, args: list[bytes]) -> str:
    """Redis's text (server.c, ``commandCheckExistence``): the name as sent, then the
    first arguments, quoted, until 128 characters."""
    text = ""
    for arg in args:
        if len(text) >= 128:
            break
        text += "'" + arg.decode("utf-8", "replace")[:128 - len(text)] + "' "
    return (f"ERR unknown command '{name.decode('utf-8', 'replace')[:128]}', "
            f"with args beginning with: {text}")


def _unknown_sub(sub: bytes, container: str) -> str:
    return (f"ERR unknown subcommand '{sub.decode('utf-8', 'replace')[:128]}'. "
            f"Try {container} HELP.")


# --------------------------------------------------------------------------- replies


def _refusal(reply: Refused) -> bytes:
    """A core refusal as a Redis error: overflow in Redis's words; a request that can be
    retried (nothing applied: a node catching up) as TRYAGAIN; the rest as ERR."""
    if reply.code is ErrorCode.OVERFLOW:
        return R.error("ERR increment or decrement would overflow")
    if reply.code in (ErrorCode.UNAVAILABLE, ErrorCode.BEHIND):
        return R.error(f"TRYAGAIN {reply.message}")
    return R.error(f"ERR {reply.message}")


def _count_reply(reply: ClientReply) -> bytes:
    if isinstance(reply, Counted):
        return R.integer(reply.counts[0])
    if isinstance(reply, Refused):
        return _refusal(reply)
    return R.error("ERR unexpected answer from the node")


def _encoded_size(words: list[bytes] | None) -> int:
    """Bytes of ``words`` as a RESP array of bulk strings, canonically encoded."""
    if words is None:
        return 5  # *-1\r\n
    size = 3 + len(str(len(words)))
    for word in words:
        n = len(word)
        size += n + 5 + len(str(n))
    return size


def _chunks(keys: list[str]) -> list[tuple[str, ...]]:
    return [tuple(keys[i:i + MAX_KEYS_PER_GET]) for i in range(0, len(keys), MAX_KEYS_PER_GET)]


def _getters(chunks: list[tuple[str, ...]]) -> list[Callable[[int], ClientRequest]]:
    """A Get per chunk, asking for the states: liveness is read from them."""
    return [_getter(chunk) for chunk in chunks]


def _getter(keys: tuple[str, ...]) -> Callable[[int], ClientRequest]:
    return lambda tag: Get(tag, keys, timeout_ms=REQUEST_TIMEOUT_MS, session=True)


def _resetter(key: str, rid: str | None) -> Callable[[int], ClientRequest]:
    return lambda tag: Reset(tag, key, rid, timeout_ms=REQUEST_TIMEOUT_MS)


def _confirmer(key: str, nodes: int, timeout_ms: int) -> Callable[[int], ClientRequest]:
    return lambda tag: Confirm(tag, key, nodes, timeout_ms)


def _live_counts(chunks: list[tuple[str, ...]], parts: list[ClientReply]) -> list[bytes | None]:
    """Key by key, from the Gets' answers (the first ``len(chunks)`` parts): the count
    as a bulk string's bytes, or None where the key is not live (Redis's nil)."""
    out: list[bytes | None] = []
    for chunk, part in zip(chunks, parts, strict=False):  # DEL: Resets follow the Gets
        assert isinstance(part, Counted)
        states = part.states
        for key, count in zip(chunk, part.counts, strict=True):
            state = states.get(key)
            out.append(str(count).encode() if state and is_live(state) else None)
    return out


def _status(reply: ClientReply, render: Callable[[dict[str, Any]], bytes]) -> bytes:
    if isinstance(reply, StatusReply):
        return render(reply.status)
    if isinstance(reply, Refused):
        return _refusal(reply)
    return R.error("ERR unexpected answer from the node")


_HANDLERS: dict[str, Callable[[Session, list[bytes], _Slot], None]] = {
    name: getattr(Session, "cmd_" + name.replace(".", "_")) for name in BY_NAME}

__all__ = ["MAX_COMMAND_BYTES", "MAX_CURSORS", "MAX_PIPELINE", "MAX_WAIT_KEYS", "MAX_WAIT_MS",
           "BadArgument", "Door", "RespClient", "Session"]
