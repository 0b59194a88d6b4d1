"""In-process fuzz targets: one function per parser, each taking bytes.

A target returns normally for every input its door is meant to survive, and raises
:class:`TargetFailed` (or lets any other exception escape) when the input found a bug.
What a door may answer with is part of its contract, so each target states which
exceptions are *expected* (a ``ProtocolError`` from a decoder is the door working, a
``MemoryError`` out of ``Session.receive`` is the node dying, issue 19):

* :func:`resp_session` - one RESP connection (:class:`~zcounter.protocol.resp.session.
  Session`, sans I/O) in front of a real node core: nothing may escape ``receive``,
  every request it makes is handled by the core, every answer delivered, and the reply
  bytes must parse as RESP.
* :func:`native_request` - the client door's codec (``decode_request``), then the core:
  only ``ProtocolError`` may leave the decoder, nothing may leave the core.
* :func:`peer_message` - the first byte picks the decoder (broadcast, peer reply, peer
  request: the SUB socket, the DEALER and the ROUTER's peer operations); a decoded
  message goes to the core as the runtime would hand it.
* :func:`config_file` - the bytes as a cluster file: only ``ConfigError`` may escape
  ``load_config``.
* The metrics HTTP handler is a real socket; its target is :class:`MetricsTarget`
  (:mod:`zcounter.fuzz.metrics`), a callable of the same shape.

Every target is deterministic (no clock, no randomness): a saved input replays exactly.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import hiredis

from ..config import Settings, load_config
from ..errors import ConfigError, ProtocolError
from ..model.keyspace import Keyspace
from ..protocol import codec
from ..protocol.messages import Holding, RidPage, StatesReply, SyncDiff, SyncStates
from ..protocol.node import NodeCore
from ..protocol.outputs import ToClient
from ..protocol.resp.session import Door, Session

Target = Callable[[bytes], None]

#: The core a target talks to: node 1 of three, never bootstrapping (so requests are
#: answered at once), peers never answer (``wait=local`` is what the doors default to).
CLUSTER = (1, 2, 3)
#: Poll cycles a target runs after the input: enough for a request that needs two
#: (``KEYS`` pages, ``DEL``'s read then reset) and bounded whatever the input asks.
CYCLES = 8
#: Bytes a target's input is cut to: a fuzzer's input is its own bound, this is the
#: live fuzzer's sizes (:mod:`zcounter.fuzz.grammar`) with room to spare.
MAX_INPUT_BYTES = 1 << 20


class TargetFailed(AssertionError):
    """The input broke a door's contract (an unexpected exception, a bad reply)."""


#: Keys every target's core starts with: a long run of one letter is what makes a
#: backtracking glob (``*a*a*a...b``) slow, so the pattern code has something to chew on.
SEED_KEYS: tuple[str, ...] = ("a", "b", "k:1", "a" * 200, "\u00e9t\u00e9")


def fresh_core() -> NodeCore:
    keys = Keyspace()
    for key in SEED_KEYS:
        keys.merge(key, {"2.000000000002": (3, 1, 0, 0)})
    keys.flush()
    return NodeCore(1, list(CLUSTER), "000000000001", "fuzz", Settings(), 0.0, keys)


def _replies_of(core: NodeCore, now: float) -> list[ToClient]:
    core.tick(now)
    return [m for m in core.take_outputs().messages if isinstance(m, ToClient)]


# --------------------------------------------------------------------------- RESP


def resp_session(data: bytes, password: bytes | None = None) -> None:
    """Feed ``data`` to one RESP session (in chunks, as TCP may cut it) before a node
    core; run the cycles; check the replies are valid RESP."""
    data = data[:MAX_INPUT_BYTES]
    core = fresh_core()
    door = Door(1, CLUSTER, password)
    session = Session(door, 1, 0.0, "127.0.0.1:1")
    out = bytearray()
    now = 0.0
    # Cut the input where the bytes themselves say (a byte value), so the same input
    # always splits the same way and a fuzzer can explore the cuts.
    cut = 1 + (data[0] % 64) if data else 1
    pieces = [data[i:i + cut * 997] for i in range(0, len(data), cut * 997)] or [b""]
    for cycle, piece in enumerate(pieces + [b""] * CYCLES):
        now += 0.001
        try:
            if piece:
                session.receive(piece, now)
        except Exception as exc:
            raise TargetFailed(f"Session.receive raised {type(exc).__name__}: {exc}") from exc
        for request in session.take_requests(cycle):
            core.handle_request(session.client, request, now)
        for message in _replies_of(core, now):
            if message.client == session.client:
                session.deliver(message.reply, now)  # type: ignore[arg-type]
        out += session.take_output(now)
        if session.done:
            break
    session.close()
    _check_resp(bytes(out))


def _check_resp(out: bytes) -> None:
    reader = hiredis.Reader()
    reader.feed(out)
    try:
        while reader.gets() is not False:
            pass
    except hiredis.ProtocolError as exc:
        raise TargetFailed(f"the door's replies are not valid RESP: {exc}") from exc
    if reader.has_data():
        raise TargetFailed("the door's replies end inside a reply")


# --------------------------------------------------------------------------- native


def native_request(data: bytes) -> None:
    """One frame on the client door: decode it (only ``ProtocolError`` may escape), let
    the core handle it as a client's (or, for a peer operation, a peer's) request, and
    encode every answer."""
    try:
        request = codec.decode_request(data[:MAX_INPUT_BYTES])
    except ProtocolError:
        codec.request_tag(data)  # the runtime's refusal names the tag it can find
        return
    core = fresh_core()
    client = b"fuzz-client"
    core.handle_request(client, request, 0.001)
    for message in _replies_of(core, 0.001):
        _encode(message)


def _encode(message: ToClient) -> None:
    reply = message.reply
    if isinstance(reply, (StatesReply, SyncDiff, SyncStates, RidPage, Holding)):
        codec.encode_peer_reply(reply)
    else:
        codec.encode_reply(reply)


# --------------------------------------------------------------------------- peers

#: First byte of a :func:`peer_message` input (mod 3): which peer path it takes.
PEER_PATHS = ("broadcast", "peer_reply", "peer_request")


def peer_message(data: bytes) -> None:
    """A message from a peer: byte 0 picks the path (:data:`PEER_PATHS`), the rest is
    the frame.  Decoded messages go to a core as node 3's."""
    if not data:
        return
    path = PEER_PATHS[data[0] % len(PEER_PATHS)]
    frame = data[1:MAX_INPUT_BYTES]
    core = fresh_core()
    now = 0.001
    try:
        if path == "broadcast":
            broadcast = codec.decode_broadcast(frame)
            core.handle_broadcast(broadcast, now)
        elif path == "peer_reply":
            reply = codec.decode_peer_reply(frame)
            core.handle_peer_reply(reply, now)
        else:
            request = codec.decode_request(frame)
            core.handle_request(("peer", 3), request, now)
    except ProtocolError:
        return
    for message in _replies_of(core, now):
        _encode(message)


# --------------------------------------------------------------------------- config


def config_file(data: bytes) -> None:
    """``data`` as a cluster file in a fresh directory: ``load_config`` returns a
    configuration or raises ``ConfigError``; nothing else may escape."""
    with tempfile.TemporaryDirectory(prefix="zc-fuzz-config-") as tmp:
        path = Path(tmp) / "cluster.toml"
        path.write_bytes(data[:MAX_INPUT_BYTES])
        # Relative paths in the file resolve inside the temporary directory; an absolute
        # one (a fuzzer would need to spell it out) is read as an operator's would be.
        with contextlib.suppress(ConfigError):
            load_config(os.fspath(path))


#: The in-process targets by door name (the metrics door's is a real socket).
IN_PROCESS: dict[str, Target] = {
    "resp": resp_session,
    "native": native_request,
    "peer": peer_message,
    "config": config_file,
}

__all__ = ["IN_PROCESS", "PEER_PATHS", "Target", "TargetFailed", "config_file", "fresh_core",
           "native_request", "peer_message", "resp_session"]
