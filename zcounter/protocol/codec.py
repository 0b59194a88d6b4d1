"""Bytes <-> messages (:mod:`.messages`), with every check an untrusted input needs.

``decode_*`` turn bytes into frozen dataclasses or raise
:class:`~zcounter.errors.ProtocolError` naming the field; nothing past this module sees
raw JSON.  Encoding is orjson.  Peer messages use short keys: they are the replication
hot path.  A record goes on the wire as a list of its four totals with trailing zeros
dropped (``[5]`` is ``(5, 0, 0, 0)``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from ..errors import ProtocolError
from ..limits import MAX_KEYS_PER_PEER_MESSAGE
from ..model.expiry import META, is_valid_meta
from ..model.page import META_INTS, REC_INTS, StatePage
from ..model.pncounter import MAX_STEP, MAX_TOTAL, Record, is_valid_record, slot_node
from .messages import (
    DEFAULT_KEY,
    MAX_HOLD_KEYS,
    MAX_KEY_BYTES,
    Add,
    Applied,
    Broadcast,
    ClientReply,
    ClientRequest,
    Confirm,
    Counted,
    Delta,
    ErrorCode,
    Expire,
    ExpireMode,
    Fetch,
    Get,
    Heartbeat,
    Held,
    Hold,
    Holding,
    KeysPage,
    Level,
    ListKeys,
    Merge,
    PeerReply,
    PeerRequest,
    Ping,
    Pong,
    Refused,
    Reset,
    RidEntry,
    RidPage,
    RidPull,
    States,
    StatesReply,
    Status,
    StatusReply,
    SyncBuckets,
    SyncDiff,
    SyncKeys,
    SyncSegments,
    SyncStates,
    Tag,
    Ttl,
)
from .messages import MAX_TTL_MS as MAX_TTL_MS

#: Client requests larger than this are refused (checked before anything else).
MAX_REQUEST_BYTES = 1024 * 1024
#: Peer messages larger than this are dropped; pages are built to stay far below.
MAX_PEER_MESSAGE_BYTES = 16 * 1024 * 1024
#: Keys one Get may name.
MAX_KEYS_PER_GET = 10_000
#: Keys one ListKeys page may return.
MAX_PAGE = 10_000
MAX_TIMEOUT_MS = 10 * 60 * 1000
MAX_NODE_ID = 999_999_999
#: Nodes a Confirm may ask for (more than the cluster has only waits out its timeout).
MAX_CONFIRM_NODES = 1_000_000
#: Bounds on peer messages (far above what a node sends; they only stop garbage).
MAX_STATES = 200_000
MAX_SLOTS_PER_KEY = 10_000
MAX_RIDS = 50_000
MAX_HASHES = 1 << 16
#: Slot names one page of states may name (a node sends its whole table up to 1,024).
MAX_PAGE_SLOTS = 4096

_RID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")
_EPOCH_MAX = 64
_LEVELS = {level.value: level for level in Level}
_MODES = {mode.value: mode for mode in ExpireMode}
_NO_STATES: States = {}


# --------------------------------------------------------------------------- field checks


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


def _int(obj: Mapping[str, Any], key: str, lo: int, hi: int, default: int | None = None) -> int:
    value = obj.get(key, default)
    if value is None:
        raise ProtocolError(f"missing field {key!r}")
    # bool is an int subclass in Python; a JSON true is not a number.
    if type(value) is not int:
        raise ProtocolError(f"field {key!r} must be an integer")
    if not lo <= value <= hi:
        raise ProtocolError(f"field {key!r} must be between {lo} and {hi}, got {value}")
    return value


def _str(obj: Mapping[str, Any], key: str, max_len: int, default: str | None = None) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str) or len(value) > max_len:
        raise ProtocolError(f"field {key!r} must be a string of at most {max_len} characters")
    return value


def validate_key(value: Any, field: str = "key") -> str:
    """A key: a non-empty string of at most 256 bytes of UTF-8."""
    if type(value) is not str or not value:
        raise ProtocolError(f"field {field!r} must be a non-empty string")
    if len(value) <= MAX_KEY_BYTES // 4 and value.isascii():
        return value  # common case: no encoding needed to know the size
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ProtocolError(f"field {field!r} is not valid UTF-8") from None
    if size > MAX_KEY_BYTES:
        raise ProtocolError(f"field {field!r} is {size} bytes long, limit {MAX_KEY_BYTES}")
    return value


def validate_rid(value: Any) -> str:
    if type(value) is not str or not _RID_RE.match(value):
        raise ProtocolError(
            "request id must be 1-64 characters of letters, digits, '.', '_', ':' or '-'")
    return value


def _level(obj: Mapping[str, Any], key: str) -> Level:
    value = obj.get(key, "local")
    level = _LEVELS.get(value) if isinstance(value, str) else None
    if level is None:
        raise ProtocolError(f"field {key!r} must be one of local, majority, all")
    return level


def _tag(obj: Mapping[str, Any]) -> Tag:
    value = obj.get("id")
    if value is None or (isinstance(value, str) and len(value) <= 128):
        return value
    if type(value) is int and abs(value) <= MAX_TOTAL:
        return value
    raise ProtocolError("field 'id' must be a string of at most 128 characters or an integer")


def _node_id(obj: Mapping[str, Any], key: str) -> int:
    return _int(obj, key, 1, MAX_NODE_ID)


def _record(value: Any, where: str) -> Record:
    if type(value) is list:
        if len(value) == 1:  # an increment-only record, by far the most common
            p = value[0]
            if type(p) is int and 0 <= p <= MAX_TOTAL:
                return p, 0, 0, 0
        elif 2 <= len(value) <= 4:
            rec = value + [0] * (4 - len(value))
            if is_valid_record(rec):
                return rec[0], rec[1], rec[2], rec[3]
        elif len(value) == 5 and is_valid_record(value):  # with a birth (issue 21)
            p, n, bp, bn, b = value
            return (p, n, bp, bn, b) if b else (p, n, bp, bn)
    raise ProtocolError(f"{where}: a record is 1-4 integers p, n, bp, bn (and a birth b) "
                        "in 0..2**63-1 with bp <= p and bn <= n")


def _state(value: Any, where: str, slots: set[str] | None = None) -> dict[str, Record]:
    """One key's state.  ``slots``: slot names already checked in this message (a page
    of a repair names the same few slots thousands of times: the regex runs once each).
    ``where`` is only formatted into errors."""
    if type(value) is not dict or len(value) > MAX_SLOTS_PER_KEY:
        raise ProtocolError(f"{where} must be an object of slot -> record")
    out: dict[str, Record] = {}
    for slot, rec in value.items():
        if slot == META:  # the key's meta [F, S, D] (issue 21)
            if not is_valid_meta(rec, MAX_TOTAL):
                raise ProtocolError(f"{where}: the meta {META!r} is 3 integers F, S, D "
                                    "in 0..2**63-1")
            if rec[0] or rec[1] or rec[2]:
                out[META] = (rec[0], rec[1], rec[2])
            continue
        if slots is None or slot not in slots:
            if slot_node(slot) is None:
                raise ProtocolError(f"{where}: malformed slot name {slot[:40]!r}")
            if slots is not None:
                slots.add(slot)
        if type(rec) is list and len(rec) == 1 and type(p := rec[0]) is int and (
                0 <= p <= MAX_TOTAL):
            # Inline: the common increment-only record, 3,000,000 of them in a bootstrap
            # at a million keys (_record's own fast path, without the call).
            out[slot] = (p, 0, 0, 0)
        else:
            try:
                out[slot] = _record(rec, where)
            except ProtocolError:
                raise ProtocolError(f"{where}.{slot}: a record is 1-4 integers p, n, bp, bn "
                                    "(and a birth b) in 0..2**63-1 with bp <= p and bn <= n"
                                    ) from None
    # No bound on the sums across slots: legal concurrent steps can pass any (the
    # model's "Bounds", zcounter/model/pncounter.py); every record is valid.
    return out


def _states(value: Any, field: str, limit: int = MAX_STATES) -> States:
    if value is None:
        return {}
    if type(value) is not dict or len(value) > limit:
        raise ProtocolError(f"field {field!r} must be an object of key -> state")
    slots: set[str] = set()
    out: States = {}
    for key, state in value.items():
        if type(key) is not str or not key or len(key) > MAX_KEY_BYTES // 4 or not key.isascii():
            validate_key(key, field)
        try:
            out[key] = _state(state, field, slots)
        except ProtocolError as exc:  # name the key only when something is wrong
            raise ProtocolError(str(exc).replace(field, f"{field}[{key[:40]!r}]", 1)) from None
    return out


def _page(names: Any, value: Any, births: bool = True) -> StatePage:
    """A page of states (:mod:`zcounter.model.page`): slot names ``l``, flat records
    ``s``.  Every invariant of :class:`StatePage` is checked here, so the keyspace can
    store a key straight from its list.  Types and ranges are checked with one chained
    comparison per record: a page of 4,000 keys of three slots in ~5 ms (timeit).
    ``births`` False: a 0.2 node's page (no meta, records of five integers), converted."""
    if not births:
        return _page(names, _upgrade_page(value))
    if type(names) is not list or len(names) > MAX_PAGE_SLOTS:
        raise ProtocolError(f"field 'l' must be a list of at most {MAX_PAGE_SLOTS} slot names")
    for name in names:
        if type(name) is not str or slot_node(name) is None:
            raise ProtocolError(f"field 'l': malformed slot name {str(name)[:40]!r}")
    if len(set(names)) != len(names):
        raise ProtocolError("field 'l' names a slot twice")
    if type(value) is not dict or len(value) > MAX_STATES:
        raise ProtocolError("field 's' must be an object of key -> records")
    count = len(names)
    limit = META_INTS + REC_INTS * MAX_SLOTS_PER_KEY
    for key, flat in value.items():
        if type(key) is not str or not key or len(key) > MAX_KEY_BYTES // 4 or not key.isascii():
            validate_key(key, "s")
        if (type(flat) is not list or len(flat) % REC_INTS != META_INTS or len(flat) > limit
                or not is_valid_meta(flat[:META_INTS], MAX_TOTAL)):
            raise ProtocolError(f"field 's'[{key[:40]!r}] must be a list of records "
                                "[slot, p, n, bp, bn, b, ...] after the meta F, S, D "
                                "(integers in 0..2**63-1)")
        last = -1
        it = iter(flat)
        next(it), next(it), next(it)
        for i, p, n, bp, bn, b in zip(it, it, it, it, it, it, strict=True):
            if not (type(i) is int and type(p) is int and type(n) is int and type(bp) is int
                    and type(bn) is int and type(b) is int and last < i < count
                    and 0 <= bp <= p <= MAX_TOTAL and 0 <= bn <= n <= MAX_TOTAL
                    and 0 <= b <= MAX_TOTAL):
                raise ProtocolError(
                    f"field 's'[{key[:40]!r}]: a record is a slot index (increasing, below "
                    f"{count}) and integers p, n, bp, bn, b in 0..2**63-1 with bp <= p, "
                    "bn <= n")
            last = i
    return StatePage(tuple(names), value)


def _upgrade_page(value: Any) -> Any:
    """A 0.2 page's records (five integers each, no meta) in this form, or ``value`` as
    it is when it is not of that shape (then :func:`_page` says what is wrong)."""
    if type(value) is not dict or len(value) > MAX_STATES:
        return value
    out: dict[Any, Any] = {}
    for key, flat in value.items():
        if type(flat) is not list or len(flat) % 5 or len(flat) > 5 * MAX_SLOTS_PER_KEY:
            return value
        new = [0, 0, 0]
        for i in range(0, len(flat), 5):
            new += flat[i:i + 5]
            new.append(0)
        out[key] = new
    return out


def _keys(value: Any, field: str, limit: int) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > limit:
        raise ProtocolError(f"field {field!r} must be a list of at most {limit} keys")
    return tuple(validate_key(k, field) for k in value)


def _ints(value: Any, field: str, limit: int, hi: int) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > limit:
        raise ProtocolError(f"field {field!r} must be a list of at most {limit} integers")
    for v in value:
        if type(v) is not int or not 0 <= v <= hi:
            raise ProtocolError(f"field {field!r} must hold integers in 0..{hi}")
    return tuple(value)


def _rid_entries(value: Any, field: str) -> tuple[RidEntry, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_RIDS:
        raise ProtocolError(f"field {field!r} must be a list of [rid, key, state]")
    out = []
    for entry in value:
        if not isinstance(entry, list) or len(entry) != 3:
            raise ProtocolError(f"field {field!r} must be a list of [rid, key, state]")
        rid, key, target = entry
        out.append((validate_rid(rid), validate_key(key, field), _state(target, field)))
    return tuple(out)


def _applied(value: Any) -> Applied:
    if not isinstance(value, dict) or len(value) > 10_000:
        raise ProtocolError("field 'a' must be an object of node -> [epoch, seq]")
    out: Applied = {}
    for node, pair in value.items():
        # isascii: str.isdigit() holds for "\u00b2" (int() then raises) and "\u0661" (int()
        # reads it as 1).
        if (not node.isascii() or not node.isdigit() or not 1 <= int(node) <= MAX_NODE_ID
                or not isinstance(pair, list) or len(pair) != 2
                or not isinstance(pair[0], str) or len(pair[0]) > _EPOCH_MAX
                or type(pair[1]) is not int or not 0 <= pair[1] <= MAX_TOTAL):
            raise ProtocolError("field 'a' must be an object of node -> [epoch, seq]")
        out[int(node)] = (pair[0], pair[1])
    return out


# --------------------------------------------------------------------------- encoding helpers


def _wire_record(rec: Record) -> list[int]:
    if len(rec) > 4:  # a birth (issue 21; the meta "~" never has a fifth field)
        return list(rec) if rec[4] else list(rec[:4])
    if len(rec) == 3:  # the meta [F, S, D]
        return list(rec)
    if rec[3]:
        return list(rec)
    if rec[2]:
        return [rec[0], rec[1], rec[2]]
    if rec[1]:
        return [rec[0], rec[1]]
    return [rec[0]]


def wire_states(states: States) -> dict[str, dict[str, list[int]]]:
    """:func:`_wire_record` of every record, inlined: a node answering a bootstrap at a
    million keys held the GIL 45 % of the time encoding states (py-spy --gil), and the
    call per record was most of it (1.66 -> 1.04 us per state of three slots, timeit)."""
    out: dict[str, dict[str, list[int]]] = {}
    for key, state in states.items():
        wire: dict[str, list[int]] = {}
        for slot, rec in state.items():
            if len(rec) == 4:
                p, n, bp, bn = rec
                wire[slot] = [p, n, bp, bn] if bn else [p, n, bp] if bp else [p, n] if n else [p]
            else:  # a record with its birth, or the meta "~" (issue 21): as they are
                wire[slot] = list(rec)
        out[key] = wire
    return out


def _wire_rids(rids: tuple[RidEntry, ...]) -> list[list[Any]]:
    return [[rid, key, {s: _wire_record(r) for s, r in target.items()}]
            for rid, key, target in rids]


# --------------------------------------------------------------------------- client codec


class Forbidden(ProtocolError):
    """A message only a node may send, from a connection that is not a node's: refused
    before its contents are decoded (``forbidden``)."""


def _always_peer() -> bool:
    return True


def decode_request(frame: bytes, is_peer: Callable[[], bool] = _always_peer
                   ) -> ClientRequest | PeerRequest:
    """Decode what a ROUTER received after the routing id (one frame).

    ``is_peer`` says whether the connection is a node's (the runtime's role check).  It
    is asked only when the answer matters, and always before the work it guards: a frame
    larger than a client request may be, or a peer operation, from a connection that is
    not a node's raises :class:`Forbidden` - the first before any parsing, the second
    before any of its fields is decoded.  Everything else a client sends is parsed under
    the client bound, ``MAX_REQUEST_BYTES``; only a node's frames may be peer-sized
    (issue 19: a client key's 16 MB merge was parsed and validated whole, then refused).
    The check stays off the per-increment path: a client's request under the bound
    never asks it (in ``curve`` mode a role check reads the connection's key, ~1.2 us).
    """
    if len(frame) > MAX_REQUEST_BYTES and not is_peer():
        raise Forbidden(f"message of {len(frame)} bytes: only a node may send more than "
                        f"a client request's {MAX_REQUEST_BYTES}")
    obj = _loads(frame, MAX_PEER_MESSAGE_BYTES)
    op = obj.get("op")
    # A JSON list or object is unhashable: test the type before the set lookup.
    if type(op) is str and op in _PEER_OPS:
        if not is_peer():
            raise Forbidden(f"{op!r} is a peer operation and this connection is not a "
                            "node's")
        return _decode_peer_request(op, obj)
    if len(frame) > MAX_REQUEST_BYTES:
        raise ProtocolError(f"request too large ({len(frame)} bytes, limit {MAX_REQUEST_BYTES})")
    tag = _tag(obj)
    if op == "increment" or op == "decrement":
        return _decode_add(obj, tag, op == "decrement")
    if op == "reset":
        return Reset(tag, _key_field(obj), _rid_field(obj), _level(obj, "wait"),
                     _int(obj, "timeout_ms", 1, MAX_TIMEOUT_MS, 2000),
                     _seen(obj), obj.get("session") is True)
    if op == "expire":
        return _decode_expire(obj, tag)
    if op == "ttl":
        return Ttl(tag, _key_field(obj), _level(obj, "read"),
                   _int(obj, "timeout_ms", 1, MAX_TIMEOUT_MS, 2000), _seen(obj),
                   obj.get("session") is True)
    if op in ("get", "getCount"):
        if "keys" in obj:
            keys = _keys(obj["keys"], "keys", MAX_KEYS_PER_GET)
            if not keys:
                raise ProtocolError("field 'keys' must name at least one key")
        else:
            keys = (_key_field(obj),)
        return Get(tag, keys, _level(obj, "read"), _int(obj, "timeout_ms", 1, MAX_TIMEOUT_MS, 2000),
                   _seen(obj), obj.get("session") is True)
    if op == "keys":
        after = obj.get("after")
        return ListKeys(tag, _str(obj, "prefix", MAX_KEY_BYTES, ""),
                        None if after is None else validate_key(after, "after"),
                        _int(obj, "limit", 1, MAX_PAGE, 1000))
    if op == "status":
        return Status(tag)
    if op == "ping":
        return Ping(tag)
    if op == "confirm":
        return Confirm(tag, validate_key(obj.get("key")),
                       _int(obj, "nodes", 1, MAX_CONFIRM_NODES),
                       _int(obj, "timeout_ms", 1, MAX_TIMEOUT_MS, 2000))
    if op is None:
        raise ProtocolError("missing field 'op'")
    raise ProtocolError(f"unknown operation {str(op)[:40]!r}")


def _key_field(obj: Mapping[str, Any]) -> str:
    """The request's key: ``default`` when absent; anything else must be a valid key
    (``null`` is not a string: refused)."""
    return validate_key(obj["key"]) if "key" in obj else DEFAULT_KEY


def _rid_field(obj: Mapping[str, Any]) -> str | None:
    rid = obj.get("rid")
    return None if rid is None else validate_rid(rid)


def _seen(obj: Mapping[str, Any]) -> States:
    seen = obj.get("seen")
    return _NO_STATES if seen is None else _states(seen, "seen", MAX_KEYS_PER_GET)


def _decode_add(obj: dict[str, Any], tag: Tag, negative: bool) -> Add:
    by = obj.get("by", 1)
    if type(by) is not int or not 1 <= by <= MAX_STEP:  # the common case stays cheap
        by = _int(obj, "by", 1, MAX_STEP, default=1)  # ... and this names the error
    key = obj.get("key", DEFAULT_KEY)
    if type(key) is not str or not key or len(key) > 64 or not key.isascii():
        key = validate_key(key)
    wait = obj.get("wait")
    level = Level.LOCAL if wait is None or wait == "local" else _level(obj, "wait")
    timeout = obj.get("timeout_ms", 2000)
    if type(timeout) is not int or not 1 <= timeout <= MAX_TIMEOUT_MS:
        timeout = _int(obj, "timeout_ms", 1, MAX_TIMEOUT_MS, 2000)
    seen = obj.get("seen")
    ttl = obj.get("ttl_ms")  # absent on the hot path: one dict lookup
    return Add(tag, key, -by if negative else by, _rid_field(obj), level, timeout,
               _NO_STATES if seen is None else _states(seen, "seen", MAX_KEYS_PER_GET),
               obj.get("session") is True,
               0 if ttl is None else _int(obj, "ttl_ms", 1, MAX_TTL_MS))


def _decode_expire(obj: dict[str, Any], tag: Tag) -> Expire:
    """EXPIRE/EXPIREAT/PERSIST: ``at`` (unix ms) or ``ttl_ms`` (from the node's now:
    0 expires the key at once, as a past deadline does), neither for PERSIST; ``mode``
    one of nx, xx, gt, lt.  The node refuses a deadline more than ``MAX_TTL_MS`` past
    its own now (it alone knows that now)."""
    at = None if obj.get("at") is None else _int(obj, "at", 0, MAX_TOTAL)
    ttl = None if obj.get("ttl_ms") is None else _int(obj, "ttl_ms", 0, MAX_TTL_MS)
    if at is not None and ttl is not None:
        raise ProtocolError("fields 'at' and 'ttl_ms' exclude each other (a deadline is "
                            "either absolute or relative)")
    raw = obj.get("mode")
    mode = None
    if raw is not None:
        mode = _MODES.get(raw) if type(raw) is str else None
        if mode is None:
            raise ProtocolError("field 'mode' must be one of nx, xx, gt, lt")
    if at is None and ttl is None and mode is not None:
        raise ProtocolError("field 'mode' needs a deadline ('at' or 'ttl_ms'); a request "
                            "without one removes the expiry")
    also_xx = obj.get("xx", False)
    if type(also_xx) is not bool or (also_xx and mode is not ExpireMode.LT):
        raise ProtocolError("field 'xx' must be a boolean, true only with mode lt")
    return Expire(tag, _key_field(obj), at, mode, _rid_field(obj), _level(obj, "wait"),
                  _int(obj, "timeout_ms", 1, MAX_TIMEOUT_MS, 2000), _seen(obj),
                  obj.get("session") is True, ttl, also_xx)


def request_tag(frame: bytes) -> Tag:
    """Best-effort correlation tag of a request that failed to decode (None if unknown)."""
    try:
        obj = orjson.loads(frame) if len(frame) <= MAX_REQUEST_BYTES else None
        return _tag(obj) if isinstance(obj, dict) else None
    except (orjson.JSONDecodeError, ProtocolError):
        return None


def encode_request(request: ClientRequest) -> bytes:
    obj: dict[str, Any]
    if isinstance(request, Add):
        obj = {"op": "increment" if request.amount > 0 else "decrement", "id": request.id,
               "key": request.key, "by": abs(request.amount), "wait": request.wait.value,
               "timeout_ms": request.timeout_ms}
        if request.ttl_ms:
            obj["ttl_ms"] = request.ttl_ms
        _request_extras(obj, request.rid, request.seen, request.session)
    elif isinstance(request, Reset):
        obj = {"op": "reset", "id": request.id, "key": request.key,
               "wait": request.wait.value, "timeout_ms": request.timeout_ms}
        _request_extras(obj, request.rid, request.seen, request.session)
    elif isinstance(request, Expire):
        obj = {"op": "expire", "id": request.id, "key": request.key,
               "wait": request.wait.value, "timeout_ms": request.timeout_ms}
        if request.at_ms is not None:
            obj["at"] = request.at_ms
        if request.ttl_ms is not None:
            obj["ttl_ms"] = request.ttl_ms
        if request.mode is not None:
            obj["mode"] = request.mode.value
        if request.also_xx:
            obj["xx"] = True
        _request_extras(obj, request.rid, request.seen, request.session)
    elif isinstance(request, Ttl):
        obj = {"op": "ttl", "id": request.id, "key": request.key,
               "read": request.read.value, "timeout_ms": request.timeout_ms}
        _request_extras(obj, None, request.seen, request.session)
    elif isinstance(request, Get):
        obj = {"op": "get", "id": request.id, "keys": list(request.keys),
               "read": request.read.value, "timeout_ms": request.timeout_ms}
        _request_extras(obj, None, request.seen, request.session)
    elif isinstance(request, ListKeys):
        obj = {"op": "keys", "id": request.id, "prefix": request.prefix,
               "limit": request.limit}
        if request.after is not None:
            obj["after"] = request.after
    elif isinstance(request, Status):
        obj = {"op": "status", "id": request.id}
    elif isinstance(request, Confirm):
        obj = {"op": "confirm", "id": request.id, "key": request.key, "nodes": request.nodes,
               "timeout_ms": request.timeout_ms}
    else:
        obj = {"op": "ping", "id": request.id}
    return orjson.dumps(obj)


def _request_extras(obj: dict[str, Any], rid: str | None, seen: States, session: bool) -> None:
    if rid is not None:
        obj["rid"] = rid
    if seen:
        obj["seen"] = wire_states(seen)
    if session:
        obj["session"] = True


def encode_reply(reply: ClientReply) -> bytes:
    if type(reply) is Counted:
        obj: dict[str, Any] = {"id": reply.id, "node": reply.node, "ok": True,
                               "count": reply.counts[0]}
        if len(reply.counts) > 1:
            obj["counts"] = list(reply.counts)
        if reply.states:
            obj["states"] = wire_states(reply.states)
        if reply.duplicate:
            obj["duplicate"] = True
        if reply.exists:
            obj["exists"] = list(reply.exists)
        return orjson.dumps(obj)
    if isinstance(reply, Refused):
        return orjson.dumps({"id": reply.id, "node": reply.node, "ok": False,
                             "error": reply.code.value, "message": reply.message})
    if isinstance(reply, KeysPage):
        return orjson.dumps({"id": reply.id, "node": reply.node, "ok": True,
                             "keys": [list(e) for e in reply.entries], "more": reply.more})
    if isinstance(reply, StatusReply):
        return orjson.dumps({"id": reply.id, "node": reply.node, "ok": True,
                             "status": reply.status})
    if isinstance(reply, Held):
        return orjson.dumps({"id": reply.id, "node": reply.node, "ok": True, "key": reply.key,
                             "held": reply.nodes})
    assert isinstance(reply, Pong)
    return orjson.dumps({"id": reply.id, "node": reply.node, "ok": True})


_CODES = {code.value: code for code in ErrorCode}


def decode_reply(data: bytes) -> ClientReply:
    """Decode a node's reply (client side): anything malformed is a ProtocolError."""
    obj = _loads(data, MAX_PEER_MESSAGE_BYTES)
    ok = obj.get("ok")
    if not isinstance(ok, bool):
        raise ProtocolError("reply has no boolean 'ok'")
    node = _node_id(obj, "node")
    tag = _tag(obj)
    if not ok:
        error, message = obj.get("error"), obj.get("message")
        if not isinstance(message, str) or not isinstance(error, str) or error not in _CODES:
            # A code this version does not know (a newer node's) says nothing of whether
            # the request was applied: the client stops there (zcounter.client._error_from).
            raise ProtocolError("error reply needs a known 'error' code and a 'message' "
                                f"(error {str(error)[:40]!r})")
        return Refused(tag, node, _CODES[error], message)
    if "status" in obj:
        if not isinstance(obj["status"], dict):
            raise ProtocolError("'status' must be an object")
        return StatusReply(tag, node, obj["status"])
    if "keys" in obj:
        raw = obj["keys"]
        if not isinstance(raw, list) or len(raw) > MAX_PAGE:
            raise ProtocolError("'keys' must be a list of [key, count]")
        entries = []
        for entry in raw:
            if (not isinstance(entry, list) or len(entry) != 2 or type(entry[1]) is not int
                    or abs(entry[1]) > MAX_TOTAL):
                raise ProtocolError("'keys' must be a list of [key, count]")
            entries.append((validate_key(entry[0], "keys"), entry[1]))
        return KeysPage(tag, node, tuple(entries), obj.get("more") is True)
    if "held" in obj:
        return Held(tag, node, validate_key(obj.get("key")),
                    _int(obj, "held", 1, MAX_CONFIRM_NODES))
    if "count" in obj:
        count = _int(obj, "count", -MAX_TOTAL, MAX_TOTAL)
        counts: tuple[int, ...] = (count,)
        if "counts" in obj:
            counts = _ints_signed(obj["counts"])
        return Counted(tag, node, counts, _states(obj.get("states"), "states"),
                       obj.get("duplicate") is True, _flags(obj.get("exists"), len(counts)))
    return Pong(tag, node)


def _flags(value: Any, n: int) -> tuple[bool, ...]:
    """A Counted's ``exists``: absent, or one boolean per count."""
    if value is None:
        return ()
    if type(value) is not list or len(value) != n or any(type(v) is not bool for v in value):
        raise ProtocolError("'exists' must be a list of booleans, one per count")
    return tuple(value)


def _ints_signed(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > MAX_KEYS_PER_GET:
        raise ProtocolError("'counts' must be a list of integers")
    for v in value:
        if type(v) is not int or abs(v) > MAX_TOTAL:
            raise ProtocolError("'counts' must be a list of integers")
    return tuple(value)


# --------------------------------------------------------------------------- peer codec

_PEER_OPS = frozenset({"fetch", "merge", "sb", "ss", "sk", "rp", "hold"})


def _at_ms(obj: Mapping[str, Any]) -> int:
    """A message's ``at`` (the sender's wall clock when it read its states, unix ms):
    absent (a 0.2 peer) is 0, "unknown"."""
    at = obj.get("at", 0)
    if type(at) is int and 0 <= at <= MAX_TOTAL:
        return at
    return _int(obj, "at", 0, MAX_TOTAL, 0)  # names the error


def _hold_keys(value: Any) -> tuple[tuple[str, int], ...]:
    if not isinstance(value, list) or len(value) > MAX_HOLD_KEYS:
        raise ProtocolError(f"field 'k' must be a list of at most {MAX_HOLD_KEYS} "
                            "[key, hash]")
    out = []
    for entry in value:
        if (not isinstance(entry, list) or len(entry) != 2 or type(entry[1]) is not int
                or not 0 <= entry[1] < 2**64):
            raise ProtocolError("field 'k' must be a list of [key, hash]")
        out.append((validate_key(entry[0], "k"), entry[1]))
    return tuple(out)


def _hold_ok(value: Any) -> tuple[bool, ...]:
    if (not isinstance(value, list) or len(value) > MAX_HOLD_KEYS
            or not all(type(v) is bool for v in value)):
        raise ProtocolError(f"field 'ok' must be a list of at most {MAX_HOLD_KEYS} booleans")
    return tuple(value)


def _decode_peer_request(op: str, obj: dict[str, Any]) -> PeerRequest:
    req_id = _int(obj, "id", 0, MAX_TOTAL)
    origin = _node_id(obj, "n")
    if op == "fetch":
        return Fetch(req_id, origin, _keys(obj.get("k"), "k", MAX_KEYS_PER_PEER_MESSAGE))
    if op == "merge":
        return Merge(req_id, origin, _states(obj.get("s"), "s", MAX_KEYS_PER_PEER_MESSAGE),
                     _rid_entries(obj.get("r"), "r"), _at_ms(obj))
    if op == "hold":
        return Hold(req_id, origin, _hold_keys(obj.get("k")))
    if op == "sb":
        hashes = _ints(obj.get("h"), "h", 256, 2**64 - 1)
        if len(hashes) != 256:
            raise ProtocolError("field 'h' must hold 256 bucket hashes")
        return SyncBuckets(req_id, origin, hashes)
    if op == "ss":
        buckets = _ints(obj.get("b"), "b", 256, 255)
        hashes = _ints(obj.get("h"), "h", MAX_HASHES, 2**64 - 1)
        if len(hashes) != 256 * len(buckets):
            raise ProtocolError("field 'h' must hold 256 segment hashes per bucket")
        return SyncSegments(req_id, origin, buckets, hashes)
    if op == "sk":
        segments = _ints(obj.get("g"), "g", MAX_HASHES, MAX_HASHES - 1)
        raw = obj.get("e")
        if not isinstance(raw, list) or len(raw) > MAX_STATES:
            raise ProtocolError("field 'e' must be a list of [key, hash]")
        entries = []
        for entry in raw:
            if (not isinstance(entry, list) or len(entry) != 2 or type(entry[1]) is not int
                    or not 0 <= entry[1] < 2**64):
                raise ProtocolError("field 'e' must be a list of [key, hash]")
            entries.append((validate_key(entry[0], "e"), entry[1]))
        return SyncKeys(req_id, origin, segments, tuple(entries))
    return RidPull(req_id, origin, _str(obj, "e", _EPOCH_MAX, ""), _int(obj, "a", 0, MAX_TOTAL, 0))


def encode_peer_request(request: PeerRequest) -> bytes:
    if isinstance(request, Fetch):
        return orjson.dumps({"op": "fetch", "id": request.id, "n": request.origin,
                             "k": list(request.keys)})
    if isinstance(request, Merge):
        obj: dict[str, Any] = {"op": "merge", "id": request.id, "n": request.origin,
                               "s": wire_states(request.states)}
        if request.rids:
            obj["r"] = _wire_rids(request.rids)
        if request.at_ms:
            obj["at"] = request.at_ms
        return orjson.dumps(obj)
    if isinstance(request, Hold):
        return orjson.dumps({"op": "hold", "id": request.id, "n": request.origin,
                             "k": [list(e) for e in request.keys]})
    if isinstance(request, SyncBuckets):
        return orjson.dumps({"op": "sb", "id": request.id, "n": request.origin,
                             "h": list(request.hashes)})
    if isinstance(request, SyncSegments):
        return orjson.dumps({"op": "ss", "id": request.id, "n": request.origin,
                             "b": list(request.buckets), "h": list(request.hashes)})
    if isinstance(request, SyncKeys):
        return orjson.dumps({"op": "sk", "id": request.id, "n": request.origin,
                             "g": list(request.segments),
                             "e": [list(e) for e in request.entries]})
    return orjson.dumps({"op": "rp", "id": request.id, "n": request.origin,
                         "e": request.epoch, "a": request.after})


def encode_peer_reply(reply: PeerReply) -> bytes:
    if isinstance(reply, StatesReply):
        return orjson.dumps({"t": "st", "id": reply.id, "n": reply.node,
                             "s": wire_states(reply.states), "at": reply.at_ms})
    if isinstance(reply, Holding):
        return orjson.dumps({"t": "hd", "id": reply.id, "n": reply.node,
                             "ok": list(reply.ok)})
    if isinstance(reply, SyncDiff):
        obj: dict[str, Any] = {"t": "sd", "id": reply.id, "n": reply.node,
                               "i": list(reply.indexes)}
        if reply.applied:
            obj["a"] = {str(k): list(v) for k, v in reply.applied.items()}
        return orjson.dumps(obj)
    if isinstance(reply, SyncStates):
        return orjson.dumps({"t": "ss", "id": reply.id, "n": reply.node,
                             "l": reply.states.slots, "s": reply.states.records, "b": 1,
                             "d": list(reply.differ), "c": reply.done, "at": reply.at_ms})
    return orjson.dumps({"t": "rp", "id": reply.id, "n": reply.node,
                         "r": _wire_rids(reply.entries), "e": reply.epoch, "c": reply.cursor,
                         "m": reply.more})


def decode_peer_reply(data: bytes) -> PeerReply:
    obj = _loads(data, MAX_PEER_MESSAGE_BYTES)
    kind = obj.get("t")
    req_id = _int(obj, "id", 0, MAX_TOTAL)
    node = _node_id(obj, "n")
    if kind == "st":
        return StatesReply(req_id, node, _states(obj.get("s"), "s", MAX_KEYS_PER_PEER_MESSAGE),
                           _at_ms(obj))
    if kind == "sd":
        return SyncDiff(req_id, node, _ints(obj.get("i"), "i", MAX_HASHES, MAX_HASHES - 1),
                        _applied(obj["a"]) if "a" in obj else {})
    if kind == "ss":
        # Without "l": a zcounter 0.2.0 node's page, states by slot name.
        # Without "b": a 0.2 node's page (no births, no meta).
        page = (_page(obj.get("l"), obj.get("s"), "b" in obj) if "l" in obj
                else StatePage.of(_states(obj.get("s"), "s")))
        return SyncStates(req_id, node, page,
                          _keys(obj.get("d"), "d", MAX_STATES), _int(obj, "c", 0, MAX_HASHES),
                          _at_ms(obj))
    if kind == "hd":
        return Holding(req_id, node, _hold_ok(obj.get("ok")))
    if kind == "rp":
        return RidPage(req_id, node, _rid_entries(obj.get("r"), "r"),
                       _str(obj, "e", _EPOCH_MAX), _int(obj, "c", 0, MAX_TOTAL),
                       obj.get("m") is True)
    raise ProtocolError(f"unknown peer reply type {str(kind)[:20]!r}")


def encode_broadcast(message: Broadcast) -> bytes:
    if isinstance(message, Delta):
        obj: dict[str, Any] = {"t": "d", "n": message.origin, "e": message.epoch,
                               "q": message.seq, "s": wire_states(message.states)}
        if message.rids:
            obj["r"] = _wire_rids(message.rids)
        if message.at_ms:
            obj["at"] = message.at_ms
        return orjson.dumps(obj)
    return orjson.dumps({"t": "h", "n": message.origin, "e": message.epoch, "q": message.seq,
                         "h": message.root, "k": message.keys,
                         "a": {str(k): list(v) for k, v in message.applied.items()},
                         "re": message.rid_epoch, "rn": message.rid_next,
                         "w": message.wall_ms})


def decode_broadcast(data: bytes) -> Broadcast:
    obj = _loads(data, MAX_PEER_MESSAGE_BYTES)
    kind = obj.get("t")
    origin = _node_id(obj, "n")
    epoch = _str(obj, "e", _EPOCH_MAX)
    seq = _int(obj, "q", 0, MAX_TOTAL)
    if kind == "d":
        return Delta(origin, epoch, seq, _states(obj.get("s"), "s"),
                     _rid_entries(obj.get("r"), "r"), _at_ms(obj))
    if kind == "h":
        return Heartbeat(origin, epoch, seq, _int(obj, "h", 0, 2**64 - 1),
                         _int(obj, "k", 0, MAX_TOTAL), _applied(obj.get("a")),
                         _str(obj, "re", _EPOCH_MAX), _int(obj, "rn", 0, MAX_TOTAL),
                         _int(obj, "w", 0, MAX_TOTAL, 0))
    raise ProtocolError(f"unknown broadcast type {str(kind)[:20]!r}")
