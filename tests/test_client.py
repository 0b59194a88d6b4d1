"""The Python client against misbehaving servers: every failure is a ZCounterError."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import zmq
from harness import free_port, write_config

from zcounter import Client, ConfigError, ProtocolError, Unavailable, ZCounterError
from zcounter.config import load_config


@contextmanager
def fake_node(reply: bytes) -> Iterator[str]:
    """A ROUTER that answers every request with ``reply`` (until the test ends)."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            if sock.poll(20):
                ident, _body = sock.recv_multipart()
                sock.send_multipart([ident, reply])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{port}"
    finally:
        stop.set()
        thread.join()
        sock.close()
        ctx.term()


def config_for(tmp_path, router: str):
    port = int(router.rsplit(":", 1)[1])
    return load_config(write_config(tmp_path / "c.toml", {1: ("127.0.0.1", port, free_port())}))


@pytest.mark.parametrize("reply", [b"garbage", b"[]", b'{"ok": "yes"}',
                                   b'{"ok": true, "node": 1, "count": -1}',
                                   b'{"ok": false, "node": 1}'])
def test_malformed_replies_raise_protocol_error(tmp_path, reply):
    with fake_node(reply) as router, Client(node=1, config=config_for(tmp_path, router),
                                            timeout=2) as c, pytest.raises(ProtocolError) as info:
        c.get_count()
    assert isinstance(info.value, ZCounterError)


def test_silent_node_times_out_within_the_deadline(tmp_path):
    cfg = load_config(write_config(tmp_path / "c.toml",
                                   {1: ("127.0.0.1", free_port(), free_port())}))
    with Client(node=1, config=cfg, timeout=0.3) as c, pytest.raises(Unavailable,
                                                                       match="node 1"):
        c.increment()


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError):
        Client(node=9)
    with pytest.raises(ConfigError):
        Client(timeout=0)
    with Client() as c, pytest.raises(ConfigError):
        c.increment(wait="sometimes")  # type: ignore[arg-type]
