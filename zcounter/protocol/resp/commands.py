"""The commands the door serves: arity, flags and documentation, in Redis's shapes.

``COMMAND`` / ``COMMAND INFO`` answer with Redis 7's ten-field entries (name, arity,
flags, first key, last key, key step, ACL categories, tips, key specs, subcommands) and
``COMMAND DOCS`` with summary, since, group and arguments: ``redis-cli`` builds its
``help`` and its typing hints from ``COMMAND DOCS`` at start-up (and falls back to
``COMMAND`` when that fails), so both must be well-formed (its parser asserts on types:
``src/redis-cli.c``, ``cliInitCommandHelpEntry``).

Arity follows Redis: ``n > 0`` exactly n words (the name included), ``-n`` at least n.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .replies import Status

#: The Redis version whose commands and replies the door imitates (INFO, HELLO).  Tools
#: read ``redis_version`` to decide what to send; the door answers as this version would.
REDIS_VERSION = "7.0.0"


@dataclass(frozen=True)
class Arg:
    name: str
    type: str  # string, integer, key, pattern, pure-token, oneof, block
    optional: bool = False
    multiple: bool = False
    token: str | None = None
    args: tuple[Arg, ...] = ()
    since: str | None = None

    def doc(self) -> list[object]:
        out: list[object] = ["name", self.name, "type", self.type]
        if self.token is not None:
            out += ["token", self.token]
        if self.since is not None:
            out += ["since", self.since]
        flags = [Status(f) for f, on in (("optional", self.optional),
                                         ("multiple", self.multiple)) if on]
        if flags:
            out += ["flags", flags]
        if self.args:
            out += ["arguments", [a.doc() for a in self.args]]
        return out


@dataclass(frozen=True)
class Spec:
    name: str  # lower case, as COMMAND reports it ("client|setname" for subcommands)
    arity: int
    flags: tuple[str, ...]
    group: str
    summary: str
    since: str = "1.0.0"
    keys: tuple[int, int, int] = (0, 0, 0)  # first key, last key, step
    acl: tuple[str, ...] = ()
    args: tuple[Arg, ...] = ()
    subcommands: tuple[Spec, ...] = field(default=())

    def accepts(self, words: int) -> bool:
        return words == self.arity if self.arity > 0 else words >= -self.arity

    def info(self) -> list[object]:
        first, last, step = self.keys
        return [self.name, self.arity, [Status(f) for f in self.flags], first, last, step,
                [Status(c) for c in self.acl], [], [], [s.info() for s in self.subcommands]]

    def docs(self) -> list[object]:
        out: list[object] = ["summary", self.summary, "since", self.since, "group", self.group,
                             "complexity", "O(1)" if self.keys == (1, 1, 1) else "O(N)"]
        if self.args:
            out += ["arguments", [a.doc() for a in self.args]]
        if self.subcommands:
            out += ["subcommands", _flat((s.name, s.docs()) for s in self.subcommands)]
        return out


def _flat(pairs: object) -> list[object]:
    out: list[object] = []
    for name, value in pairs:  # type: ignore[attr-defined]
        out += [name, value]
    return out


_KEY = Arg("key", "key")
_KEYS = Arg("key", "key", multiple=True)
_W = ("write", "denyoom", "fast")
_R = ("readonly", "fast")
_CONN = ("noscript", "loading", "stale", "fast")

_CLIENT = (
    Spec("client|id", 2, _CONN, "connection", "Returns the unique client ID of the connection.",
         "5.0.0", acl=("@slow", "@connection")),
    Spec("client|getname", 2, _CONN, "connection", "Returns the name of the connection.",
         "2.6.9", acl=("@slow", "@connection")),
    Spec("client|setname", 3, _CONN, "connection", "Sets the connection name.", "2.6.9",
         acl=("@slow", "@connection"), args=(Arg("connection-name", "string"),)),
    Spec("client|setinfo", 4, _CONN, "connection",
         "Sets information specific to the client or connection.", "7.2.0",
         acl=("@slow", "@connection"),
         args=(Arg("attr", "oneof", args=(Arg("libname", "string", token="LIB-NAME"),
                                          Arg("libver", "string", token="LIB-VER"))),)),
    Spec("client|help", 2, ("loading", "stale"), "connection",
         "Returns helpful text about the different subcommands.", "5.0.0",
         acl=("@slow", "@connection")),
)
_COMMAND = (
    Spec("command|count", 2, ("loading", "stale"), "server",
         "Returns a count of commands.", "2.8.13", acl=("@slow", "@connection")),
    Spec("command|info", -2, ("loading", "stale"), "server",
         "Returns information about one, multiple or all commands.", "2.8.13",
         acl=("@slow", "@connection"),
         args=(Arg("command-name", "string", optional=True, multiple=True),)),
    Spec("command|docs", -2, ("loading", "stale"), "server",
         "Returns documentary information about one, multiple or all commands.", "7.0.0",
         acl=("@slow", "@connection"),
         args=(Arg("command-name", "string", optional=True, multiple=True),)),
    Spec("command|help", 2, ("loading", "stale"), "server",
         "Returns helpful text about the different subcommands.", "5.0.0",
         acl=("@slow", "@connection")),
)

_CONDITION = Arg("condition", "oneof", optional=True, since="7.0.0", args=tuple(
    Arg(name, "pure-token", token=name.upper()) for name in ("nx", "xx", "gt", "lt")))
_EXPIRY_W = ("write", "fast")
_EXPIRY_ACL = ("@keyspace", "@write", "@fast")
_TTL_ACL = ("@keyspace", "@read", "@fast")


def _setter(name: str, since: str, unit: str, what: str) -> Spec:
    return Spec(name, -3, _EXPIRY_W, "generic",
                f"Sets the expiration time of a key {what}. zcounter: a replicated change, "
                "durable before the reply; at most 10 years ahead.", since, keys=(1, 1, 1),
                acl=_EXPIRY_ACL, args=(_KEY, Arg(unit, "integer"), _CONDITION))


def _reader(name: str, since: str, summary: str) -> Spec:
    return Spec(name, 2, _R, "generic", summary, since, keys=(1, 1, 1), acl=_TTL_ACL,
                args=(_KEY,))


_EXPIRY = (
    _setter("expire", "1.0.0", "seconds", "in seconds"),
    _setter("pexpire", "2.6.0", "milliseconds", "in milliseconds"),
    _setter("expireat", "1.2.0", "unix-time-seconds", "to a Unix timestamp"),
    _setter("pexpireat", "2.6.0", "unix-time-milliseconds",
            "to a Unix milliseconds timestamp"),
    Spec("persist", 2, _EXPIRY_W, "generic", "Removes the expiration time of a key.", "2.2.0",
         keys=(1, 1, 1), acl=_EXPIRY_ACL, args=(_KEY,)),
    _reader("ttl", "1.0.0", "Returns the expiration time in seconds of a key."),
    _reader("pttl", "2.6.0", "Returns the expiration time in milliseconds of a key."),
    _reader("expiretime", "7.0.0", "Returns the expiration time of a key as a Unix "
            "timestamp."),
    _reader("pexpiretime", "7.0.0", "Returns the expiration time of a key as a Unix "
            "milliseconds timestamp."),
)

SPECS: tuple[Spec, ...] = (
    Spec("ping", -1, _CONN, "connection", "Returns the server's liveliness response.",
         acl=("@fast", "@connection"), args=(Arg("message", "string", optional=True),)),
    Spec("echo", 2, _CONN, "connection", "Returns the given string.",
         acl=("@fast", "@connection"), args=(Arg("message", "string"),)),
    Spec("incr", 2, _W, "string", "Increments the integer value of a key by one. zcounter: a "
         "replicated counter, durable before the reply.", keys=(1, 1, 1),
         acl=("@write", "@string", "@fast"), args=(_KEY,)),
    Spec("incrby", 3, _W, "string", "Increments the integer value of a key by a number "
         "(zcounter: a step of at most 2^32 either way).", keys=(1, 1, 1),
         acl=("@write", "@string", "@fast"), args=(_KEY, Arg("increment", "integer"))),
    Spec("decr", 2, _W, "string", "Decrements the integer value of a key by one.",
         keys=(1, 1, 1), acl=("@write", "@string", "@fast"), args=(_KEY,)),
    Spec("decrby", 3, _W, "string", "Decrements a number from the integer value of a key.",
         keys=(1, 1, 1), acl=("@write", "@string", "@fast"),
         args=(_KEY, Arg("decrement", "integer"))),
    Spec("get", 2, _R, "string", "Returns the count of a key (nil if it has none).",
         keys=(1, 1, 1), acl=("@read", "@string", "@fast"), args=(_KEY,)),
    Spec("mget", -2, _R, "string", "Atomically returns the counts of one or more keys.",
         keys=(1, -1, 1), acl=("@read", "@string", "@fast"), args=(_KEYS,)),
    Spec("exists", -2, _R, "generic", "Determines whether one or more keys exist.",
         keys=(1, -1, 1), acl=("@keyspace", "@read", "@fast"), args=(_KEYS,)),
    Spec("del", -2, ("write",), "generic", "Resets one or more counters (an observed reset: "
         "updates this node had not seen survive).", keys=(1, -1, 1),
         acl=("@keyspace", "@write", "@slow"), args=(_KEYS,)),
    *_EXPIRY,
    Spec("scan", -2, ("readonly",), "generic", "Iterates over the key names in the database.",
         "2.8.0", acl=("@keyspace", "@read", "@slow"),
         args=(Arg("cursor", "integer"), Arg("pattern", "pattern", optional=True, token="MATCH"),
               Arg("count", "integer", optional=True, token="COUNT"),
               Arg("type", "string", optional=True, token="TYPE"))),
    Spec("keys", 2, ("readonly",), "generic", "Returns all key names that match a pattern.",
         acl=("@keyspace", "@read", "@slow", "@dangerous"), args=(Arg("pattern", "pattern"),)),
    Spec("dbsize", 1, _R, "server", "Returns the number of keys in the database.",
         acl=("@keyspace", "@read", "@fast")),
    Spec("info", -1, ("loading", "stale"), "server",
         "Returns information and statistics about the server.",
         acl=("@slow", "@dangerous"),
         args=(Arg("section", "string", optional=True, multiple=True),)),
    Spec("wait", 3, (), "generic", "Blocks until this connection's writes are held durably "
         "by that many other nodes, or the timeout (capped) passes.", "3.0.0",
         acl=("@slow", "@connection"),
         args=(Arg("numreplicas", "integer"), Arg("timeout", "integer"))),
    Spec("select", 2, ("loading", "stale", "fast"), "connection",
         "Changes the selected database (zcounter has database 0 only).",
         acl=("@keyspace", "@fast"), args=(Arg("index", "integer"),)),
    Spec("quit", -1, ("allow_busy", "noscript", "loading", "stale", "fast", "no_auth"),
         "connection", "Closes the connection.", acl=("@fast", "@connection")),
    Spec("hello", -1, ("noscript", "loading", "stale", "fast", "no_auth"), "connection",
         "Handshakes with the server (RESP2 only: HELLO 3 is refused, so clients stay on "
         "RESP2).", "6.0.0", acl=("@fast", "@connection"),
         args=(Arg("arguments", "block", optional=True, args=(
             Arg("protover", "integer"),
             Arg("auth", "block", optional=True, token="AUTH",
                 args=(Arg("username", "string"), Arg("password", "string"))),
             Arg("clientname", "string", optional=True, token="SETNAME"))),)),
    Spec("auth", -2, ("noscript", "loading", "stale", "fast", "no_auth"), "connection",
         "Authenticates the connection (the password file of the cluster).",
         acl=("@fast", "@connection"),
         args=(Arg("username", "string", optional=True), Arg("password", "string"))),
    Spec("client", -2, (), "connection", "A container for client connection commands.",
         "2.4.0", acl=("@slow",), subcommands=_CLIENT),
    Spec("command", -1, ("loading", "stale"), "server",
         "Returns detailed information about all commands.", "2.8.13",
         acl=("@slow", "@connection"), subcommands=_COMMAND),
    Spec("zc.incrby", 4, ("write", "denyoom", "fast"), "string",
         "zcounter: INCRBY with a request id; a retry with the same id counts once "
         "(at the node that applied it, or at another once the id has replicated there; "
         "within the request-id window).", "0.2.0", keys=(1, 1, 1),
         acl=("@write", "@string", "@fast"),
         args=(_KEY, Arg("increment", "integer"), Arg("request-id", "string"))),
    Spec("zc.del", 3, ("write",), "generic",
         "zcounter: DEL of one key with a request id; a retry with the same id resets once.",
         "0.2.0", keys=(1, 1, 1), acl=("@keyspace", "@write", "@slow"),
         args=(_KEY, Arg("request-id", "string"))),
)

BY_NAME: dict[str, Spec] = {s.name: s for s in SPECS}
SUBCOMMANDS: dict[str, dict[str, Spec]] = {
    s.name: {sub.name.split("|", 1)[1]: sub for sub in s.subcommands}
    for s in SPECS if s.subcommands}


def command_docs(names: list[str] | None = None) -> list[object]:
    """``COMMAND DOCS``: name, docs, name, docs ... (unknown names are left out)."""
    specs = SPECS if names is None else [BY_NAME[n] for n in names if n in BY_NAME]
    return _flat((s.name, s.docs()) for s in specs)


def command_info(names: list[str] | None = None) -> list[object]:
    """``COMMAND`` / ``COMMAND INFO``: one entry per name (nil for an unknown one)."""
    if names is None:
        return [s.info() for s in SPECS]
    return [BY_NAME[n].info() if n in BY_NAME else None for n in names]


__all__ = ["BY_NAME", "REDIS_VERSION", "SPECS", "SUBCOMMANDS", "Arg", "Spec", "command_docs",
           "command_info"]
