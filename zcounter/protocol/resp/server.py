"""The server commands: ``DBSIZE`` and ``INFO`` (the core's ``Status``: key counts are
state, so they are answered after the commit like any read) and ``COMMAND`` (the table of
:mod:`.commands`, answered at once)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..messages import Status
from . import arguments as A
from . import replies as R
from .answers import CommandHandler, Slot, status_reply
from .commands import BY_NAME, command_docs, command_info
from .info import render_info

if TYPE_CHECKING:
    from .session import Session

_COMMAND_HELP = ("COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                 "(no subcommand)", "    Return details about all commands.",
                 "COUNT", "    Return the total number of commands.",
                 "DOCS [<command-name> ...]", "    Return documentation about commands.",
                 "INFO [<command-name> ...]", "    Return details about the commands.",
                 "HELP", "    Print this help.")


def dbsize(s: Session, words: list[bytes], slot: Slot) -> None:
    s.ask(slot, Status, lambda r: status_reply(r, lambda st: R.integer(int(st["live_keys"]))))


def info(s: Session, words: list[bytes], slot: Slot) -> None:
    sections = [w.decode("utf-8", "replace").lower() for w in words[1:]]
    s.ask(slot, Status, lambda r: status_reply(
        r, lambda st: R.bulk(render_info(sections, st, s.door, s.now))))


def command(s: Session, words: list[bytes], slot: Slot) -> None:
    if len(words) == 1:
        slot.data = R.array(command_info())
        return
    sub = A.subcommand(words)
    names = [w.lower().decode("latin-1") for w in words[2:]] or None
    if sub == "count":
        slot.data = R.integer(len(BY_NAME))
    elif sub == "info":
        slot.data = R.array(command_info(names))
    elif sub == "docs":
        slot.data = R.array(command_docs(names))
    else:
        slot.data = R.array([R.Status(line) for line in _COMMAND_HELP])


HANDLERS: dict[str, CommandHandler] = {"dbsize": dbsize, "info": info, "command": command}

__all__ = ["HANDLERS"]
