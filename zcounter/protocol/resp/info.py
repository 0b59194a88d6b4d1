"""``INFO``: Redis's sections, filled with zcounter's figures.

The text is what Redis prints (``# Section`` headers, ``field:value`` lines, CRLF, a
blank line between sections), so tools that parse Redis's INFO (redis_exporter, client
libraries reading ``redis_version``) read it.  Redis fields with a zcounter meaning keep
their names; zcounter's own figures are prefixed ``zcounter_``.

* **server**: the Redis version imitated (:data:`.commands.REDIS_VERSION`), zcounter's
  version, the node, its slot and cluster size, port, process id, uptime.
* **clients**: RESP connections now, and those blocked in WAIT.
* **stats**: connections and commands of the door, its refusals by cause
  (``zcounter_resp_refused_<cause>``, :class:`.refusals.Refusal`), the bytes of
  unfinished commands it keeps and the WAIT confirmations it holds; the core's counters
  (``core.stats``).
* **replication**: every node takes writes (multi-leader), so each reports itself as
  ``role:master``; the other nodes are listed the way Redis lists replicas
  (``slaveN:ip=..,port=..,state=online|offline,offset=..,lag=..``), with ``offset`` the
  number of that node's deltas this node holds and ``lag`` the seconds since it was
  last heard; ``master_repl_offset`` is this node's own delta count.
* **keyspace**: ``db0:keys=<live keys>,expires=<keys with an expiry>,avg_ttl=<their
  average TTL, ms>`` (absent when empty, as in Redis).
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .commands import REDIS_VERSION
from .refusals import Refusal

if TYPE_CHECKING:
    from .door import Door

SECTIONS = ("server", "clients", "stats", "replication", "keyspace")


def render_info(sections: list[str], status: Mapping[str, Any], door: Door, now: float) -> str:
    """The INFO text for ``sections`` (none, ``default``, ``all``, ``everything``: all)."""
    wanted = [s for s in SECTIONS if not sections or s in sections
              or {"all", "default", "everything"} & set(sections)]
    blocks = []
    for name in wanted:
        lines = _RENDER[name](status, door, now)
        if name == "keyspace" or lines:
            blocks.append("\r\n".join([f"# {name.capitalize()}", *lines]))
    return "\r\n\r\n".join(blocks) + "\r\n" if blocks else ""


def _server(status: Mapping[str, Any], door: Door, now: float) -> list[str]:
    uptime = max(0, int(now - door.started))
    return [f"redis_version:{REDIS_VERSION}",
            f"zcounter_version:{door.version}",
            "redis_mode:standalone",
            f"os:{platform.system()} {platform.release()} {platform.machine()}",
            f"arch_bits:{64 if sys.maxsize > 2**32 else 32}",
            "multiplexing_api:zmq_poll",
            f"process_id:{door.process_id}",
            f"run_id:{status.get('epoch', '')}",
            f"tcp_port:{door.tcp_port}",
            f"uptime_in_seconds:{uptime}",
            f"uptime_in_days:{uptime // 86400}",
            f"zcounter_node:{status.get('node', door.node_id)}",
            f"zcounter_slot:{status.get('slot', '')}",
            f"zcounter_cluster_size:{len(door.cluster)}",
            f"zcounter_bootstrapping:{int(bool(status.get('bootstrapping')))}"]


def _clients(status: Mapping[str, Any], door: Door, now: float) -> list[str]:
    return [f"connected_clients:{door.connected}",
            f"maxclients:{door.max_clients}",
            f"blocked_clients:{door.blocked}"]


def _stats(status: Mapping[str, Any], door: Door, now: float) -> list[str]:
    lines = [f"total_connections_received:{door.connections_received}",
             f"total_commands_processed:{door.commands_processed}",
             f"rejected_connections:{door.rejected_connections}",
             f"zcounter_protocol_errors:{door.protocol_errors}",
             f"zcounter_resp_input_bytes:{door.input_bytes}",
             f"zcounter_resp_wait_confirms:{door.wait_confirms}",
             *(f"zcounter_resp_refused_{cause.value}:{door.refused.get(cause, 0)}"
               for cause in Refusal),
             f"zcounter_keys_with_state:{status.get('keys', 0)}",
             f"zcounter_slots:{status.get('slots', 0)}",
             f"zcounter_request_ids_remembered:{status.get('request_ids_remembered', 0)}"]
    stats = status.get("stats") or {}
    lines += [f"zcounter_{name}:{value}" for name, value in sorted(stats.items())]
    return lines


def _replication(status: Mapping[str, Any], door: Door, now: float) -> list[str]:
    peers: Mapping[str, Mapping[str, Any]] = status.get("peers") or {}
    live = [p for p in peers.values() if p.get("liveness") == "live"]
    lines = ["role:master", f"connected_slaves:{len(live)}"]
    for i, (node, peer) in enumerate(sorted(peers.items(), key=lambda kv: int(kv[0]))):
        host, port = door.peer_addresses.get(int(node), ("", 0))
        heard = peer.get("last_heard_s_ago")
        state = "online" if peer.get("liveness") == "live" else "offline"
        lines.append(f"slave{i}:ip={host},port={port},state={state},"
                     f"offset={peer.get('deltas_held', 0)},"
                     f"lag={-1 if heard is None else int(heard)},zcounter_node={node}")
    lines += [f"master_repl_offset:{status.get('seq', 0)}",
              "zcounter_replication:multi-leader (every node takes writes)"]
    return lines


def _keyspace(status: Mapping[str, Any], door: Door, now: float) -> list[str]:
    live = int(status.get("live_keys", 0))
    expiry = status.get("expiry") or {}
    return [f"db0:keys={live},expires={int(expiry.get('volatile', 0))},"
            f"avg_ttl={int(expiry.get('avg_ttl_ms', 0))}"] if live else []


_RENDER: dict[str, Callable[[Mapping[str, Any], Door, float], list[str]]] = {
    "server": _server, "clients": _clients, "stats": _stats,
    "replication": _replication, "keyspace": _keyspace}

__all__ = ["SECTIONS", "render_info"]
