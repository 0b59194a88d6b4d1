"""The Redis-protocol (RESP2) door, sans I/O.

* :mod:`.session` - one connection: bytes in, core requests and reply bytes out, replies
  in command order; :mod:`.door` - what a node's sessions share, and the core's name for
  a connection;
* :mod:`.dispatch` - command name -> handler, one module per family: :mod:`.connection`,
  :mod:`.counters`, :mod:`.keyspace`, :mod:`.server`, :mod:`.wait`; with
  :mod:`.arguments` (Redis's argument checks and error texts) and :mod:`.answers` (a
  command's slot, core answers -> replies);
* :mod:`.commands` (the command table, ``COMMAND`` and ``COMMAND DOCS``), :mod:`.replies`
  (RESP2 encoding), :mod:`.glob` (Redis's ``KEYS`` patterns), :mod:`.info` (``INFO``),
  :mod:`.framing` (command boundaries and header bounds, checked before hiredis parses),
  :mod:`.refusals` (why input was refused, counted).

The sockets are :mod:`zcounter.runtime.resp`'s."""

from .door import Door, RespClient
from .session import Session

__all__ = ["Door", "RespClient", "Session"]
