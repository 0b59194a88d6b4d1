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

Each command runs through the typed table of :mod:`.dispatch` (name -> handler), one
module per command family: :mod:`.connection` (PING, ECHO, SELECT, QUIT, AUTH, HELLO,
CLIENT: answered at once), :mod:`.counters` (INCR, INCRBY, DECR, DECRBY, ZC.INCRBY: an
``Add``; GET, MGET, EXISTS: ``Get`` asking for states, so that a key that is not live
reads as nil; DEL, ZC.DEL: a ``Get`` then a ``Reset`` per key), :mod:`.keyspace` (SCAN,
KEYS: ``ListKeys`` pages), :mod:`.server` (DBSIZE, INFO: ``Status``; COMMAND) and
:mod:`.wait` (WAIT: a :class:`~zcounter.protocol.messages.Confirm` per key this
connection wrote and no node is yet known to hold everywhere).  A handler checks its
arguments (:mod:`.arguments`), then fills its :class:`~.answers.Slot` or asks the core
through :meth:`Session.ask`; this class holds the connection's state and does the rest.

Limits: what one connection makes the door hold or do, each bounded by a figure of
:mod:`zcounter.limits` (RESP section; see README "Limits"), checked one by one for issue 20:

* input: every ``*N``/``$N`` header is checked by :mod:`.framing` before hiredis sees it;
  a command past the words, bytes per word or bytes in all is a protocol error that
  closes the connection (Redis's texts); the unfinished command kept is bounded by the
  command bound, all connections' together by a node budget, and what is pipelined
  behind a WAIT by the command bound plus one read;
* commands in flight: the runtime stops reading at :data:`MAX_PIPELINE` unanswered (or
  ``RESP_MAX_QUEUED_REQUESTS`` core requests not yet handed over), so one read
  (``RESP_READ_BYTES``) past either is the most that can be added: at most ~4,700 of the
  smallest command (14 bytes), or up to ~9,000 requests (DELs of short keys);
* work per command: core requests handed per cycle, keys per MGET/EXISTS/DEL, a SCAN
  page, KEYS's pages (one per batch) and its reply's bytes, pattern bytes;
* kept for the connection's life: SCAN cursors, connection-name and client-info bytes,
  wrong passwords, keys written since the last WAIT (:data:`MAX_WAIT_KEYS`);
* WAIT blocks the connection as in Redis (nothing more is run until it is answered),
  asks at most one confirmation per key written, and the node's door holds at most
  ``RESP_MAX_WAIT_CONFIRMS_PER_NODE`` confirmations at once.

The session bounds its own input whatever its caller does; the bounds on commands in
flight are the runtime's (it stops reading: :attr:`Session.backlog`), so a caller that
keeps feeding a full session (a fuzz target) is bounded by what it feeds.

A boundary: any exception raised while handling one connection's input or answers is
caught in :meth:`Session.receive` / :meth:`Session.deliver`, answered with an error and
the connection closed; it never reaches the node's loop.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Sequence

import hiredis

from ...limits import (
    RESP_INPUT_FLOOR_BYTES,
    RESP_MAX_COMMAND_BYTES,
    RESP_MAX_CURSORS,
    RESP_MAX_INPUT_BYTES_PER_NODE,
    RESP_MAX_PIPELINE,
    RESP_MAX_QUEUED_REQUESTS,
    RESP_MAX_REQUESTS_PER_CYCLE,
    RESP_MAX_UNAUTHENTICATED_ARGUMENT_BYTES,
    RESP_MAX_UNAUTHENTICATED_ARGUMENTS,
    RESP_MAX_WAIT_KEYS,
    RESP_MAX_WAIT_MS,
    RESP_REQUEST_TIMEOUT_MS,
)
from ..messages import ClientReply, ClientRequest, ListKeys, Status
from . import replies as R
from .answers import AnswerHandler, Parts, Slot
from .arguments import BadArgument, unknown, wrong_arity
from .commands import BY_NAME
from .connection import BEFORE_AUTH
from .dispatch import HANDLERS
from .door import Door, RespClient
from .framing import FrameError, FrameLimits, Framer
from .refusals import Refusal

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
#: Requests that read what the core brings up to date at the end of a batch: each goes
#: first in a cycle of its own (see :meth:`Session.take_requests`).
_BARRIERS = (ListKeys, Status)


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
        self.fifo: deque[Slot] = deque()
        #: Core requests to hand to the core under :attr:`client`, in order (see
        #: :meth:`take_requests`).
        self.requests: list[ClientRequest] = []
        self._fed_cycle = -1
        self._fed_count = 0
        self._waiting: dict[int, tuple[Slot, AnswerHandler]] = {}
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
        self._blocked: Slot | None = None
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
        #: Writes sent so far (the generation of each key's last write: :mod:`.wait`).
        self.generation = 0
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
        self.fifo.append(Slot(now, R.error(f"ERR {text}")))
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
            self.fifo.append(Slot(now, R.error(text)))
        self._waiting.clear()
        self.requests.clear()
        self._groups.clear()
        self.closing = True

    @property
    def backlog(self) -> int:
        """Commands taken and not yet answered (the runtime pauses reading past
        :data:`MAX_PIPELINE`).  A session blocked in WAIT counts as full: nothing more is
        read from a client blocked in WAIT, as in Redis; so does one with more than
        ``RESP_MAX_QUEUED_REQUESTS`` requests not yet handed to the core (a few DELs of
        many keys are many requests)."""
        if self._blocked is not None or len(self.requests) >= RESP_MAX_QUEUED_REQUESTS:
            return MAX_PIPELINE
        return len(self.fifo)

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

    # ------------------------------------------------------------------ for the handlers

    def ask(self, slot: Slot, request_of: Callable[[int], ClientRequest],
            handler: AnswerHandler) -> None:
        """Queue the request ``request_of(tag)`` for the core; ``handler`` takes its answer."""
        self._tag += 1
        tag = self._tag
        self.requests.append(request_of(tag))
        self._waiting[tag] = (slot, handler)

    def ask_parts(self, slot: Slot, makers: Sequence[Callable[[int], ClientRequest]],
                  combine: Callable[[list[ClientReply]], bytes]) -> None:
        """One request per maker; ``combine`` makes the reply of all their answers (the
        first refusal among them is the reply instead)."""
        parts = Parts(len(makers), combine)
        for i, make in enumerate(makers):
            self.ask(slot, make, parts.handler(i))

    def block(self, slot: Slot, confirms: int, until: float) -> None:
        """Block in the WAIT of ``slot`` until it is answered: ``confirms`` confirmations
        charged to the door, held by the core until ``until`` at the latest."""
        door = self.door
        door.blocked += 1
        door.wait_confirms += confirms
        self._blocked = slot
        self._blocked_confirms = confirms
        self._blocked_until = until

    def _group(self, before: int) -> None:
        """The requests appended since ``requests`` had ``before`` are one command's."""
        added = len(self.requests) - before
        if added:
            self._groups.append(added)

    def _command(self, words: list[bytes], now: float) -> None:
        door = self.door
        door.commands_processed += 1
        slot = Slot(now)
        self.fifo.append(slot)
        raw = words[0]
        name = raw.lower().decode("latin-1")
        spec = BY_NAME.get(name)
        if not self.authenticated and name not in BEFORE_AUTH:
            slot.data = R.error("NOAUTH Authentication required.")
            return
        if spec is None:
            slot.data = R.error(unknown(raw, words[1:]))
            return
        door.commands[name] = door.commands.get(name, 0) + 1
        if not spec.accepts(len(words)):
            slot.data = R.error(wrong_arity(name))
            return
        handler = HANDLERS[name]
        before = len(self.requests)
        try:
            handler(self, words, slot)
        except BadArgument as exc:
            slot.data = R.error(str(exc))
        self._group(before)


__all__ = ["MAX_COMMAND_BYTES", "MAX_CURSORS", "MAX_PIPELINE", "MAX_WAIT_KEYS", "MAX_WAIT_MS",
           "REQUEST_TIMEOUT_MS", "UNAUTHENTICATED", "Door", "RespClient", "Session"]
