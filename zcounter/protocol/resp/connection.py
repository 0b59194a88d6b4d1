"""The connection commands, answered at once without the core: ``PING``, ``ECHO``,
``SELECT``, ``QUIT``, ``AUTH``, ``HELLO`` (RESP2 only) and ``CLIENT`` (``ID``, ``GETNAME``,
``SETNAME``, ``SETINFO``, ``HELP``).

What they keep lives on the session for the connection's life, each bounded: the name
and the two client-info strings (``RESP_MAX_CLIENT_STRING_BYTES`` each) and the count of
wrong passwords (``RESP_MAX_AUTH_FAILURES``, then the connection closes).
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from ...limits import RESP_MAX_AUTH_FAILURES, RESP_MAX_CLIENT_STRING_BYTES
from . import arguments as A
from . import replies as R
from .answers import CommandHandler, Slot
from .commands import REDIS_VERSION
from .refusals import Refusal

if TYPE_CHECKING:
    from .session import Session

_CLIENT_HELP = ("CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GETNAME", "    Return the name of the current connection.",
                "ID", "    Return the ID of the current connection.",
                "SETINFO <option> <value>", "    Set client meta attr (LIB-NAME, LIB-VER).",
                "SETNAME <connection-name>", "    Assign the name <connection-name> to the "
                "current connection.", "HELP", "    Print this help.")
#: Commands a connection may send before AUTH when a password is set (Redis's no_auth).
BEFORE_AUTH = frozenset(("auth", "hello", "quit"))


def ping(s: Session, words: list[bytes], slot: Slot) -> None:
    if len(words) > 2:
        raise A.BadArgument(A.wrong_arity("ping"))
    slot.data = R.PONG if len(words) == 1 else R.bulk(words[1])


def echo(s: Session, words: list[bytes], slot: Slot) -> None:
    slot.data = R.bulk(words[1])


def select(s: Session, words: list[bytes], slot: Slot) -> None:
    index = A.int64(words[1])
    slot.data = R.OK if index == 0 else R.error("ERR DB index is out of range")


def quit_(s: Session, words: list[bytes], slot: Slot) -> None:
    slot.data = R.OK
    s.closing = True


def _authenticate(s: Session, user: bytes | None, password: bytes) -> str | None:
    """None if accepted, else the error to answer."""
    expected = s.door.password
    if expected is None:
        if user is None:
            return ("ERR AUTH <password> called without any password configured for the "
                    "default user. Are you sure your configuration is correct?")
        return None if user == b"default" else A.WRONGPASS
    if (user is None or user == b"default") and hmac.compare_digest(password, expected):
        s.authenticated = True
        return None
    # Guessing is slowed to a new connection per RESP_MAX_AUTH_FAILURES tries: the
    # failure past them is answered, then the connection closed.
    s.auth_failures += 1
    s.door.refuse(Refusal.AUTH_FAILURE)
    if s.auth_failures > RESP_MAX_AUTH_FAILURES:
        s.door.refuse(Refusal.AUTH_FAILURES)
        s.protocol_error = f"{s.auth_failures} wrong passwords"
        s.closing = True
    return A.WRONGPASS


def auth(s: Session, words: list[bytes], slot: Slot) -> None:
    if len(words) > 3:
        raise A.BadArgument(A.SYNTAX)
    user = words[1] if len(words) == 3 else None
    failure = _authenticate(s, user, words[-1])
    slot.data = R.OK if failure is None else R.error(failure)


def hello(s: Session, words: list[bytes], slot: Slot) -> None:
    if len(words) >= 2:
        version = A.int64(words[1], "ERR Protocol version is not an integer or out of range")
        if version != 2:
            # RESP3 is not spoken: clients that try it fall back to RESP2 on this.
            raise A.BadArgument("NOPROTO unsupported protocol version")
    name: bytes | None = None
    i = 2
    while i < len(words):
        option = words[i].lower()
        more = len(words) - 1 - i
        if option == b"auth" and more >= 2:
            failure = _authenticate(s, words[i + 1], words[i + 2])
            if failure is not None:
                raise A.BadArgument(failure)
            i += 3
        elif option == b"setname" and more >= 1:
            name = _client_string(s, words[i + 1], A.BAD_NAME)
            i += 2
        else:
            raise A.BadArgument("ERR Syntax error in HELLO option "
                                f"'{words[i].decode('utf-8', 'replace')}'")
    if not s.authenticated:
        raise A.BadArgument(
            "NOAUTH HELLO must be called with the client already authenticated, "
            "otherwise the HELLO <proto> AUTH <user> <pass> option can be used to "
            "authenticate the client and select the RESP protocol version at the same time")
    if name is not None:
        s.name = name or None
    slot.data = R.array(["server", "zcounter", "version", REDIS_VERSION, "proto", 2,
                         "id", s.id, "mode", "standalone", "role", "master",
                         "modules", []])


def _client_string(s: Session, raw: bytes, bad: str) -> bytes:
    """A connection name or client-info string, kept for the connection's life:
    printable (Redis's rule) and at most ``RESP_MAX_CLIENT_STRING_BYTES``."""
    if len(raw) > RESP_MAX_CLIENT_STRING_BYTES:
        s.door.refuse(Refusal.CLIENT_STRING_BYTES)
        raise A.BadArgument(f"ERR too long: {len(raw)} bytes, zcounter keeps at most "
                            f"{RESP_MAX_CLIENT_STRING_BYTES} per connection name or "
                            "client-info string")
    if raw and not A.printable(raw):
        raise A.BadArgument(bad)
    return raw


def client(s: Session, words: list[bytes], slot: Slot) -> None:
    sub = A.subcommand(words)
    if sub == "id":
        slot.data = R.integer(s.id)
    elif sub == "getname":
        slot.data = R.NIL if s.name is None else R.bulk(s.name)
    elif sub == "setname":
        s.name = _client_string(s, words[2], A.BAD_NAME) or None
        slot.data = R.OK
    elif sub == "setinfo":
        attr = words[2].lower()
        if attr not in (b"lib-name", b"lib-ver"):
            raise A.BadArgument(f"ERR Unrecognized option '{A.text(words[2])}'")
        _client_string(s, words[3], f"ERR {words[2].decode('latin-1')} cannot contain "
                                    "spaces, newlines or special characters.")
        if attr == b"lib-name":
            s.lib_name = words[3]
        else:
            s.lib_ver = words[3]
        slot.data = R.OK
    else:
        slot.data = R.array([R.Status(line) for line in _CLIENT_HELP])


HANDLERS: dict[str, CommandHandler] = {
    "ping": ping, "echo": echo, "select": select, "quit": quit_, "auth": auth, "hello": hello,
    "client": client}

__all__ = ["BEFORE_AUTH", "HANDLERS"]
