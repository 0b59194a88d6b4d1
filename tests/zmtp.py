"""ZMTP 3.0 spoken by hand over a plain TCP socket (RFC 23), for hostile-input tests: a
peer that libzmq would never be, e.g. one whose message never ends."""

from __future__ import annotations

import socket
import struct

#: A ZMTP 3.1 PING command (TTL 1 s, no context): the peer answers it with a PONG.
PING = b"\x04\x07\x04PING\x00\x0a"


def greeting(version: tuple[int, int] = (3, 0)) -> bytes:
    """The 64-byte greeting: NULL mechanism, as a client (3.1 for PING/PONG)."""
    return (b"\xff" + b"\x00" * 8 + b"\x7f" + bytes(version) + b"NULL".ljust(20, b"\x00")
            + b"\x00" + b"\x00" * 31)


def ready(socket_type: bytes = b"DEALER") -> bytes:
    """The NULL mechanism's READY command."""
    name = b"Socket-Type"
    body = (b"\x05READY" + bytes([len(name)]) + name + struct.pack(">I", len(socket_type))
            + socket_type)
    return b"\x04" + bytes([len(body)]) + body


def frame(body: bytes, more: bool) -> bytes:
    """One message frame; ``more``: another frame of the same message follows."""
    flags = 0x01 if more else 0x00
    if len(body) < 256:
        return bytes([flags, len(body)]) + body
    return bytes([flags | 0x02]) + struct.pack(">Q", len(body)) + body


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        part = sock.recv(n - len(data))
        if not part:
            raise ConnectionError("closed during the ZMTP handshake")
        data += part
    return data


def connect(endpoint: str, timeout: float = 5.0,
            version: tuple[int, int] = (3, 0)) -> socket.socket:
    """A TCP connection to ``endpoint`` (``tcp://HOST:PORT``) that has done the NULL
    handshake as a DEALER, step by step as libzmq does: frames pipelined behind the
    handshake before the node's READY arrived made the node drop the connection."""
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    sock.sendall(greeting(version))
    _recv_exactly(sock, 64)
    sock.sendall(ready())
    sock.recv(256)  # the node's READY
    return sock
