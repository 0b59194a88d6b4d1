"""The dispatch table: command name (lower case, as :data:`.commands.BY_NAME` spells it)
to its handler, one module per command family.

Every command of :mod:`.commands` has exactly one handler here, checked at import: a
command added to the table without a handler (or a handler without its ``COMMAND``
entry, arity and docs) fails at once rather than answering "unknown command" at run time.
"""

from __future__ import annotations

from . import connection, counters, expiry, keyspace, server, wait
from .answers import CommandHandler
from .commands import BY_NAME

FAMILIES = (connection, counters, expiry, keyspace, server, wait)


def _table() -> dict[str, CommandHandler]:
    table: dict[str, CommandHandler] = {}
    for family in FAMILIES:
        twice = table.keys() & family.HANDLERS.keys()
        if twice:
            raise RuntimeError(f"{family.__name__} handles {sorted(twice)} again")
        table.update(family.HANDLERS)
    if table.keys() != BY_NAME.keys():
        raise RuntimeError("commands without a handler: "
                           f"{sorted(BY_NAME.keys() - table.keys())}; handlers without a "
                           f"command: {sorted(table.keys() - BY_NAME.keys())}")
    return table


HANDLERS: dict[str, CommandHandler] = _table()

__all__ = ["FAMILIES", "HANDLERS"]
