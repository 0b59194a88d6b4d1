"""Message types and their JSON encoding, with validation at the boundary.

Every message is a frozen dataclass.  ``decode_*`` functions turn untrusted bytes
into those dataclasses or raise :class:`~zcounter.errors.ProtocolError` naming the
problem; nothing past this module sees raw JSON.  Encoding is orjson.

Three conversations use these types:

* client -> node, over the node's ROUTER (the client is a DEALER), one frame each way:
  :class:`Increment`, :class:`GetCount`, :class:`Status`, :class:`Ping`; answered by
  :class:`Reply`.  ``id`` is the caller's correlation tag, echoed back verbatim so a
  client may keep many requests in flight on one socket.
* node -> node requests, over the same ROUTER from each peer's DEALER:
  :class:`Pull` (send me your state) and :class:`Push` (merge this and tell me when it is
  committed), both answered by :class:`PeerReply` carrying the answering node's state.
* node -> all peers, over PUB/SUB: :class:`Update` (my slot grew, with the request ids
  that grew it) and :class:`Heartbeat` (I am alive; my own slots; digest of my state).

Peer messages use one-letter keys because they are the hot path of replication.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from .crdt import MAX_COUNT, MAX_INCREMENT, slot_node
from .errors import ProtocolError

Level = Literal["local", "majority", "all"]
LEVELS: tuple[Level, ...] = ("local", "majority", "all")

#: Requests larger than this are refused with an error reply (checked before parsing).
MAX_REQUEST_BYTES = 64 * 1024
#: Peer messages larger than this are dropped (a push of many request ids stays below).
MAX_PEER_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_SLOTS = 100_000
MAX_RIDS_PER_MESSAGE = 20_000
MAX_TIMEOUT_MS = 10 * 60 * 1000

#: Shared, never mutated: the "seen" of requests that carry none.
_NO_SLOTS: dict[str, int] = {}

_RID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")

Tag = str | int | None
Slots = dict[str, int]


# --------------------------------------------------------------------------- client side


@dataclass(frozen=True, slots=True)
class Increment:
    """Add ``by`` to the count; acknowledge once ``wait`` nodes hold it durably."""

    id: Tag
    by: int = 1
    rid: str | None = None
    wait: Level = "local"
    timeout_ms: int = 2000
    seen: Slots = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GetCount:
    """Read the count after merging the states of ``read`` nodes (self included)."""

    id: Tag
    read: Level = "local"
    timeout_ms: int = 2000
    seen: Slots = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Status:
    """Ask for the node's view: count, slots, when it last heard each peer."""

    id: Tag


@dataclass(frozen=True, slots=True)
class Ping:
    """Cheapest possible request: used to find a node that answers."""

    id: Tag


ClientRequest = Increment | GetCount | Status | Ping


@dataclass(frozen=True, slots=True)
class Reply:
    """A node's answer to a client request.

    ``ok`` replies carry ``count`` and the node's ``slots`` (so sessions can track what
    they observed).  Failed ones carry ``error`` (a code) and ``message`` (for humans).
    """

    id: Tag
    node: int
    ok: bool
    count: int | None = None
    slots: Slots | None = None
    duplicate: bool = False
    error: str | None = None
    message: str | None = None
    status: dict[str, Any] | None = None


# --------------------------------------------------------------------------- peer side


@dataclass(frozen=True, slots=True)
class Pull:
    """Peer request: send me your whole state (a snapshot), and the request ids you
    remember after ``rids_after`` in your rid log ``rid_epoch`` (both from your last
    answer; anything else starts from your oldest id)."""

    id: int
    origin: int
    rid_epoch: str = ""
    rids_after: int = 0


@dataclass(frozen=True, slots=True)
class Push:
    """Peer request: merge these slots and request ids, answer once committed."""

    id: int
    origin: int
    slots: Slots
    rids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PeerReply:
    """Answer to Pull or Push: the answering node's state after handling it."""

    id: int
    node: int
    slots: Slots
    #: Pull answers only: (rid, slot, value) entries of the answering node's rid log,
    #: the log's epoch, the position of the last entry sent, and whether more follow.
    rids: tuple[tuple[str, str, int], ...] = ()
    rid_epoch: str = ""
    rid_cursor: int = 0
    rid_more: bool = False


@dataclass(frozen=True, slots=True)
class Update:
    """Broadcast: the origin's own slots grew; ``rids`` are the request ids applied."""

    origin: int
    seq: int
    slots: Slots
    rids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Broadcast: liveness, the origin's own slots and a digest of its whole state."""

    origin: int
    seq: int
    slots: Slots
    digest: str


PeerRequest = Pull | Push
Broadcast = Update | Heartbeat


# --------------------------------------------------------------------------- validation


def _loads(data: bytes, limit: int) -> dict[str, Any]:
    if len(data) > limit:
        raise ProtocolError(f"message too large ({len(data)} bytes, limit {limit})")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("message must be a JSON object")
    return obj


def _int(obj: dict[str, Any], key: str, lo: int, hi: int, default: int | None = None) -> int:
    value = obj.get(key, default)
    if value is None:
        raise ProtocolError(f"missing field {key!r}")
    # bool is an int subclass in Python; a JSON true is not a number.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(f"field {key!r} must be an integer")
    if not lo <= value <= hi:
        raise ProtocolError(f"field {key!r} must be between {lo} and {hi}, got {value}")
    return value


def _node_id(obj: dict[str, Any], key: str) -> int:
    return _int(obj, key, 1, 999_999_999)


def _level(obj: dict[str, Any], key: str) -> Level:
    value = obj.get(key, "local")
    if value not in LEVELS:
        raise ProtocolError(f"field {key!r} must be one of local, majority, all")
    return value  # type: ignore[no-any-return]


def _tag(obj: dict[str, Any]) -> Tag:
    value = obj.get("id")
    if value is None or (isinstance(value, str) and len(value) <= 128):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_COUNT:
        return value
    raise ProtocolError("field 'id' must be a string of at most 128 characters or an integer")


def validate_slots(value: Any, key: str = "slots") -> Slots:
    """Check a slot map: well-formed keys, integer values in 0..2**63-1, bounded size."""
    if not isinstance(value, dict):
        raise ProtocolError(f"field {key!r} must be an object")
    if len(value) > MAX_SLOTS:
        raise ProtocolError(f"field {key!r} has too many slots")
    total = 0
    for slot, count in value.items():
        if slot_node(slot) is None:
            raise ProtocolError(f"malformed slot key {slot[:40]!r}")
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= MAX_COUNT:
            raise ProtocolError(f"slot {slot!r} must hold an integer in 0..2**63-1")
        total += count
    if total > MAX_COUNT:
        raise ProtocolError(f"field {key!r} sums past 2**63-1")
    return value


def validate_rid(value: Any) -> str:
    if not isinstance(value, str) or not _RID_RE.match(value):
        raise ProtocolError(
            "request id must be 1-64 characters of letters, digits, '.', '_', ':' or '-'"
        )
    return value


def _rids(obj: dict[str, Any], key: str) -> tuple[str, ...]:
    value = obj.get(key, [])
    if not isinstance(value, list) or len(value) > MAX_RIDS_PER_MESSAGE:
        raise ProtocolError(f"field {key!r} must be a list of request ids")
    return tuple(validate_rid(rid) for rid in value)


# --------------------------------------------------------------------------- client codec


def decode_request(frames: list[bytes]) -> ClientRequest | PeerRequest:
    """Decode what a ROUTER received after the routing id: exactly one frame."""
    if len(frames) != 1:
        raise ProtocolError(f"expected 1 frame after the routing id, got {len(frames)}")
    obj = _loads(frames[0], MAX_PEER_MESSAGE_BYTES)
    op = obj.get("op")
    if op in ("pull", "push"):
        # Peers are trusted; their size bound is the larger peer one.
        return _decode_peer_request(op, obj)
    if len(frames[0]) > MAX_REQUEST_BYTES:
        raise ProtocolError(
            f"request too large ({len(frames[0])} bytes, limit {MAX_REQUEST_BYTES})")
    tag = _tag(obj)
    if op == "increment":
        by = obj.get("by", 1)
        if type(by) is not int or not 1 <= by <= MAX_INCREMENT:  # the common case is cheap
            by = _int(obj, "by", 1, MAX_INCREMENT, default=1)  # ... and this names the error
        rid = obj.get("rid")
        seen = obj.get("seen")
        return Increment(
            tag, by, None if rid is None else validate_rid(rid), _level(obj, "wait"),
            _int(obj, "timeout_ms", 1, MAX_TIMEOUT_MS, default=2000),
            _NO_SLOTS if seen is None else validate_slots(seen, "seen"))
    if op in ("get", "getCount"):
        return GetCount(
            id=tag,
            read=_level(obj, "read"),
            timeout_ms=_int(obj, "timeout_ms", 1, MAX_TIMEOUT_MS, default=2000),
            seen=validate_slots(obj.get("seen", {}), "seen"),
        )
    if op == "status":
        return Status(id=tag)
    if op == "ping":
        return Ping(id=tag)
    if op is None:
        raise ProtocolError("missing field 'op'")
    raise ProtocolError(f"unknown operation {str(op)[:40]!r}")


def request_tag(frame: bytes) -> Tag:
    """Best-effort correlation tag of a request that failed to decode (None if unknown)."""
    try:
        obj = orjson.loads(frame) if len(frame) <= MAX_REQUEST_BYTES else None
        return _tag(obj) if isinstance(obj, dict) else None
    except (orjson.JSONDecodeError, ProtocolError):
        return None


def encode_request(request: ClientRequest) -> bytes:
    if isinstance(request, Increment):
        obj: dict[str, Any] = {
            "op": "increment", "id": request.id, "by": request.by, "wait": request.wait,
            "timeout_ms": request.timeout_ms,
        }
        if request.rid is not None:
            obj["rid"] = request.rid
        if request.seen:
            obj["seen"] = request.seen
    elif isinstance(request, GetCount):
        obj = {"op": "get", "id": request.id, "read": request.read,
               "timeout_ms": request.timeout_ms}
        if request.seen:
            obj["seen"] = request.seen
    elif isinstance(request, Status):
        obj = {"op": "status", "id": request.id}
    else:
        obj = {"op": "ping", "id": request.id}
    return orjson.dumps(obj)


def encode_reply(reply: Reply) -> bytes:
    obj: dict[str, Any] = {"id": reply.id, "node": reply.node, "ok": reply.ok}
    if reply.ok:
        obj["count"] = reply.count
        if reply.slots is not None:
            obj["slots"] = reply.slots
        if reply.duplicate:
            obj["duplicate"] = True
        if reply.status is not None:
            obj["status"] = reply.status
    else:
        obj["error"] = reply.error
        obj["message"] = reply.message
    return orjson.dumps(obj)


def decode_reply(data: bytes) -> Reply:
    """Decode a node's reply (client side): anything malformed is a ProtocolError."""
    obj = _loads(data, MAX_PEER_MESSAGE_BYTES)
    ok = obj.get("ok")
    if not isinstance(ok, bool):
        raise ProtocolError("reply has no boolean 'ok'")
    node = _node_id(obj, "node")
    tag = _tag(obj)
    if not ok:
        error, message = obj.get("error"), obj.get("message")
        if not isinstance(error, str) or not isinstance(message, str):
            raise ProtocolError("error reply needs string 'error' and 'message'")
        return Reply(id=tag, node=node, ok=False, error=error, message=message)
    status = obj.get("status")
    if status is not None and not isinstance(status, dict):
        raise ProtocolError("'status' must be an object")
    slots = obj.get("slots")
    return Reply(
        id=tag, node=node, ok=True,
        count=_int(obj, "count", 0, MAX_COUNT),
        slots=None if slots is None else validate_slots(slots),
        duplicate=bool(obj.get("duplicate", False)),
        status=status,
    )


# --------------------------------------------------------------------------- peer codec


def _decode_peer_request(op: str, obj: dict[str, Any]) -> PeerRequest:
    req_id = _int(obj, "id", 0, MAX_COUNT)
    origin = _node_id(obj, "n")
    if op == "pull":
        epoch = obj.get("e", "")
        if not isinstance(epoch, str) or len(epoch) > 64:
            raise ProtocolError("field 'e' must be a short string")
        return Pull(id=req_id, origin=origin, rid_epoch=epoch,
                    rids_after=_int(obj, "a", 0, MAX_COUNT, 0))
    return Push(id=req_id, origin=origin, slots=validate_slots(obj.get("s"), "s"),
                rids=_rids(obj, "r"))


def encode_peer_request(request: PeerRequest) -> bytes:
    if isinstance(request, Pull):
        return orjson.dumps({"op": "pull", "id": request.id, "n": request.origin,
                             "e": request.rid_epoch, "a": request.rids_after})
    return orjson.dumps({"op": "push", "id": request.id, "n": request.origin,
                         "s": request.slots, "r": list(request.rids)})


def encode_peer_reply(reply: PeerReply) -> bytes:
    obj: dict[str, Any] = {"id": reply.id, "n": reply.node, "s": reply.slots}
    if reply.rid_epoch:
        obj.update(r=[list(e) for e in reply.rids], e=reply.rid_epoch, c=reply.rid_cursor,
                   m=reply.rid_more)
    return orjson.dumps(obj)


def decode_peer_reply(data: bytes) -> PeerReply:
    obj = _loads(data, MAX_PEER_MESSAGE_BYTES)
    raw = obj.get("r", [])
    if not isinstance(raw, list) or len(raw) > MAX_RIDS_PER_MESSAGE:
        raise ProtocolError("field 'r' must be a list of [rid, slot, value]")
    entries = []
    for entry in raw:
        if not isinstance(entry, list) or len(entry) != 3:
            raise ProtocolError("field 'r' must be a list of [rid, slot, value]")
        rid, slot, value = entry
        if not isinstance(slot, str):
            raise ProtocolError("field 'r' must be a list of [rid, slot, value]")
        one = validate_slots({slot: value}, "r")
        entries.append((validate_rid(rid), slot, one[slot]))
    epoch = obj.get("e", "")
    if not isinstance(epoch, str) or len(epoch) > 64:
        raise ProtocolError("field 'e' must be a short string")
    return PeerReply(id=_int(obj, "id", 0, MAX_COUNT), node=_node_id(obj, "n"),
                     slots=validate_slots(obj.get("s"), "s"), rids=tuple(entries),
                     rid_epoch=epoch, rid_cursor=_int(obj, "c", 0, MAX_COUNT, 0),
                     rid_more=obj.get("m") is True)


def encode_broadcast(message: Broadcast) -> bytes:
    if isinstance(message, Update):
        obj: dict[str, Any] = {"t": "u", "n": message.origin, "q": message.seq, "s": message.slots}
        if message.rids:
            obj["r"] = list(message.rids)
        return orjson.dumps(obj)
    return orjson.dumps({"t": "h", "n": message.origin, "q": message.seq,
                         "s": message.slots, "d": message.digest})


def decode_broadcast(data: bytes) -> Broadcast:
    obj = _loads(data, MAX_PEER_MESSAGE_BYTES)
    kind = obj.get("t")
    origin = _node_id(obj, "n")
    seq = _int(obj, "q", 0, MAX_COUNT)
    slots = validate_slots(obj.get("s"), "s")
    if kind == "u":
        return Update(origin=origin, seq=seq, slots=slots, rids=_rids(obj, "r"))
    if kind == "h":
        digest = obj.get("d")
        if not isinstance(digest, str) or len(digest) > 64:
            raise ProtocolError("heartbeat digest must be a short string")
        return Heartbeat(origin=origin, seq=seq, slots=slots, digest=digest)
    raise ProtocolError(f"unknown broadcast type {str(kind)[:20]!r}")
