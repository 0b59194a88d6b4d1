"""The Python client against misbehaving servers: every failure is a ZCounterError."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from harness import FakeRouter, free_port, write_config

from zcounter import Client, ConfigError, ProtocolError, Unavailable, ZCounterError
from zcounter.config import ClusterConfig, load_config


@contextmanager
def fake_node(tmp_path: Path, answer: Callable[[Any], bytes | None]) -> Iterator[Client]:
    """A client of a one-node cluster whose node is a stand-in answering ``answer``."""
    with FakeRouter(answer) as node, Client(node=1, config=config_for(tmp_path, node.endpoint),
                                            timeout=2) as client:
        yield client


def config_for(tmp_path: Path, router: str) -> ClusterConfig:
    port = int(router.rsplit(":", 1)[1])
    return load_config(write_config(tmp_path / "c.toml", {1: ("127.0.0.1", port, free_port())}))


def echo(extra: dict[str, Any]) -> Callable[[Any], bytes]:
    """Answer every request with its own id and ``extra``."""
    return lambda request: orjson.dumps({"id": request["id"], **extra})


@pytest.mark.parametrize("reply", [b"garbage", b"[]", b'{"ok": "yes"}',
                                   b'{"ok": true, "node": 1, "count": 9223372036854775808}',
                                   b'{"ok": true, "node": 1, "count": "1"}',
                                   b'{"ok": false, "node": 1}',
                                   b'{"ok": false, "node": 1, "error": "nope", "message": ""}'])
def test_malformed_replies_raise_protocol_error(tmp_path, reply):
    with fake_node(tmp_path, lambda _: reply) as c, pytest.raises(ProtocolError) as info:
        c.get_count()
    assert isinstance(info.value, ZCounterError)


@pytest.mark.parametrize("extra", [
    {"ok": True, "node": 1, "count": 1, "states": {"": {}}},
    {"ok": True, "node": 1, "count": 1, "states": {"default": {"1.x": [1]}}},
    {"ok": True, "node": 1, "count": 1, "states": {"default": {"1.0123456789ab": [1, 0, 2]}}},
    {"ok": True, "node": 1, "count": 1, "counts": [1, "2"]},
    {"ok": True, "node": 0, "count": 1},
])
def test_malformed_replies_with_the_right_tag_raise_protocol_error(tmp_path, extra):
    with fake_node(tmp_path, echo(extra)) as c, pytest.raises(ProtocolError):
        c.get_counts(["default", "other"])


@pytest.mark.parametrize("extra", [
    {"ok": True, "node": 1},  # a pong
    {"ok": True, "node": 1, "count": 1},  # one count for two keys
    {"ok": True, "node": 1, "count": 1, "counts": [1, 2, 3]},  # three for two
    {"ok": True, "node": 1, "keys": [["a", 1]], "more": False},
    {"ok": True, "node": 1, "status": {}},
])
def test_a_reply_that_does_not_answer_the_request_is_a_protocol_error(tmp_path, extra):
    """Well-formed, correctly tagged, but not an answer to what was asked."""
    with fake_node(tmp_path, echo(extra)) as c, pytest.raises(ProtocolError):
        c.get_counts(["default", "other"])


def test_a_keys_page_with_bad_entries_is_a_protocol_error(tmp_path):
    for keys in ([["", 1]], [["a", "1"]], [["a"]], "a"):
        with fake_node(tmp_path, echo({"ok": True, "node": 1, "keys": keys,
                                       "more": False})) as c, pytest.raises(ProtocolError):
            list(c.keys())


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
    with Client() as c:
        with pytest.raises(ConfigError):
            c.increment(wait="sometimes")  # type: ignore[arg-type]
        with pytest.raises(ConfigError):
            c.get_counts(["a"], read="most")  # type: ignore[arg-type]
        with pytest.raises(ConfigError):
            list(c.keys(limit=-1))
        with pytest.raises(ConfigError):
            c.get_counts([f"k{i}" for i in range(10_001)])


def test_an_error_code_this_client_does_not_know_stops_the_request(tmp_path):
    """A newer node may refuse with a code this client has no member for: the client
    raises a ProtocolError naming it, at once - no retry, no other node - since nothing
    says whether the increment was applied."""
    reply = echo({"ok": False, "node": 1, "error": "expired", "message": "from the future"})
    with FakeRouter(reply) as node, FakeRouter(reply) as other:
        config = load_config(write_config(tmp_path / "c.toml", {
            n: ("127.0.0.1", int(r.endpoint.rsplit(":", 1)[1]), free_port())
            for n, r in ((1, node), (2, other))}))
        with Client(node=1, config=config, timeout=2, retries=3, failover=True) as c, \
                pytest.raises(ProtocolError, match="'expired'"):
            c.increment()
        assert [m["op"] for m in node.received] == ["increment"] and other.received == []
