"""The payload of one log record: what one batch changed (a :class:`Persist`).

Binary and flat, because it is encoded on the request path once per batch (about 0.1 ms
for 256 keys, measured) and decoded only at recovery::

    u32 n_slots   then per slot:  u32 index | u16 len | name
    u32 n_states  then per state: u16 len | key (UTF-8) | u32 len | packed state
    u32 len | JSON [[rid, key, {slot: [p, n, bp, bn]}], ...]   request ids learned
    u32 len | JSON [rid, ...]                                   request ids forgotten
    u32 n_removed then per key: u16 len | key                  keys collected (issue 21)
    u8 has_high_water | u64 Gp | u64 Gn                        the high-water (issue 21)

The last two sections are absent from 0.2's records (a replay of a 0.2 log reads none).
Packed states in a 0.2 log are 0.2's form: recovery converts them
(:func:`zcounter.model.records.upgrade`).
"""

from __future__ import annotations

import struct

import orjson

from ...model.pncounter import Record
from ...protocol.messages import RidEntry
from ...protocol.outputs import Persist

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_SLOT = struct.Struct("<IH")
_HIGH_WATER = struct.Struct("<BQQ")


def encode(persist: Persist) -> bytes:
    parts: list[bytes] = [_U32.pack(len(persist.slots))]
    for idx, name in persist.slots:
        raw = name.encode()
        parts += (_SLOT.pack(idx, len(raw)), raw)
    parts.append(_U32.pack(len(persist.states)))
    u16, u32 = _U16.pack, _U32.pack
    for key, packed in persist.states.items():
        raw = key.encode()
        parts += (u16(len(raw)), raw, u32(len(packed)), packed)
    rids = orjson.dumps([[rid, key, {s: list(r) for s, r in target.items()}]
                         for rid, key, target in persist.rids]) if persist.rids else b""
    forget = orjson.dumps(persist.forget) if persist.forget else b""
    parts += (u32(len(rids)), rids, u32(len(forget)), forget)
    if persist.removed or persist.high_water is not None:
        parts.append(u32(len(persist.removed)))
        for key in persist.removed:
            raw = key.encode()
            parts += (u16(len(raw)), raw)
        hw = persist.high_water
        parts.append(_HIGH_WATER.pack(0, 0, 0) if hw is None else _HIGH_WATER.pack(1, *hw))
    return b"".join(parts)


def decode(data: bytes) -> Persist:
    """Inverse of :func:`encode` (``sync`` is not recorded: it is False)."""
    view = memoryview(data)
    pos = 0

    def u32() -> int:
        nonlocal pos
        (value,) = _U32.unpack_from(view, pos)
        pos += 4
        return int(value)

    out = Persist()
    for _ in range(u32()):
        idx, size = _SLOT.unpack_from(view, pos)
        pos += _SLOT.size
        out.slots.append((idx, bytes(view[pos:pos + size]).decode()))
        pos += size
    for _ in range(u32()):
        (size,) = _U16.unpack_from(view, pos)
        pos += 2
        key = bytes(view[pos:pos + size]).decode()
        pos += size
        size = u32()
        out.states[key] = bytes(view[pos:pos + size])
        pos += size
    size = u32()
    if size:
        out.rids = [_rid(entry) for entry in orjson.loads(view[pos:pos + size])]
    pos += size
    size = u32()
    if size:
        out.forget = list(orjson.loads(view[pos:pos + size]))
    pos += size
    if pos < len(data):  # issue 21's sections
        for _ in range(u32()):
            (size,) = _U16.unpack_from(view, pos)
            pos += 2
            out.removed.append(bytes(view[pos:pos + size]).decode())
            pos += size
        has, gp, gn = _HIGH_WATER.unpack_from(view, pos)
        pos += _HIGH_WATER.size
        if has:
            out.high_water = (gp, gn)
    if pos != len(data):
        raise ValueError(f"record has {len(data) - pos} trailing bytes")
    return out


def _rid(entry: list[object]) -> RidEntry:
    rid, key, target = entry
    assert isinstance(rid, str) and isinstance(key, str) and isinstance(target, dict)
    return rid, key, {s: _record(r) for s, r in target.items()}


def _record(r: list[int]) -> Record:
    """A request id's target record (4 or 5 integers), or a key's meta under "~"."""
    return tuple(r)
