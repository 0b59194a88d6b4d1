"""The Redis-protocol (RESP2) door, sans I/O: :mod:`.session` (one connection: commands in,
core requests and replies out), :mod:`.commands` (the command table, ``COMMAND`` and
``COMMAND DOCS``), :mod:`.replies` (RESP2 encoding), :mod:`.glob` (Redis's ``KEYS``
patterns), :mod:`.info` (``INFO``), :mod:`.framing` (command boundaries and header bounds,
checked before hiredis parses), :mod:`.refusals` (why input was refused, counted).
The sockets are :mod:`zcounter.runtime.resp`'s."""

from .session import Door, RespClient, Session

__all__ = ["Door", "RespClient", "Session"]
