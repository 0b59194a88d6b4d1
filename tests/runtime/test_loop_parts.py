"""The poll loop's parts in process, over inproc sockets and a real core: what the read
phase (runtime/inbound.py) reports and drops, and how a send that fails is counted
(runtime/outbound.py).  The loop's own integration is the integration suite's."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
import zmq

sys.path.insert(0, str(Path(__file__).parent.parent / "protocol"))
from corelink import core

from zcounter.protocol.codec import encode_peer_reply
from zcounter.protocol.messages import ErrorCode, RidPage
from zcounter.runtime.inbound import Inbound
from zcounter.runtime.outbound import Outbound

GET = orjson.dumps({"op": "get", "id": 1, "key": "default"})


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    context: zmq.Context[Any] = zmq.Context()
    yield context
    context.destroy(linger=0)


def pair(ctx: zmq.Context[Any], kind: int, other: int,
         name: str) -> tuple[zmq.Socket[Any], zmq.Socket[Any]]:
    bound, connected = ctx.socket(kind), ctx.socket(other)
    bound.bind(f"inproc://{name}")
    connected.connect(f"inproc://{name}")
    return bound, connected


def inbound(node: Any, router: Any, sub: Any, peer_of: dict[Any, int],
            max_batch: int = 100) -> Inbound:
    guard = SimpleNamespace(revoked=False, is_peer=lambda ident: False)
    watch = SimpleNamespace(enabled=False)
    return Inbound(node, guard, router, sub, peer_of, max_batch, watch,  # type: ignore[arg-type]
                   None)


def test_the_router_read_says_how_many_and_whether_it_emptied_the_socket(
        ctx: zmq.Context[Any]) -> None:
    router, client = pair(ctx, zmq.ROUTER, zmq.DEALER, "router")
    node = core(1)
    reader = inbound(node, router, ctx.socket(zmq.SUB), {}, max_batch=2)
    for _ in range(3):
        client.send(GET)
    assert router.poll(1000)
    # The watch reads "not emptied" as "more may be queued" (runtime/watch.py).
    assert reader.read_router(0.0) == (2, False)
    assert reader.read_router(0.0) == (1, True)
    assert reader.read_router(0.0) == (0, True)


def test_a_peer_message_of_two_frames_is_dropped_and_counted(ctx: zmq.Context[Any]) -> None:
    sub, publisher = pair(ctx, zmq.PAIR, zmq.PAIR, "sub")
    node = core(1)
    reader = inbound(node, ctx.socket(zmq.ROUTER), sub, {})
    publisher.send_multipart([b"x", b"y"])
    assert sub.poll(1000)
    assert reader.read_peer(sub, 0.0) == 1
    assert node.stats.dropped_peer_messages == 1
    assert node.stats.peer_bytes_received == 1


def test_a_reply_on_one_peers_connection_claiming_another_is_dropped(
        ctx: zmq.Context[Any]) -> None:
    dealer, peer = pair(ctx, zmq.PAIR, zmq.PAIR, "dealer")
    node = core(1)
    reader = inbound(node, ctx.socket(zmq.ROUTER), ctx.socket(zmq.SUB), {dealer: 2})
    peer.send(encode_peer_reply(RidPage(1, 3, (), "e3", 0, False)))
    assert dealer.poll(1000)
    assert reader.read_peer(dealer, 0.0) == 1
    assert node.stats.dropped_peer_messages == 1


def test_a_reply_to_a_client_gone_is_counted_not_raised(ctx: zmq.Context[Any]) -> None:
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    router.bind("inproc://gone")
    node = core(1)
    node.refuse(b"nobody", None, ErrorCode.BAD_REQUEST, "test")
    out = Outbound(router, ctx.socket(zmq.PUB), {}, node.stats)
    out.send(node.take_outputs().messages)
    assert node.stats.replies_undeliverable == 1
    assert node.stats.send_failed == 0
