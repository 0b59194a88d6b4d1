"""One RESP connection, sans I/O: bytes in, core requests and reply bytes out.

Theory of operation
-------------------
The runtime (:mod:`zcounter.runtime.resp`) owns the socket.  It hands what it reads to
:meth:`Session.receive`, which keeps it until :class:`~.framing.Framer` has found a whole
command in it, its headers checked against the limits; hiredis's ``Reader`` (the parser
every hiredis-based client uses) then turns that command's bytes into words.  However TCP
cut them: a command split over reads waits in the session's buffer (bounded), many
pipelined commands in one read are taken one by one.

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

Limits (all in :mod:`zcounter.limits`, RESP section; see README "Limits"):

* every ``*N``/``$N`` header is checked by :mod:`.framing` before hiredis sees it, and a
  command past the words, bytes per word or bytes in all is a protocol error that closes
  the connection (Redis's texts); the unfinished command a connection keeps is bounded by
  the command bound, and all connections' together by a node budget;
* commands in flight per connection (:data:`MAX_PIPELINE`: past it the runtime stops
  reading the socket), core requests handed per cycle, keys per MGET/EXISTS/DEL, SCAN
  cursors, pattern bytes, connection-name and client-info bytes, wrong passwords;
* WAIT blocks the connection as in Redis (nothing more is read from it until WAIT is
  answered), asks at most one confirmation per key written (:data:`MAX_WAIT_KEYS`), and the
  node's door holds at most ``RESP_MAX_WAIT_CONFIRMS_PER_NODE`` confirmations at once.

A boundary: any exception raised while handling one connection's input or answers is
caught in :meth:`Session.receive` / :meth:`Session.deliver`, answered with an error and
the connection closed; it never reaches the node's loop.
"""

from __future__ import annotations

import heapq
import hmac
import re
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import InitVar, dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import hiredis

from ...errors import ProtocolError
from ...limits import (
    RESP_INPUT_FLOOR_BYTES,
    RESP_MAX_ARGUMENT_BYTES,
    RESP_MAX_ARGUMENTS,
    RESP_MAX_AUTH_FAILURES,
    RESP_MAX_CLIENT_STRING_BYTES,
    RESP_MAX_CLIENTS,
    RESP_MAX_COMMAND_BYTES,
    RESP_MAX_CURSORS,
    RESP_MAX_INPUT_BYTES_PER_NODE,
    RESP_MAX_KEYS_PER_COMMAND,
    RESP_MAX_PATTERN_BYTES,
    RESP_MAX_PIPELINE,
    RESP_MAX_REQUESTS_PER_CYCLE,
    RESP_MAX_SLOW_MATCH_PAGE,
    RESP_MAX_UNAUTHENTICATED_ARGUMENT_BYTES,
    RESP_MAX_UNAUTHENTICATED_ARGUMENTS,
    RESP_MAX_WAIT_CONFIRMS_PER_NODE,
    RESP_MAX_WAIT_KEYS,
    RESP_MAX_WAIT_MS,
    RESP_REQUEST_TIMEOUT_MS,
)
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
from .framing import FrameError, FrameLimits, Framer
from .glob import compile_glob, is_slow, literal_prefix
from .info import render_info
from .refusals import Refusal

if TYPE_CHECKING:
    from ...config import Settings

# The session's names for the bounds (the runtime and the tests use these).
MAX_COMMAND_BYTES = RESP_MAX_COMMAND_BYTES
MAX_PIPELINE = RESP_MAX_PIPELINE
MAX_CURSORS = RESP_MAX_CURSORS
MAX_WAIT_KEYS = RESP_MAX_WAIT_KEYS
MAX_WAIT_MS = RESP_MAX_WAIT_MS
REQUEST_TIMEOUT_MS = RESP_REQUEST_TIMEOUT_MS
#: Before AUTH (when a password is set), whatever the settings: Redis's bounds.
UNAUTHENTICATED = FrameLimits(RESP_MAX_UNAUTHENTICATED_ARGUMENTS,
                              RESP_MAX_UNAUTHENTICATED_ARGUMENT_BYTES, RESP_MAX_COMMAND_BYTES)

_INT64 = re.compile(rb"-?(?:0|[1-9][0-9]{0,18})")
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_NOT_INT = "ERR value is not an integer or out of range"
_SYNTAX = "ERR syntax error"

Handler = Callable[[ClientReply], bytes | None]


class RespClient(NamedTuple):
    """How the core knows a RESP connection (``ToClient.client``): its number.  Numbers
    are never reused, so an answer for a connection that has gone is recognisably late."""

    conn: int


class BadArgument(ProtocolError):
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
    #: The node's ``[settings]``: the user-tunable RESP bounds (defaults otherwise).
    settings: InitVar[Settings | None] = None
    #: Bounds of one command once authenticated (before: :data:`UNAUTHENTICATED`).
    limits: FrameLimits = field(default=FrameLimits(
        RESP_MAX_ARGUMENTS, RESP_MAX_ARGUMENT_BYTES, RESP_MAX_COMMAND_BYTES))
    max_keys_per_command: int = RESP_MAX_KEYS_PER_COMMAND
    #: Refusals by cause (INFO ``zcounter_resp_refused_<cause>``).
    refused: dict[Refusal, int] = field(default_factory=dict)
    #: Bytes of unfinished commands kept by all sessions (bounded by
    #: ``RESP_MAX_INPUT_BYTES_PER_NODE``).
    input_bytes: int = 0
    #: Confirmations asked of the core for WAITs and not yet answered or expired.
    wait_confirms: int = 0
    #: (deadline, confirmations) of WAITs whose connection closed before their answer:
    #: the core still holds them until their timeout, so they stay charged until then.
    _orphans: list[tuple[float, int]] = field(default_factory=list)
    _cursor: int = 0
    _client: int = 0

    def __post_init__(self, settings: Settings | None) -> None:
        if settings is not None:
            self.limits = FrameLimits(RESP_MAX_ARGUMENTS, settings.resp_max_argument_bytes,
                                      settings.resp_max_command_bytes)
            self.max_keys_per_command = settings.resp_max_keys_per_command

    def refuse(self, cause: Refusal) -> None:
        self.refused[cause] = self.refused.get(cause, 0) + 1

    def confirms_free(self, now: float) -> int:
        """Confirmations a WAIT may still ask for now (expired orphans released)."""
        orphans = self._orphans
        while orphans and orphans[0][0] <= now:
            self.wait_confirms -= heapq.heappop(orphans)[1]
        return RESP_MAX_WAIT_CONFIRMS_PER_NODE - self.wait_confirms

    def orphan(self, deadline: float, confirms: int) -> None:
        heapq.heappush(self._orphans, (deadline, confirms))

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
        self.framer = Framer()
        self.fifo: deque[_Slot] = deque()
        #: Core requests to hand to the core under :attr:`client`, in order (see
        #: :meth:`take_requests`).
        self.requests: list[ClientRequest] = []
        self._fed_cycle = -1
        self._fed_count = 0
        self._waiting: dict[int, tuple[_Slot, Handler]] = {}
        self._tag = 0
        #: Input not yet run: the unfinished command (bounded by the command bound), or,
        #: while blocked in WAIT, what the client pipelined behind it.
        self._buf = bytearray()
        #: ``len(_buf)`` as charged to ``door.input_bytes``.
        self._charged = 0
        #: Requests per command, in :attr:`requests` order (a command's requests are
        #: handed to the core in one cycle: DEL's Gets and Resets stay in one batch).
        self._groups: deque[int] = deque()
        #: The WAIT this connection is blocked in (nothing more is run until it is
        #: answered, as in Redis), its confirmations and their deadline.
        self._blocked: _Slot | None = None
        self._blocked_confirms = 0
        self._blocked_until = 0.0
        self.auth_failures = 0
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
        #: The clock of the latest input or answer (INFO's uptime).
        self.now = now

    # ------------------------------------------------------------------ input

    def receive(self, data: bytes, now: float) -> None:
        """Bytes from the socket: frame, parse and run every complete command."""
        if self.closing or self.closed:
            return  # after QUIT or a protocol error nothing more is read
        self.now = now
        try:
            self._buf += data
            self._run(now)
        except Exception as exc:  # the boundary: this connection only, never the node
            self._internal_error(exc, now)
        finally:
            self._charge()

    def _run(self, now: float) -> None:
        """Run the whole commands in the input, until blocked or closing."""
        buf, framer = self._buf, self.framer
        done = 0
        while not self.closing and self._blocked is None:
            limits = self.door.limits if self.authenticated else UNAUTHENTICATED
            try:
                span = framer.next_command(buf, limits)
            except FrameError as exc:
                self._protocol_error(str(exc), exc.cause, now)
                break
            if span is None:
                done = max(done, framer.start)  # blank lines before an unfinished command
                break
            start, done = span
            if framer.words:  # "*0", "*-1": ignored, as Redis does
                words = self._parse(buf, start, done, framer.words, now)
                if words is None:
                    break
                self._command(words, now)
        if done:
            del buf[:done]
            framer.drop(done)
        if self.closing:
            return
        if self._blocked is not None:
            # The runtime reads nothing more while blocked (see :attr:`backlog`); this
            # bounds the session alone, whatever its caller does.
            if len(buf) > self.door.limits.max_command_bytes + RESP_INPUT_FLOOR_BYTES:
                self._protocol_error("Protocol error: too much input pipelined behind WAIT",
                                     Refusal.COMMAND_BYTES, now)
            return
        door = self.door
        if (len(buf) > RESP_INPUT_FLOOR_BYTES
                and door.input_bytes + len(buf) - self._charged > RESP_MAX_INPUT_BYTES_PER_NODE):
            self._protocol_error("Protocol error: too big command (the node's buffers for "
                                 "unfinished commands are full)", Refusal.INPUT_BUDGET, now)

    def _parse(self, buf: bytearray, start: int, end: int, words: int,
               now: float) -> list[bytes] | None:
        """hiredis's words of the command the framer found at ``buf[start:end]``."""
        reader = self.reader
        try:
            reader.feed(bytes(buf[start:end]))
            got = reader.gets()
            extra = reader.gets()
        except hiredis.ProtocolError as exc:
            got, extra = exc, False
        if (type(got) is not list or len(got) != words or extra is not False
                or not all(type(w) is bytes for w in got)):
            self.reader = hiredis.Reader()
            self._protocol_error("Protocol error: unparsable command", Refusal.PARSER, now)
            return None
        return got

    def _charge(self) -> None:
        """Keep ``door.input_bytes`` equal to the sum of the sessions' kept input."""
        size = 0 if self.closing or self.closed else len(self._buf)
        if self.closing or self.closed:
            self._buf.clear()
        self.door.input_bytes += size - self._charged
        self._charged = size

    def _protocol_error(self, text: str, cause: Refusal, now: float) -> None:
        """Answer ``text`` after what came before, then close."""
        self.door.protocol_errors += 1
        self.door.refuse(cause)
        self.protocol_error = text
        self.fifo.append(_Slot(now, R.error(f"ERR {text}")))
        self.closing = True

    def _internal_error(self, exc: Exception, now: float) -> None:
        """An exception escaped the handling of this connection (a bug): answer every
        command not yet answered with an error (or, if none is, add one), forget what is
        in flight, close."""
        text = f"ERR internal error ({type(exc).__name__}); closing the connection"
        self.door.protocol_errors += 1
        self.door.refuse(Refusal.INTERNAL_ERROR)
        self.protocol_error = f"internal error: {exc!r}"
        self._unblock(now, orphan=True)  # before its slot is filled: still in the core
        unanswered = [slot for slot in self.fifo if slot.data is None]
        for slot in unanswered:
            slot.data = R.error(text)
        if not unanswered:
            self.fifo.append(_Slot(now, R.error(text)))
        self._waiting.clear()
        self.requests.clear()
        self._groups.clear()
        self.closing = True

    @property
    def backlog(self) -> int:
        """Commands taken and not yet answered (the runtime pauses reading past
        :data:`MAX_PIPELINE`).  A session blocked in WAIT counts as full: nothing more is
        read from a client blocked in WAIT, as in Redis."""
        return MAX_PIPELINE if self._blocked is not None else len(self.fifo)

    # ------------------------------------------------------------------ output

    def take_requests(self, cycle: int) -> list[ClientRequest]:
        """The requests the runtime may hand to the core now, in poll cycle ``cycle``.

        Whole commands' requests only, at most :data:`RESP_MAX_REQUESTS_PER_CYCLE` of them
        unless one command alone has more (a DEL of 1,000 keys: 1,001): the rest wait for
        the next cycle, so one connection's pipeline cannot fill a batch.

        ``ListKeys`` and ``Status`` read the keyspace's sorted index and live-key count,
        which the core brings up to date at the end of each batch (``Keyspace.flush``):
        fed in the batch of this connection's own writes they would miss them (a
        pipelined ``INCR x`` then ``KEYS *`` not listing ``x``).  So such a request goes
        first in a cycle of its own, and what follows it waits behind it (order)."""
        requests = self.requests
        if not requests:
            return []
        fed = 0 if self._fed_cycle != cycle else self._fed_count  # this cycle, so far
        groups = self._groups
        n = 0
        while groups:
            size = groups[0]
            if fed + n and fed + n + size > RESP_MAX_REQUESTS_PER_CYCLE:
                break
            if type(requests[n]) in _BARRIERS and fed + n:
                break
            n += size
            groups.popleft()
        if not n:
            return []
        self._fed_cycle = cycle
        self._fed_count = fed + n
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
        if entry is None or self.closed:
            return
        slot, handler = entry
        self.now = now
        try:
            before = len(self.requests)
            data = handler(reply)
            self._group(before)
            if data is not None:
                slot.data = data
            if self._blocked is not None and self._blocked.data is not None:
                # WAIT answered: run what the client pipelined behind it.
                self._unblock(now)
                if not self.closing:
                    self._run(now)
        except Exception as exc:  # the boundary, as in receive
            self._internal_error(exc, now)
        finally:
            self._charge()

    def close(self) -> None:
        """The connection is gone: forget everything (late answers are dropped)."""
        self._unblock(self.now, orphan=True)
        self.closed = True
        self._charge()
        self._waiting.clear()
        self.requests.clear()
        self._groups.clear()
        self.fifo.clear()
        self.reader = hiredis.Reader()

    def _unblock(self, now: float, orphan: bool = False) -> None:
        """Leave WAIT: its confirmations are released, or, when the connection goes
        before they are answered (``orphan``), stay charged until their deadline."""
        if self._blocked is None:
            return
        door = self.door
        door.blocked -= 1
        if orphan and self._blocked.data is None:
            door.orphan(self._blocked_until, self._blocked_confirms)
        else:
            door.wait_confirms -= self._blocked_confirms
        self._blocked = None
        self._blocked_confirms = 0

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

    def _group(self, before: int) -> None:
        """The requests appended since ``requests`` had ``before`` are one command's."""
        added = len(self.requests) - before
        if added:
            self._groups.append(added)

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
        before = len(self.requests)
        try:
            method(self, words, slot)
        except BadArgument as exc:
            slot.data = R.error(str(exc))
        self._group(before)

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
        self._delete(slot, list(dict.fromkeys(self._keys(words))))

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
        self._get(slot, self._keys(words), R.bulk_array)

    def cmd_exists(self, words: list[bytes], slot: _Slot) -> None:
        self._get(slot, self._keys(words),
                  lambda values: R.integer(sum(v is not None for v in values)))

    def _keys(self, words: list[bytes]) -> list[str]:
        """The keys of MGET/EXISTS/DEL, at most ``max_keys_per_command`` (the loop's
        work is per key: see ``RESP_MAX_KEYS_PER_COMMAND``)."""
        limit = self.door.max_keys_per_command
        if len(words) - 1 > limit:
            raise BadArgument(f"ERR too many keys: zcounter takes at most {limit} keys per "
                              f"'{words[0].decode('latin-1').lower()}' command "
                              "(resp_max_keys_per_command)")
        return [_key(w) for w in words[1:]]

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
                pattern = self._pattern(words[i + 1])
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
        limit = min(count, _page(pattern))

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

    def _pattern(self, raw: bytes) -> bytes:
        if len(raw) > RESP_MAX_PATTERN_BYTES:
            self.door.refuse(Refusal.PATTERN_BYTES)
            raise BadArgument(f"ERR pattern too long: {len(raw)} bytes, zcounter takes at "
                              f"most {RESP_MAX_PATTERN_BYTES}")
        return raw

    def cmd_keys(self, words: list[bytes], slot: _Slot) -> None:
        pattern = self._pattern(words[1])
        prefix = literal_prefix(pattern)
        match = compile_glob(pattern)
        size = _page(pattern)
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
                self._ask(slot, lambda t: ListKeys(t, prefix, last, size), page)
                return None
            return R.bulk_array(found)
        self._ask(slot, lambda t: ListKeys(t, prefix, None, size), page)

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
        door = self.door
        if len(todo) > door.confirms_free(self.now):
            door.refuse(Refusal.WAIT_BUSY)
            raise BadArgument(
                "ERR max number of WAIT confirmations reached: this node holds "
                f"{RESP_MAX_WAIT_CONFIRMS_PER_NODE} for the connections waiting now; "
                "try again later")
        nodes = min(wanted, door.peers + 1) + 1  # more than exist: waits it out
        # Blocked, as in Redis: nothing behind this WAIT runs until it is answered, so a
        # connection holds one WAIT's confirmations at a time (1,024 pipelined WAITs
        # once fanned out into ~1M confirmations and stalled the node for minutes).
        door.blocked += 1
        door.wait_confirms += len(todo)
        self._blocked = slot
        self._blocked_confirms = len(todo)
        # The core expires its confirmations after timeout_ms from when it takes them
        # (this cycle or, past the per-cycle bound, a few later): 1 s of margin.
        self._blocked_until = self.now + timeout_ms / 1000.0 + 1.0

        def combine(parts: list[ClientReply]) -> bytes:
            for (key, generation), reply in zip(todo, parts, strict=True):
                entry = written.get(key)
                if isinstance(reply, Held) and entry is not None and entry[0] == generation:
                    entry[1] = max(entry[1], reply.nodes - 1)
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
        # Guessing is slowed to a new connection per RESP_MAX_AUTH_FAILURES tries: the
        # failure past them is answered, then the connection closed.
        self.auth_failures += 1
        self.door.refuse(Refusal.AUTH_FAILURE)
        if self.auth_failures > RESP_MAX_AUTH_FAILURES:
            self.door.refuse(Refusal.AUTH_FAILURES)
            self.protocol_error = f"{self.auth_failures} wrong passwords"
            self.closing = True
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
                name = self._client_string(words[i + 1], _BAD_NAME)
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

    def _client_string(self, raw: bytes, bad: str) -> bytes:
        """A connection name or client-info string, kept for the connection's life:
        printable (Redis's rule) and at most ``RESP_MAX_CLIENT_STRING_BYTES``."""
        if len(raw) > RESP_MAX_CLIENT_STRING_BYTES:
            self.door.refuse(Refusal.CLIENT_STRING_BYTES)
            raise BadArgument(f"ERR too long: {len(raw)} bytes, zcounter keeps at most "
                              f"{RESP_MAX_CLIENT_STRING_BYTES} per connection name or "
                              "client-info string")
        if raw and not _printable(raw):
            raise BadArgument(bad)
        return raw

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
            self.name = self._client_string(words[2], _BAD_NAME) or None
            slot.data = R.OK
        elif sub == "setinfo":
            attr = words[2].lower()
            if attr not in (b"lib-name", b"lib-ver"):
                raise BadArgument(f"ERR Unrecognized option '{_text(words[2])}'")
            self._client_string(words[3], f"ERR {words[2].decode('latin-1')} cannot contain "
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


_BAD_NAME = "ERR Client names cannot contain spaces, newlines or special characters."


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


def _page(pattern: bytes) -> int:
    """Keys a listing page takes for ``pattern``: fewer when each costs more to match."""
    return RESP_MAX_SLOW_MATCH_PAGE if is_slow(pattern) else MAX_PAGE


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
