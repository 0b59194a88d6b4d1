"""A lossy zmq proxy between a client and one node, for exactly-once tests.

The proxy binds a ROUTER that clients connect to in place of the node's ROUTER, and for
every client it opens its own DEALER to the node, so each reply finds its way back to the
client it belongs to without decoding anything.  Requests are forwarded; replies are
dropped with probability ``drop_replies``, decided by a seeded RNG so a failure replays.

Dropping a *reply* is the interesting fault: the node has applied (and committed) the
increment, the client cannot tell, and retries it.  ``blocked = True`` makes the proxy
drop everything in both directions, i.e. the client's link to the node is cut while the
node keeps running.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from types import TracebackType

import zmq

_POLL_MS = 20


@dataclass
class ProxyStats:
    requests: int = 0
    replies: int = 0
    dropped_requests: int = 0
    dropped_replies: int = 0


class LossyProxy:
    """Use as a context manager; ``endpoint`` is where clients connect."""

    def __init__(self, target: str, drop_replies: float = 0.0, drop_requests: float = 0.0,
                 seed: int = 0, host: str = "127.0.0.1") -> None:
        self.target = target
        self.drop_replies = drop_replies
        self.drop_requests = drop_requests
        self.blocked = False
        self.stats = ProxyStats()
        self._rng = random.Random(seed)
        self._host = host
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.endpoint = ""
        self._thread = threading.Thread(target=self._run, name="lossy-proxy", daemon=True)

    def start(self) -> LossyProxy:
        self._thread.start()
        if not self._ready.wait(5.0) or self._error is not None:
            raise RuntimeError(f"lossy proxy did not start: {self._error}")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def __enter__(self) -> LossyProxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _lose(self, probability: float) -> bool:
        # Always draw, so the sequence of decisions depends only on the seed and the
        # number of messages, not on which probabilities are zero.
        return self._rng.random() < probability or self.blocked

    def _run(self) -> None:
        # Sockets are not thread-safe: the whole proxy lives in this thread.
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        front = ctx.socket(zmq.ROUTER)
        front.setsockopt(zmq.LINGER, 0)
        backs: dict[bytes, zmq.Socket[bytes]] = {}
        owner: dict[zmq.Socket[bytes], bytes] = {}
        poller = zmq.Poller()
        try:
            port = front.bind_to_random_port(f"tcp://{self._host}")
            self.endpoint = f"tcp://{self._host}:{port}"
            poller.register(front, zmq.POLLIN)
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()
            front.close(linger=0)
            ctx.term()
            return
        self._ready.set()
        try:
            while not self._stop.is_set():
                for sock, _ in poller.poll(_POLL_MS):
                    frames = sock.recv_multipart()
                    if sock is front:
                        client, body = frames[0], frames[1:]
                        self.stats.requests += 1
                        if self._lose(self.drop_requests):
                            self.stats.dropped_requests += 1
                            continue
                        back = backs.get(client)
                        if back is None:
                            back = ctx.socket(zmq.DEALER)
                            back.setsockopt(zmq.LINGER, 0)
                            back.connect(self.target)
                            backs[client] = back
                            owner[back] = client
                            poller.register(back, zmq.POLLIN)
                        back.send_multipart(body)
                    else:
                        self.stats.replies += 1
                        if self._lose(self.drop_replies):
                            self.stats.dropped_replies += 1
                            continue
                        front.send_multipart([owner[sock], *frames])
        finally:
            for back in backs.values():
                back.close(linger=0)
            front.close(linger=0)
            ctx.term()
