"""An in-memory link between sans-IO node cores (the pattern of h11's tests: drive the
pure core directly, connect two cores through a hand-driven network).

Every message crosses the codec on its way (encode, then decode), so the cores only
ever see what a real peer could send them.  ``cut`` holds directed (src, dst) pairs
whose messages are lost; ``lose`` can drop chosen messages.  Nothing here reads a clock:
tests pass ``now`` explicitly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zcounter.config import Settings
from zcounter.model.keyspace import Keyspace
from zcounter.protocol import codec
from zcounter.protocol.messages import PeerReply, RidEntry
from zcounter.protocol.node import NodeCore
from zcounter.protocol.outputs import Outputs, Persist, Publish, ToClient, ToPeer

S = Settings(heartbeat_interval_s=0.1, peer_timeout_s=0.5, repair_interval_s=0.25,
             retry_interval_s=0.05, repair_check_interval_s=30.0)


def incarnation(node: int) -> str:
    return f"{node:012x}"


def slot(node: int) -> str:
    return f"{node}.{incarnation(node)}"


def keyspace(content: dict[str, dict[str, Any]]) -> Keyspace:
    """A flushed keyspace holding ``content`` (key -> state by slot name)."""
    ks = Keyspace()
    for key, state in content.items():
        ks.merge(key, state)
    ks.flush()
    return ks


def core(node: int, n: int = 3, now: float = 0.0, *, settings: Settings = S,
         keyspace: Keyspace | None = None, rids: list[RidEntry] | None = None,
         fresh: bool = False, epoch: str | None = None) -> NodeCore:
    return NodeCore(node, list(range(1, n + 1)), incarnation(node), epoch or f"e{node}",
                    settings, now, keyspace, rids, fresh)


def client_replies(out: Outputs) -> list[Any]:
    return [m.reply for m in out.messages
            if isinstance(m, ToClient) and not isinstance(m.client, tuple)]


def published(out: Outputs) -> list[Any]:
    return [m.message for m in out.messages if isinstance(m, Publish)]


@dataclass
class Delivered:
    src: int
    dst: int
    message: Any


@dataclass
class Link:
    cores: dict[int, NodeCore]
    cut: set[tuple[int, int]] = field(default_factory=set)
    #: Called for each message about to be delivered; True loses it.
    lose: Callable[[Delivered], bool] = lambda d: False
    #: (client, reply) for every reply to a client, decoded as a client would.
    replies: list[tuple[Any, Any]] = field(default_factory=list)
    persisted: dict[int, list[Persist]] = field(default_factory=dict)
    delivered: list[Delivered] = field(default_factory=list)
    #: When each core last published a heartbeat.
    heartbeats: dict[int, float] = field(default_factory=dict)
    now: float = 0.0

    @classmethod
    def of(cls, n: int = 3, **kw: Any) -> Link:
        return cls({i: core(i, n, **kw) for i in range(1, n + 1)})

    # -------------------------------------------------------------- driving

    def request(self, node: int, request: Any, client: str = "cli") -> None:
        """A client request, through the codec."""
        self.cores[node].handle_request(
            client, codec.decode_request(codec.encode_request(request)), self.now)

    def step(self, nid: int) -> Outputs:
        """One loop iteration of node ``nid``'s runtime after its inputs: ``tick(now)``,
        take the outputs, "commit" them, send them."""
        node = self.cores[nid]
        node.tick(self.now)
        out = node.take_outputs()
        if any(isinstance(m, Publish) and type(m.message).__name__ == "Heartbeat"
               for m in out.messages):
            self.heartbeats[nid] = self.now
        if out.persist:
            self.persisted.setdefault(nid, []).append(out.persist)
        for m in out.messages:
            self._deliver(nid, m)
        return out

    def flush(self) -> None:
        """End the batch at every core and deliver everything, until quiet."""
        for _ in range(50):
            moved = False
            for nid in self.cores:
                moved |= bool(self.step(nid).messages)
            if not moved:
                return
        raise AssertionError("the cores never went quiet")

    def run(self, until: float, step: float = 0.01) -> None:
        """Advance time by ``step`` up to ``until``, every core running a loop iteration
        each time (as a runtime whose poll timed out would), delivering as we go."""
        while self.now < until - 1e-9:
            self.now = round(self.now + step, 6)
            self.flush()

    def isolate(self, nid: int) -> None:
        for other in self.cores:
            if other != nid:
                self.cut |= {(nid, other), (other, nid)}

    def heal(self) -> None:
        self.cut.clear()

    # -------------------------------------------------------------- reading

    def reply(self, tag: Any) -> Any:
        (reply,) = [r for _, r in self.replies if r.id == tag]
        return reply

    def count(self, kind: type, dst: int | None = None) -> int:
        return sum(1 for d in self.delivered if isinstance(d.message, kind)
                   and (dst is None or d.dst == dst))

    def of_kind(self, kind: type, dst: int | None = None) -> list[Any]:
        return [d.message for d in self.delivered if isinstance(d.message, kind)
                and (dst is None or d.dst == dst)]

    # -------------------------------------------------------------- the wire

    def _deliver(self, src: int, m: Any) -> None:
        now = self.now
        if isinstance(m, Publish):
            data = codec.encode_broadcast(m.message)
            for dst, node in self.cores.items():
                if dst != src and self._passes(src, dst, m.message):
                    node.handle_broadcast(codec.decode_broadcast(data), now)
        elif isinstance(m, ToPeer):
            if m.peer in self.cores and self._passes(src, m.peer, m.request):
                request = codec.decode_request(codec.encode_peer_request(m.request))
                self.cores[m.peer].handle_request(("peer", src), request, now)
        elif isinstance(m.client, tuple) and m.client[0] == "peer":
            dst = m.client[1]
            assert isinstance(m.reply, PeerReply.__args__)  # type: ignore[attr-defined]
            if self._passes(src, dst, m.reply):
                reply = codec.decode_peer_reply(codec.encode_peer_reply(m.reply))
                self.cores[dst].handle_peer_reply(reply, now)
        else:
            self.replies.append((m.client, codec.decode_reply(codec.encode_reply(m.reply))))

    def _passes(self, src: int, dst: int, message: Any) -> bool:
        d = Delivered(src, dst, message)
        if (src, dst) in self.cut or self.lose(d):
            return False
        self.delivered.append(d)
        return True
