"""Command-line entry points: ``zcounter-node``, ``zcounter-client``, ``zcounter-cluster``.

Exit codes (every command): 0 success; 1 the request failed (refused, unavailable,
behind); 2 usage or configuration error; 3 indeterminate (an increment was applied but
the asked replication level was not confirmed in time).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import orjson

from ._version import __version__
from .client import Client
from .config import ClusterConfig, default_cluster, load_config
from .errors import ConfigError, Indeterminate, ProtocolError, ZCounterError
from .localcluster import NodeProcesses
from .protocol.codec import validate_key, validate_rid
from .protocol.messages import DEFAULT_KEY, Level

EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_INDETERMINATE = 3

LEVELS = [level.value for level in Level]
_CONTEXT = {"help_option_names": ["-h", "--help"]}


F = TypeVar("F", bound=Callable[..., Any])


def _version(prog: str) -> Callable[[F], F]:
    return click.version_option(__version__, "--version", prog_name=prog,
                                message="%(prog)s %(version)s")


class KeyType(click.ParamType):  # type: ignore[type-arg]  # generic in click 8.2+
    """A counter's key: a non-empty UTF-8 string of at most 256 bytes."""

    name = "KEY"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        try:
            return validate_key(value)
        except ProtocolError as exc:
            self.fail(f"{str(value)[:60]!r}: {exc}".replace("field 'key' ", ""), param, ctx)


KEY = KeyType()


class RequestIdType(click.ParamType):  # type: ignore[type-arg]  # generic in click 8.2+
    """A request id: 1-64 letters, digits, '.', '_', ':' or '-' (a usage error else)."""

    name = "ID"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        try:
            return validate_rid(value)
        except ProtocolError as exc:
            self.fail(f"{str(value)[:70]!r}: {exc}", param, ctx)


REQUEST_ID = RequestIdType()

_config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), envvar="ZCOUNTER_CONFIG",
    help="Cluster file (TOML). Defaults to $ZCOUNTER_CONFIG, then the built-in "
         "three-node cluster on 127.0.0.1.")


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _load(config_path: str | None) -> ClusterConfig:
    try:
        return load_config(config_path)
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)


# --------------------------------------------------------------------------- node


@click.command(context_settings=_CONTEXT)
@_version("zcounter-node")
@click.option("--id", "node_id", type=int, required=True, help="This node's id in the cluster.")
@_config_option
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the node keeps its log and SQLite checkpoint. Default: "
                   "$ZCOUNTER_DATA_HOME (or $XDG_DATA_HOME/zcounter, or "
                   "~/.local/share/zcounter)/<cluster name>/node-<id>.")
# readable=False, dir_okay=True: the key readers check the file themselves and say what
# is wrong in one line naming the file and the option (exit 2); click's own checks
# printed a four-line usage message for an unreadable file (issue 10's tests).
@click.option("--secret-key", type=click.Path(readable=False, path_type=Path),
              envvar="ZCOUNTER_SECRET_KEY",
              help="This node's secret certificate (bin/keygen), needed when the cluster "
                   "file's security mode is curve. Default: $ZCOUNTER_SECRET_KEY.")
@click.option("-v", "--verbose", is_flag=True, help="Log every dropped message too.")
def node_main(node_id: int, config_path: str | None, data_dir: Path | None,
              secret_key: Path | None, verbose: bool) -> None:
    """Run one zcounter node in the foreground until SIGINT or SIGTERM.

    Logs go to stderr. A clean stop commits, closes its sockets and exits 0.
    SIGHUP re-reads the directory of authorized client keys (curve mode).
    """
    from .runtime.memory import limit_malloc_arenas
    from .runtime.server import NodeServer, install_signal_handlers

    limit_malloc_arenas()  # before any thread starts (the reason is in the function)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
        format=f"%(asctime)s node {node_id} %(levelname)s %(message)s")
    config = _load(config_path)
    try:
        config.node(node_id)
        server = NodeServer(config, node_id, data_dir, secret_key)
        install_signal_handlers(server)
        code = server.run()
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)
    sys.exit(code)


# --------------------------------------------------------------------------- client


@click.group(invoke_without_command=True, context_settings=_CONTEXT)
@_version("zcounter-client")
@_config_option
@click.option("--node", type=int, help="Node id to ask. Default: the first node that answers.")
@click.option("--timeout", type=click.FloatRange(min=0.001), default=2.0, show_default=True,
              help="Seconds to wait in all, retries included.")
@click.option("--cert", type=click.Path(readable=False), envvar="ZCOUNTER_CERT",
              help="This client's secret certificate (bin/keygen), for a cluster in curve "
                   "mode. Default: $ZCOUNTER_CERT.")
@click.option("--nodeId", "node_id_seed", type=int, hidden=True)
@click.option("--action", type=click.Choice(["increment", "getCount"]), hidden=True,
              help="Seed-compatible form: --nodeId N --action=increment|getCount.")
@click.pass_context
def client_main(ctx: click.Context, config_path: str | None, node: int | None, timeout: float,
                cert: str | None, node_id_seed: int | None, action: str | None) -> None:
    """Talk to a zcounter cluster: increment, decrement, getCount, reset, expire, ttl,
    persist, keys, status.

    Every command that names no --key uses the key "default".

    Exit codes: 0 ok, 1 refused or no answer in time, 2 usage or configuration error,
    3 indeterminate (applied, but the --wait level was not confirmed in time).
    """
    ctx.obj = {"config": _load(config_path), "node": node if node is not None else node_id_seed,
               "timeout": timeout, "cert": cert}
    if ctx.invoked_subcommand is None:
        if action is None:
            click.echo(ctx.get_help())
            ctx.exit(EXIT_CONFIG)
        ctx.invoke(increment if action == "increment" else get_count)


def _client(obj: dict[str, Any]) -> Client:
    try:
        return Client(node=obj["node"], config=obj["config"], timeout=obj["timeout"],
                      cert=obj["cert"])
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)


def _run(obj: dict[str, Any], fn: Any) -> Any:
    with _client(obj) as client:
        try:
            return fn(client)
        except Indeterminate as exc:
            _fail(f"indeterminate: {exc}", EXIT_INDETERMINATE)
        except ConfigError as exc:
            _fail(str(exc), EXIT_CONFIG)
        except ZCounterError as exc:
            _fail(str(exc), EXIT_FAILED)


_key_option = click.option("--key", type=KEY, default=DEFAULT_KEY, show_default=True,
                           help="The counter: a non-empty UTF-8 string of at most 256 bytes.")
_by_option = click.option("--by", type=click.IntRange(1, 2**32), default=1, show_default=True,
                          help="How much (1 to 2**32).")
_wait_option = click.option(
    "--wait", type=click.Choice(LEVELS), default="local", show_default=True,
    help="Acknowledge once this many nodes hold it: the receiving node, a majority, or all.")
_rid_option = click.option(
    "--request-id", type=REQUEST_ID, help="Idempotency key: the same id applied twice counts once. "
                         "Default: a fresh random id.")
# A float, checked by the client (above 0, at most 10 years): a bad value is the node's
# bad_request, exit 1, as the same value sent by any client would be.
_ttl_option = click.option(
    "--ttl", type=float, help="Seconds (fractions allowed): give the key this expiry if it "
                              "has none after the step (Redis's INCR + EXPIRE NX, in one "
                              "durable request).")


@client_main.command()
@_key_option
@_by_option
@_wait_option
@_rid_option
@_ttl_option
@click.pass_obj
def increment(obj: dict[str, Any], key: str = DEFAULT_KEY, by: int = 1, wait: str = "local",
              request_id: str | None = None, ttl: float | None = None) -> None:
    """Add to a counter; print its count after it."""
    click.echo(_run(obj, lambda c: c.increment(by, key=key, wait=wait, request_id=request_id,
                                               ttl=ttl)))


@client_main.command()
@_key_option
@_by_option
@_wait_option
@_rid_option
@_ttl_option
@click.pass_obj
def decrement(obj: dict[str, Any], key: str, by: int, wait: str,
              request_id: str | None, ttl: float | None) -> None:
    """Subtract from a counter (it may go below zero); print its count after it."""
    click.echo(_run(obj, lambda c: c.decrement(by, key=key, wait=wait, request_id=request_id,
                                               ttl=ttl)))


@client_main.command()
@_key_option
@click.option("--ttl", type=float, required=True,
              help="Seconds from now (fractions allowed; above 0, at most 10 years).")
@click.option("--nx", "mode", flag_value="nx", help="Only if the key has no expiry.")
@click.option("--xx", "mode", flag_value="xx", help="Only if the key has an expiry.")
@click.option("--gt", "mode", flag_value="gt",
              help="Only if the new expiry is later (no expiry counts as never).")
@click.option("--lt", "mode", flag_value="lt",
              help="Only if the new expiry is earlier (no expiry counts as never).")
@_wait_option
@_rid_option
@click.pass_obj
def expire(obj: dict[str, Any], key: str, ttl: float, mode: str | None, wait: str,
           request_id: str | None) -> None:
    """Make a counter expire TTL seconds from now (the answering node's clock); print 1
    if its expiry was set, 0 if not (no such key, or the condition said no).

    An expired key reads as never written on every node; a later increment starts it
    again from zero, without expiry.
    """
    click.echo(int(_run(obj, lambda c: c.expire(key, ttl, mode=mode, wait=wait,
                                                 request_id=request_id))))


@client_main.command()
@_key_option
@click.option("--read", type=click.Choice(LEVELS), default="local", show_default=True,
              help="Merge the states of this many nodes before answering.")
@click.pass_obj
def ttl(obj: dict[str, Any], key: str, read: str) -> None:
    """Print the seconds until a counter expires (1.234), -1 if it has no expiry, -2 if
    it does not exist."""
    ms = _run(obj, lambda c: c.pttl(key, read=read))
    click.echo(ms if ms < 0 else f"{ms / 1000:.3f}")


@client_main.command()
@_key_option
@_wait_option
@_rid_option
@click.pass_obj
def persist(obj: dict[str, Any], key: str, wait: str, request_id: str | None) -> None:
    """Remove a counter's expiry; print 1 if it had one, 0 if not."""
    click.echo(int(_run(obj, lambda c: c.persist(key, wait=wait, request_id=request_id))))


@client_main.command()
@_key_option
@_wait_option
@_rid_option
@click.pass_obj
def reset(obj: dict[str, Any], key: str, wait: str, request_id: str | None) -> None:
    """Reset a counter to zero as of everything the answering node has seen of it.

    Updates made elsewhere that the node had not seen survive and count after it.
    Prints the count after the reset (0 unless such updates arrived meanwhile).
    """
    click.echo(_run(obj, lambda c: c.reset(key, wait=wait, request_id=request_id)))


@client_main.command("getCount")
@click.option("--key", "keys", type=KEY, multiple=True,
              help="A counter to read (repeat for several; default: \"default\").")
@click.option("--read", type=click.Choice(LEVELS), default="local", show_default=True,
              help="Merge the states of this many nodes before answering.")
@click.pass_obj
def get_count(obj: dict[str, Any], keys: tuple[str, ...] = (), read: str = "local") -> None:
    """Print a count: a bare integer for one key; KEY<TAB>COUNT lines, in the order
    given, for several (one request)."""
    if len(keys) <= 1:
        key = keys[0] if keys else DEFAULT_KEY
        click.echo(_run(obj, lambda c: c.get_count(key, read=read)))
        return
    counts = _run(obj, lambda c: c.get_counts(keys, read=read))
    for key in keys:
        click.echo(f"{key}\t{counts[key]}")


@client_main.command("keys")
@click.option("--prefix", default="", help="Only keys starting with this.")
@click.option("--limit", type=click.IntRange(min=0), help="At most this many keys.")
@click.pass_obj
def list_keys(obj: dict[str, Any], prefix: str, limit: int | None) -> None:
    """List keys and their counts (KEY<TAB>COUNT), sorted, from one node.

    Fetched a page at a time, so listing a million keys never builds one huge message.
    Keys whose every update was reset are not listed.
    """
    def run(client: Client) -> None:
        for key, count in client.keys(prefix, limit):
            click.echo(f"{key}\t{count}")
    _run(obj, run)


@client_main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the raw status objects as JSON.")
@click.pass_obj
def status(obj: dict[str, Any], as_json: bool) -> None:
    """Print each node's view: keys, repair state and when it last heard each peer.

    Exits 1 if any node did not answer (its line says so).
    """
    config: ClusterConfig = obj["config"]
    nodes = [obj["node"]] if obj["node"] is not None else sorted(config.nodes)
    failed = False
    views = {}
    with _client({**obj, "node": None}) as client:
        for node in nodes:
            try:
                views[node] = client.status(node)
            except ZCounterError as exc:
                failed = True
                views[node] = {"error": str(exc)}
    if as_json:
        click.echo(orjson.dumps({str(k): v for k, v in views.items()},
                                option=orjson.OPT_INDENT_2).decode())
    else:
        for node, view in views.items():
            if "error" in view:
                click.echo(f"node {node}: unavailable ({view['error']})")
                continue
            peers = ", ".join(
                f"{p}: {v['liveness']}" + ("" if v["last_heard_s_ago"] is None
                                           else f" {v['last_heard_s_ago']:.2f}s ago")
                + ("" if v["same_root"] else " (differs)")
                + (" (wants repair)" if v["wants_repair"] else "")
                for p, v in view["peers"].items())
            repair = view["repair"]
            doing = ("idle" if repair is None else
                     f"from node {repair['peer']} ({repair['phase']}, "
                     f"{repair['running_s']:.1f}s)")
            click.echo(f"node {node}: {view['keys']} keys ({view['live_keys']} live), "
                       f"{view['slots']} slots, root {view['root']}, repair {doing}"
                       + (", bootstrapping" if view["bootstrapping"] else "")
                       + f"  peers {{{peers}}}" + _collection_text(view.get("collection")))
    sys.exit(EXIT_FAILED if failed else 0)


def _collection_text(collection: dict[str, Any] | None) -> str:
    """Status's collection part: what waits, for which nodes, since when (a 0.2 node
    reports none)."""
    if not collection:
        return ""
    waiting = collection.get("waiting_for") or {}
    now = time.time()
    waits = ", ".join(f"node {p} for {max(0.0, now - since):.1f}s"
                      for p, since in waiting.items())
    return (f"  collection {{{collection['pending']} dead keys pending"
            + (f", waiting for {waits}" if waits else "")
            + f", {collection['graves']} graves, {collection['collected']} collected, "
            f"lag {collection['lag_s']:.1f}s}}")


# --------------------------------------------------------------------------- cluster

#: What ``zcounter-cluster`` says first in ``none`` mode (the default cluster's): what
#: that mode trusts, and where to go instead (issue 19).
NONE_MODE_NOTE = ("[cluster] security mode none: every process on this machine may act as "
                  "a node of this cluster (set any count); for nodes on more than one host, "
                  "or a host shared with anyone you do not trust, use curve mode "
                  "(bin/cluster --secure; README, Security)")


@click.command(context_settings=_CONTEXT)
@_version("zcounter-cluster")
@_config_option
@click.option("--data-home", type=click.Path(file_okay=False, path_type=Path),
              help="Parent of each node's data directory (node-<id> inside). "
                   "Default: each node's own default.")
@click.option("--secure", is_flag=True,
              help="Run the default cluster in curve mode: make keys for its three nodes "
                   "and one client under the data home (once), write a cluster file there, "
                   "and print the bin/client line that uses them.")
def cluster_main(config_path: str | None, data_home: Path | None, secure: bool) -> None:
    """Start every node of the cluster in this terminal; Ctrl-C stops them all.

    Each node's log lines are prefixed with its id.
    """
    secrets: dict[int, Path] = {}
    if secure:
        if config_path:
            _fail("--secure makes its own cluster file; give --data-home, not --config",
                  EXIT_CONFIG)
        data_home = data_home or default_cluster().default_data_dir(1).parent.parent / "secure"
        try:
            path, secrets, cert = make_secure_cluster(data_home)
        except ConfigError as exc:
            _fail(str(exc), EXIT_CONFIG)
        config_path = str(path)
        click.echo(f"[cluster] curve mode; keys in {data_home / 'keys'}. In another terminal:\n"
                   f"  bin/client --config {path} --cert {cert} increment", err=True)
    config = _load(config_path)
    if not config.curve:
        click.echo(NONE_MODE_NOTE, err=True)
    env = dict(os.environ)
    if config_path:
        env["ZCOUNTER_CONFIG"] = str(Path(config_path).resolve())
    # No --config on the nodes' command lines: they read the file from the environment.
    nodes = NodeProcesses(None, sorted(config.nodes), env,
                          data_dirs={n: data_home / f"node-{n}" for n in config.nodes}
                          if data_home is not None else None, secret_keys=secrets)
    code = _run_foreground(nodes)
    click.echo("[cluster] all nodes stopped", err=True)
    sys.exit(code)


def _run_foreground(nodes: NodeProcesses) -> int:
    """Start every node, relay their output, and stop them all at SIGINT / SIGTERM or
    when one exits (then the exit code is 1)."""
    relays = []
    for node in nodes.ids:
        nodes.start(node)
        relays.append(nodes.relay(node, sys.stderr))

    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = 0
    try:
        while not stopping:
            exited = nodes.first_exit()
            if exited is not None:
                click.echo(f"[cluster] node {exited[0]} exited with code {exited[1]}; "
                           "stopping the others", err=True)
                code = EXIT_FAILED
                break
            time.sleep(0.1)
    finally:
        nodes.stop_all(grace_s=5.0)
        for relay in relays:
            relay.join(timeout=1.0)
    return code


def make_secure_cluster(home: Path) -> tuple[Path, dict[int, Path], Path]:
    """Keys for the default cluster's nodes and one client under ``home/keys`` (made once,
    kept afterwards) and a curve-mode cluster file ``home/cluster.toml`` naming them.
    Returns (cluster file, node id -> secret key, the client's secret key)."""
    from .security import generate

    keys = home / "keys"
    clients = keys / "clients"
    clients.mkdir(parents=True, exist_ok=True)
    base = default_cluster()
    secrets: dict[int, Path] = {}
    lines = ["# Written by zcounter-cluster --secure.", "[security]", 'mode = "curve"',
             'clients = "keys/clients"', ""]
    for node_id, node in sorted(base.nodes.items()):
        secret = keys / f"node{node_id}.key_secret"
        if not secret.exists():
            generate(f"node{node_id}", keys)
        secrets[node_id] = secret
        lines += [f"[nodes.{node_id}]", f'router = "{node.router}"', f'pub = "{node.pub}"',
                  f'public_key = "keys/node{node_id}.key"', ""]
    cert = keys / "client.key_secret"
    if not cert.exists():
        generate("client", keys)
    (clients / "client.key").write_bytes((keys / "client.key").read_bytes())
    path = home / "cluster.toml"
    path.write_text("\n".join(lines))
    return path, secrets, cert


# --------------------------------------------------------------------------- keygen


@click.command(context_settings=_CONTEXT)
@_version("zcounter-keygen")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              default=".", show_default=True, help="Where to write the two files.")
def keygen_main(name: str, directory: Path) -> None:
    """Make a CurveZMQ key pair NAME in zmq's certificate format.

    Writes DIR/NAME.key (the public key: give it to the cluster file, or to a node's
    clients directory) and DIR/NAME.key_secret (the secret key, mode 0600: keep it on
    the machine that uses it). Refuses to overwrite an existing secret (exit 1).
    """
    from .security import generate

    try:
        public, secret = generate(name, directory)
    except ConfigError as exc:
        _fail(str(exc), EXIT_FAILED if "exists" in str(exc) else EXIT_CONFIG)
    click.echo(f"public key: {public}\nsecret key: {secret}")


# --------------------------------------------------------------------------- python -m


@click.group(context_settings=_CONTEXT)
@_version("zcounter")
def main() -> None:
    """zcounter: a replicated counter over ZeroMQ."""


main.add_command(node_main, "node")
main.add_command(client_main, "client")
main.add_command(cluster_main, "cluster")
main.add_command(keygen_main, "keygen")

if __name__ == "__main__":
    main()
