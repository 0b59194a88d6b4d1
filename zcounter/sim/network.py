"""The packet simulator: every message between nodes and clients, with its faults.

Endpoints are integers: node ``n`` is ``n`` (1..N), client ``i`` is ``-(i + 1)``.

* **Delay**: a base delay, jitter, and now and then a slow message; with ``fifo`` a
  link delivers in the order it was sent (one TCP connection), otherwise messages
  overtake each other.
* **Loss** and **duplication** (node-sent messages only: a client's request travels on
  its own connection and its retries are modelled by the client).
* **Directed cuts**: ``(a, b)`` in :attr:`Network.cuts` loses what ``a`` sends to ``b``,
  checked when a message leaves and again when it would arrive.  Clients are never cut
  off (they sit beside the nodes they talk to).
* **Lives**: every packet to a node carries the receiver's *life* (bumped by each
  restart) at the time it was sent; like a TCP connection, nothing sent to one process
  reaches its successor.  :class:`~.cluster.Cluster` enforces it on arrival.
* **Codec sampling**: a share of messages goes through the real wire codec (encode,
  decode, compare); the decoded copy is what arrives.
* **Replay** (:meth:`Network.replay`, a nemesis action): a node-to-node request or
  broadcast seen earlier is delivered again, seconds later, to the receiver's *current*
  process - as a ZeroMQ socket does with what it queued for a peer that was
  unreachable, once it reconnects (to a restarted process, too).  Old messages are
  kept in two bounded rings (every 8th and every 64th sent), so a replay reaches back
  well past ``gc_grace_s`` without the simulator holding every message of a run.

Nothing here reads a clock or a global random source: the caller's ``random.Random`` and
the scheduler are the only sources of time and chance.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum
from typing import TYPE_CHECKING, Any

from ..protocol.codec import (
    decode_broadcast,
    decode_peer_reply,
    decode_reply,
    decode_request,
    encode_broadcast,
    encode_peer_reply,
    encode_peer_request,
    encode_reply,
    encode_request,
)
from ..protocol.messages import PEER_REQUESTS
from .oracle import SimFailure
from .swarm import Swarm

if TYPE_CHECKING:
    from .scheduler import Scheduler


#: Messages each replay ring keeps; the rings keep every 8th and every 64th message a
#: node sends (a 3-node run sends about 300 a simulated second: 3 s and 27 s back).
REPLAY_RING = 128


class Kind(Enum):
    #: Client or peer request to a node's ROUTER (``reply_to``: whom the node answers).
    REQUEST = "request"
    #: PUB/SUB broadcast from one node to another.
    BROADCAST = "broadcast"
    #: A node's answer to a peer request, back to the asking node's DEALER.
    PEER_REPLY = "peer reply"
    #: A node's reply to a client.
    CLIENT_REPLY = "client reply"


@dataclass(slots=True)
class Packet:
    kind: Kind
    src: int
    dst: int
    #: The receiving node's life when sent (0 for clients).
    life: int
    body: Any
    reply_to: object = None


#: What a replay may deliver again: node-to-node requests and broadcasts.
_REPLAYABLE = (Kind.REQUEST, Kind.BROADCAST)


def client_endpoint(index: int) -> int:
    return -(index + 1)


class Network:
    def __init__(self, swarm: Swarm, rng: random.Random, scheduler: Scheduler,
                 stats: Counter[str]) -> None:
        self.swarm = swarm
        self.rng = rng
        self.scheduler = scheduler
        self.stats = stats
        #: Directed cuts between nodes: (a, b) loses a's messages to b.
        self.cuts: set[tuple[int, int]] = set()
        #: Set by the heal phase: no more loss, duplication or slow messages.
        self.reliable = False
        self._link_free: dict[tuple[int, int], int] = {}
        #: Old node-to-node requests and broadcasts for :meth:`replay`: (sent ms, packet).
        self._recent: deque[tuple[int, Packet]] = deque(maxlen=REPLAY_RING)
        self._old: deque[tuple[int, Packet]] = deque(maxlen=REPLAY_RING)
        self._sent = 0

    def _delay_ms(self) -> int:
        s, rng = self.swarm, self.rng
        delay = s.base_delay_ms + (rng.randint(0, s.jitter_ms) if s.jitter_ms else 0)
        if s.p_slow and not self.reliable and rng.random() < s.p_slow:
            delay += rng.randint(1, s.slow_ms)
        return delay

    def _arrival_ms(self, packet: Packet) -> int:
        at = self.scheduler.now_ms + self._delay_ms()
        if self.swarm.fifo:
            link = (packet.src, packet.dst)
            at = max(at, self._link_free.get(link, 0))
            self._link_free[link] = at
        return at

    def send(self, packet: Packet) -> None:
        """Put ``packet`` on the wire (it may be cut, lost, duplicated or delayed)."""
        if (packet.src, packet.dst) in self.cuts:
            self.stats["cut"] += 1
            return
        s, rng = self.swarm, self.rng
        if not self.reliable and s.p_drop and rng.random() < s.p_drop:
            self.stats["dropped"] += 1
            return
        if s.p_codec and rng.random() < s.p_codec:
            packet = self._through_codec(packet)
        self.scheduler.at(self._arrival_ms(packet), packet)
        if packet.src > 0 and packet.kind in _REPLAYABLE and s.replays:
            self._keep(packet)
        if (not self.reliable and s.p_dup and packet.src > 0
                and rng.random() < s.p_dup):
            self.stats["duplicated"] += 1
            self.scheduler.at(self._arrival_ms(packet), replace(packet))

    def arrives(self, packet: Packet) -> bool:
        """False when a cut made since it left stops ``packet`` on arrival."""
        if (packet.src, packet.dst) in self.cuts:
            self.stats["cut"] += 1
            return False
        return True

    # ------------------------------------------------------------------ replays

    def _keep(self, packet: Packet) -> None:
        self._sent += 1
        if self._sent % 8 == 0:
            self._recent.append((self.scheduler.now_ms, packet))
            if self._sent % 64 == 0:
                self._old.append((self.scheduler.now_ms, packet))

    def replay(self, life_of: Callable[[int], int], min_age_ms: int) -> Packet | None:
        """Deliver again, now (plus a delay), one kept message at least ``min_age_ms``
        old, to its receiver's current process; None if none is that old.  Peer replies
        are never kept: a ROUTER drops what is addressed to a connection that is gone."""
        now = self.scheduler.now_ms
        ring = self._old if self._old and self.rng.random() < 0.5 else self._recent
        old = [p for t, p in ring if now - t >= min_age_ms]
        if not old:
            return None
        packet = replace(self.rng.choice(old))
        packet.life = life_of(packet.dst)
        self.stats["replayed"] += 1
        self.scheduler.at(self._arrival_ms(packet), packet)
        return packet

    # ------------------------------------------------------------------ faults

    def cut(self, pairs: list[tuple[int, int]]) -> None:
        """Replace every cut by these one-way cuts."""
        self.cuts = set(pairs)

    def heal(self) -> None:
        self.cuts = set()

    # ------------------------------------------------------------------ codec

    def _through_codec(self, packet: Packet) -> Packet:
        """Encode and decode ``packet``'s message with the real codec; deliver the copy."""
        self.stats["codec_roundtrips"] += 1
        body = packet.body
        decoded: object
        if packet.kind is Kind.REQUEST:
            data = (encode_peer_request(body) if isinstance(body, PEER_REQUESTS)
                    else encode_request(body))
            decoded = decode_request(data)
        elif packet.kind is Kind.BROADCAST:
            decoded = decode_broadcast(encode_broadcast(body))
        elif packet.kind is Kind.PEER_REPLY:
            decoded = decode_peer_reply(encode_peer_reply(body))
        else:
            decoded = decode_reply(encode_reply(body))
        if decoded != body:
            raise SimFailure(f"the wire codec changed a {packet.kind.value}: "
                             f"{body!r} -> {decoded!r}")
        return replace(packet, body=decoded)
