"""The node's statistics: one named field per figure, written by the core and its runtime.

Each figure is a plain ``int`` field of :class:`NodeStats` (``stats.increments += 1``):
a misspelt name fails mypy instead of silently counting under a new key, and a slot
write costs no more than the ``Counter[str]`` item it replaces (the per-increment path
writes one).  The fields the Prometheus endpoint exports carry their metric's name and
help text (:func:`exported`), so ``runtime/metrics.py`` renders them without a table of
its own; the others are shown in STATUS (``zcounter status``) and INFO only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace


def _metric(name: str, doc: str) -> int:
    """A counter exported as ``name`` (``_total`` appended by Prometheus)."""
    return field(default=0, metadata={"metric": name, "doc": doc})


@dataclass(slots=True)
class NodeStats:
    """Counters since the process started.  Exported ones first, in exposition order."""

    # Client requests (protocol/requests.py; bad_requests: runtime/inbound.py).
    increments: int = _metric("zcounter_increments", "Increments applied here.")
    decrements: int = _metric("zcounter_decrements", "Decrements applied here.")
    resets: int = _metric("zcounter_resets", "Resets (DEL) applied here.")
    duplicates: int = _metric(
        "zcounter_duplicate_requests",
        "Requests whose request id was already applied: answered, not applied again.")
    bad_requests: int = _metric("zcounter_bad_requests", "Requests that failed to decode.")
    # States from peers (protocol/intake.py; runtime/inbound.py for undecodable ones).
    dropped_peer_messages: int = _metric(
        "zcounter_dropped_peer_messages",
        "Peer messages dropped as malformed, unknown or out of bounds.")
    # Repair (protocol/repair.py, bootstraps: protocol/node.py).
    repairs_started: int = _metric("zcounter_repairs_started", "Repairs started.")
    repairs_aborted: int = _metric(
        "zcounter_repairs_aborted",
        "Repairs abandoned (the peer stopped answering).")
    keys_given_back: int = _metric(
        "zcounter_repair_keys_given_back",
        "Keys this node gave back to the peer it repaired from.")
    bootstraps_completed: int = _metric(
        "zcounter_bootstrap_repairs",
        "Repairs that ended a fresh node's bootstrap (its first: the whole keyspace pulled).")
    # Replication (protocol/replication.py).
    deltas_sent: int = _metric(
        "zcounter_deltas_sent", "Deltas published (one per batch that changed something).")
    heartbeats_sent: int = _metric("zcounter_heartbeats_sent", "Heartbeats published.")
    # Sockets (runtime/outbound.py, runtime/inbound.py, runtime/watch.py).
    peer_messages_sent: int = _metric(
        "zcounter_peer_sent_messages",
        "Messages sent to peers (a broadcast counts once per peer).")
    peer_bytes_sent: int = _metric("zcounter_peer_sent_bytes", "Bytes sent to peers.")
    peer_bytes_received: int = _metric(
        "zcounter_peer_received_bytes", "Bytes received from peers (broadcasts and replies).")
    send_queue_full: int = _metric(
        "zcounter_send_queue_full", "Messages dropped because a socket's queue was full.")
    replies_undeliverable: int = _metric(
        "zcounter_replies_undeliverable", "Replies whose client had gone.")
    forbidden: int = _metric(
        "zcounter_forbidden_requests",
        "Peer operations, and messages past the client bound, refused to a connection "
        "that is not a node's.")
    own_slot_ahead: int = _metric(
        "zcounter_own_slot_ahead",
        "Keys a peer held more of this node's own slot of than this node: lost commits, "
        "or a forged state (security mode none).")
    held_refused: int = _metric(
        "zcounter_held_refused",
        "Requests refused busy: their connection or the node held as many waiting "
        "requests as allowed.")
    oversized_messages: int = _metric(
        "zcounter_oversized_messages",
        "ZeroMQ messages of more frames than any request has, dropped unanswered.")
    connections_cut: int = _metric(
        "zcounter_connections_cut",
        "ROUTER connections cut while stuck inside one message or flooding it.")
    send_failed: int = _metric(
        "zcounter_send_failed",
        "Messages dropped because a send failed otherwise than a full queue or a client "
        "gone.")
    # Expiry and collection (protocol/collect.py, protocol/intake.py, protocol/clocks.py).
    expired_keys: int = _metric(
        "zcounter_expired_keys", "Keys this node saw expire (their deadline passed).")
    collected_keys: int = _metric(
        "zcounter_collected_keys",
        "Dead keys collected here: removed from memory, the hash tree, the log and the "
        "checkpoint once every peer confirmed holding them dead.")
    stale_states_dropped: int = _metric(
        "zcounter_stale_states_dropped",
        "States of keys not held here dropped as possibly stale (merged into a collected "
        "key's grave and still dead, older than max_message_age_s, or sent before this "
        "process started).")
    clock_skew_warnings: int = _metric(
        "zcounter_clock_skew_warnings",
        "Times a peer's clock went further than max_clock_skew_s from this node's.")
    # Shown in STATUS only.
    fetches_sent: int = 0
    merges_sent: int = 0
    repairs_completed: int = 0
    keys_repaired: int = 0
    rid_pages_pulled: int = 0
    peer_reply_bytes_received: int = 0

    def as_dict(self) -> dict[str, int]:
        """Every figure by name (STATUS's ``stats``)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def copy(self) -> NodeStats:
        return replace(self)


def exported() -> list[tuple[str, str, str]]:
    """(field, metric name, help) of every exported figure, in exposition order."""
    return [(f.name, f.metadata["metric"], f.metadata["doc"]) for f in fields(NodeStats)
            if "metric" in f.metadata]


__all__ = ["NodeStats", "exported"]
