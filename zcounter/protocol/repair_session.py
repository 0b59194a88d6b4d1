"""One repair: find exactly the keys two nodes disagree on, and move only those.

A repair is run by the node that wants to catch up (the *initiator*) against
one peer (the *responder*), over the initiator's DEALER, in three steps down the hash
tree (:mod:`zcounter.model.hashtree`), then the request-id log:

1. ``SyncBuckets``: the initiator's 256 bucket hashes (2 KB).  The responder answers
   which differ, and its positions in every origin's delta stream.
2. ``SyncSegments``: for each differing bucket, the initiator's 256 segment hashes; the
   responder answers which segments differ.  Buckets where the initiator holds no key
   skip this step (all their segments go to step 3: a wiped node's bootstrap).
3. ``SyncKeys``: for a run of differing segments, the initiator lists its keys there
   with their hashes; the responder answers with its state of every key that differs or
   that the initiator lacks, and names the listed keys it lacks or holds differently.
   The initiator merges, and gives back (one ``Merge``) every key where it holds more:
   one repair heals both sides.  The responder stops a page at a segment boundary when
   it is full and says how far it got; the initiator asks again for the rest.
4. ``RidPull`` pages of the responder's request-id log after our cursor, so retries of
   ids applied in deltas we missed still count once.

The initiator *sends* hashes and the responder *answers* with indexes and states, so
what the repaired node receives is close to the states it lacked (WRITEUP.md section 3
has the measured ratio).  Work is proportional to the keys that differ (times the
~15 keys that share a segment at a million keys), never to the whole keyspace; a node
with an empty keyspace streams the whole keyspace in pages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from ..model.hashtree import (
    BUCKET_BITS,
    BUCKETS,
    SEGMENT_BITS,
    SEGMENTS_PER_BUCKET,
    key_digest,
    segment_of,
)
from ..model.keyspace import Keyspace
from ..model.pncounter import Record
from .messages import (
    Applied,
    RidPull,
    SyncBuckets,
    SyncDiff,
    SyncKeys,
    SyncSegments,
    SyncStates,
)

#: Buckets per SyncSegments request (16 x 256 hashes: ~80 KB of JSON).
BUCKETS_PER_REQUEST = 16
#: A SyncKeys request lists at most this many of the initiator's keys ...
ENTRIES_PER_REQUEST = 2000
#: ... and spans at most this many segments.
SEGMENTS_PER_REQUEST = 1024
#: A SyncStates answer stops after this many states, or this many bytes (estimated).
STATES_PER_PAGE = 4000
PAGE_BYTES = 2 * 1024 * 1024
#: Requests of one repair in flight at once.
WINDOW = 4


class Phase(Enum):
    BUCKETS = "buckets"
    SEGMENTS = "segments"
    KEYS = "keys"
    RIDS = "request ids"
    DONE = "done"


@dataclass(slots=True)
class RepairSession:
    """The initiator's side of one repair with ``peer``: hashes out, states in.

    The node drives it: :meth:`start`, then after every answer :meth:`next_requests`;
    when :attr:`tree_done`, the request-id phase (RidPull pages) follows, then DONE.
    """

    peer: int
    started: float
    last_progress: float
    phase: Phase = Phase.BUCKETS
    applied: Applied = field(default_factory=dict)
    buckets: list[int] = field(default_factory=list)
    segments: list[int] = field(default_factory=list)
    inflight: dict[int, SyncBuckets | SyncSegments | SyncKeys | RidPull] = field(
        default_factory=dict)
    #: Statistics: states received, keys that grew here, keys given back.
    states_received: int = 0
    keys_repaired: int = 0
    keys_given: int = 0

    def start(self, keyspace: Keyspace, req_id: int, me: int) -> SyncBuckets:
        request = SyncBuckets(req_id, me, tuple(keyspace.tree.bucket_hashes()))
        self.inflight[req_id] = request
        return request

    def on_diff(self, reply: SyncDiff, keyspace: Keyspace) -> None:
        sent = self.inflight.pop(reply.id, None)
        if isinstance(sent, SyncBuckets):
            self.applied = reply.applied
            for bucket in reply.indexes:
                lo = bucket * SEGMENTS_PER_BUCKET
                if keyspace.keys_in_segments(range(lo, lo + SEGMENTS_PER_BUCKET)):
                    self.buckets.append(bucket)
                else:  # we hold nothing there: every segment of it goes to step 3
                    self.segments.extend(range(lo, lo + SEGMENTS_PER_BUCKET))
            self.phase = Phase.SEGMENTS
        elif isinstance(sent, SyncSegments):
            self.segments.extend(reply.indexes)

    def on_states(self, reply: SyncStates) -> None:
        """Account for a SyncStates answer; re-queue the segments it did not cover."""
        sent = self.inflight.pop(reply.id, None)
        self.states_received += len(reply.states)
        if isinstance(sent, SyncKeys) and reply.done < len(sent.segments):
            self.segments[:0] = sent.segments[reply.done:]

    @property
    def tree_done(self) -> bool:
        return (self.phase is not Phase.BUCKETS and not self.buckets and not self.segments
                and not any(not isinstance(r, RidPull) for r in self.inflight.values()))

    def next_requests(self, keyspace: Keyspace, new_id: Callable[[], int],
                      me: int) -> list[SyncSegments | SyncKeys]:
        """Tree requests to send now (at most WINDOW in flight)."""
        out: list[SyncSegments | SyncKeys] = []
        if self.phase is Phase.BUCKETS:
            return out  # waiting for the answer to step 1
        while len(self.inflight) < WINDOW:
            request: SyncSegments | SyncKeys
            if self.buckets:
                chunk = self.buckets[:BUCKETS_PER_REQUEST]
                del self.buckets[:BUCKETS_PER_REQUEST]
                hashes: list[int] = []
                for bucket in chunk:
                    hashes += keyspace.tree.segment_hashes(bucket)
                request = SyncSegments(new_id(), me, tuple(chunk), tuple(hashes))
            elif self.segments:
                request = self._keys_request(keyspace, new_id(), me)
            else:
                break
            self.inflight[request.id] = request
            out.append(request)
        if self.phase is Phase.SEGMENTS and not self.buckets and not any(
                isinstance(r, SyncSegments) for r in self.inflight.values()):
            self.phase = Phase.KEYS
        return out

    def _keys_request(self, keyspace: Keyspace, req_id: int, me: int) -> SyncKeys:
        segments: list[int] = []
        entries: list[tuple[str, int]] = []
        take = 0
        todo = self.segments
        while take < len(todo) and len(segments) < SEGMENTS_PER_REQUEST:
            keys = keyspace.keys_in_segments((todo[take],))
            if segments and len(entries) + len(keys) > ENTRIES_PER_REQUEST:
                break
            segments.append(todo[take])
            entries += [(k, keyspace.key_hash(k)) for k in keys]
            take += 1
        del todo[:take]
        return SyncKeys(req_id, me, tuple(segments), tuple(entries))


# --------------------------------------------------------------------------- responder


def answer_buckets(keyspace: Keyspace, request: SyncBuckets, node: int,
                   applied: Applied) -> SyncDiff:
    return SyncDiff(request.id, node, tuple(keyspace.tree.differing_buckets(request.hashes)),
                    applied)


def answer_segments(keyspace: Keyspace, request: SyncSegments, node: int) -> SyncDiff:
    differ: list[int] = []
    tree = keyspace.tree
    for i, bucket in enumerate(request.buckets):
        lo = i * SEGMENTS_PER_BUCKET
        differ += tree.differing_segments(bucket, request.hashes[lo:lo + SEGMENTS_PER_BUCKET])
    return SyncDiff(request.id, node, tuple(differ))


def answer_keys(keyspace: Keyspace, request: SyncKeys, node: int) -> SyncStates:
    """States of the keys in the request's segments that differ from the initiator's."""
    theirs: dict[int, dict[str, int]] = {}
    for key, their_hash in request.entries:
        theirs.setdefault(segment_of(key_digest(key.encode())), {})[key] = their_hash
    send: list[str] = []
    differ: list[str] = []
    size = 0
    done = 0
    for done, segment in enumerate(request.segments):  # noqa: B007 - used after the loop
        if len(send) >= STATES_PER_PAGE or size >= PAGE_BYTES:
            break
        listed = theirs.get(segment, {})
        for key in keyspace.keys_in_segments((segment,)):
            h = listed.pop(key) if key in listed else None
            if h is not None and h == keyspace.key_hash(key):
                continue  # (a key they did not list is sent without hashing ours)
            send.append(key)
            size += len(key) + 8 + 40 * keyspace.record_count(key)
            if h is not None:
                differ.append(key)  # both hold it, differently: they may hold more
        differ += listed  # listed by them, unknown here
    else:
        done = len(request.segments)
    return SyncStates(request.id, node, keyspace.page(send), tuple(differ), done)


def give_back(keyspace: Keyspace, reply: SyncStates) -> dict[str, dict[str, Record]]:
    """After merging ``reply``, the states the responder lacks (keys where ours holds
    more than the one it sent, or that it does not have)."""
    out: dict[str, dict[str, Record]] = {}
    for key in reply.differ:
        theirs = reply.states.get(key)
        mine = keyspace.state(key)
        if mine and (theirs is None or mine != theirs):
            out[key] = mine
    return out


assert BUCKETS == 1 << BUCKET_BITS and SEGMENTS_PER_BUCKET == 1 << (SEGMENT_BITS - BUCKET_BITS)
