"""Anti-entropy (zcounter.protocol.repair_session) between two in-memory keyspaces: the three
steps down the hash tree, merge, give back.  Afterwards both sides hold the join, and
the only states that moved are those of keys that differed - each once."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from corelink import keyspace
from hypothesis import given, note, settings
from hypothesis import strategies as st

from zcounter.model import pncounter
from zcounter.model.hashtree import SEGMENTS_PER_BUCKET, key_digest, segment_of
from zcounter.model.keyspace import Keyspace
from zcounter.model.pncounter import make_slot
from zcounter.protocol import repair_session as repair
from zcounter.protocol.messages import SyncBuckets, SyncDiff, SyncKeys, SyncSegments
from zcounter.protocol.repair_session import (
    Phase,
    RepairSession,
    answer_buckets,
    answer_keys,
    answer_segments,
    give_back,
)

FAST = settings(max_examples=30, deadline=None)
#: Seven keys in three segments of bucket 101, and keys spread everywhere else.
CROWDED = ("t8464", "t12268", "t16754", "t5", "t14787", "t8836", "t8924")
POOL = CROWDED + tuple(f"key-{i}" for i in range(40)) + ("ключ", "🔑" * 64)
SLOTS = [make_slot(n, f"{n:012x}") for n in (1, 2, 3)]


def segment(key: str) -> int:
    return segment_of(key_digest(key.encode()))


@st.composite
def records(draw: st.DrawFn) -> tuple[int, int, int, int]:
    p, n = draw(st.integers(0, 50)), draw(st.integers(0, 50))
    return p, n, draw(st.integers(0, p)), draw(st.integers(0, n))


state = st.dictionaries(st.sampled_from(SLOTS), records(), min_size=1, max_size=3)
contents = st.dictionaries(st.sampled_from(POOL), state, max_size=30)


def export(ks: Keyspace) -> dict[str, dict]:
    return {k: ks.state(k) for k in sorted(ks.iter_keys())}


def join(a: dict[str, dict], b: dict[str, dict]) -> dict[str, dict]:
    return {k: pncounter.merge(a.get(k, {}), b.get(k, {})) for k in sorted(set(a) | set(b))}


@dataclass
class Traffic:
    """What moved during one sync."""

    requests: list = field(default_factory=list)
    sent: list[str] = field(default_factory=list)  # keys whose states the responder sent
    given: list[str] = field(default_factory=list)  # keys the initiator gave back
    listed: int = 0  # (key, hash) entries the initiator listed


def run_sync(a: Keyspace, b: Keyspace, pick=lambda inflight: 0) -> Traffic:
    """Initiator ``a`` (node 1) repairs against responder ``b`` (node 2), answering the
    requests in flight in the order ``pick`` chooses; each answer is one batch."""
    ids = itertools.count(1)
    traffic = Traffic()
    sync = RepairSession(2, 0.0, 0.0)
    inflight = [sync.start(a, next(ids), 1)]
    while inflight:
        request = inflight.pop(pick(inflight))
        traffic.requests.append(request)
        if isinstance(request, SyncBuckets):
            sync.on_diff(answer_buckets(b, request, 2, {2: ("e2", 7)}), a)
        elif isinstance(request, SyncSegments):
            sync.on_diff(answer_segments(b, request, 2), a)
        else:
            assert isinstance(request, SyncKeys)
            traffic.listed += len(request.entries)
            reply = answer_keys(b, request, 2)
            traffic.sent += reply.states
            for key, st_ in reply.states.items():
                a.merge(key, st_)
            sync.on_states(reply)
            back = give_back(a, reply)
            traffic.given += back
            for key, st_ in back.items():
                b.merge(key, st_)
            a.flush()
            b.flush()
        inflight += sync.next_requests(a, lambda: next(ids), 1)
        assert len(sync.inflight) <= repair.WINDOW
        assert {r.id for r in inflight} == set(sync.inflight)
    assert sync.tree_done and sync.applied == {2: ("e2", 7)}
    return traffic


def check(a0: dict, b0: dict, a: Keyspace, b: Keyspace, traffic: Traffic) -> None:
    joined = join(a0, b0)
    assert export(a) == export(b) == joined
    assert a.tree == b.tree and a.tree.root == b.tree.root
    # Each state moved once, and only for keys that differed.
    assert len(traffic.sent) == len(set(traffic.sent))
    assert len(traffic.given) == len(set(traffic.given))
    assert set(traffic.sent) == {k for k in b0 if a0.get(k) != b0[k]}
    assert set(traffic.given) == {k for k in joined if joined[k] != b0.get(k)}


@FAST
@given(contents, contents, contents, st.data())
def test_a_sync_leaves_both_sides_with_the_join_moving_only_what_differs(
        common, only_a, only_b, data):
    a0 = join(common, only_a)
    b0 = join(common, only_b)
    a, b = keyspace(a0), keyspace(b0)
    traffic = run_sync(a, b, lambda inflight: data.draw(st.integers(0, len(inflight) - 1)))
    note(f"sent={traffic.sent} given={traffic.given}")
    check(a0, b0, a, b, traffic)


@FAST
@given(contents, contents, st.integers(1, 3), st.integers(1, 3))
def test_small_pages_and_requests_resume_where_they_stopped(a0, b0, per_page, entries):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(repair, "STATES_PER_PAGE", per_page)
        mp.setattr(repair, "ENTRIES_PER_REQUEST", entries)
        mp.setattr(repair, "SEGMENTS_PER_REQUEST", 64)
        mp.setattr(repair, "BUCKETS_PER_REQUEST", 2)
        a, b = keyspace(a0), keyspace(b0)
        traffic = run_sync(a, b)
    check(a0, b0, a, b, traffic)


def test_a_page_stops_at_a_segment_boundary_and_the_rest_is_asked_again(monkeypatch):
    monkeypatch.setattr(repair, "STATES_PER_PAGE", 2)
    keys = ["t8464", "t12268", "t16754", "t5", "key-1", "key-2"]  # 3 + 1 + 1 + 1 segments
    b = keyspace({k: {SLOTS[0]: (1, 0, 0, 0)} for k in keys})
    a = Keyspace()
    segments = tuple(sorted({segment(k) for k in keys}))
    request = SyncKeys(5, 1, segments, ())
    reply = answer_keys(b, request, 2)
    # The first segment that fills the page is answered whole, then the page stops.
    done = reply.done
    assert 0 < done < len(segments)
    assert set(reply.states) == {k for k in keys if segment(k) in segments[:done]}
    assert reply.differ == ()
    sync = RepairSession(2, 0.0, 0.0, phase=Phase.KEYS)
    sync.inflight[5] = request
    sync.on_states(reply)
    assert sync.segments == list(segments[done:])
    received = dict(reply.states)
    ids = itertools.count(6)
    while sync.segments:
        (again,) = sync.next_requests(a, lambda: next(ids), 1)
        assert again.segments == segments[done:]  # resumes exactly where it stopped
        page = answer_keys(b, again, 2)
        assert not set(page.states) & set(received)
        received.update(page.states)
        done += page.done
        sync.on_states(page)
    assert done == len(segments) and set(received) == set(keys)


def test_after_one_key_of_many_changed_only_that_key_moves():
    base = {f"key-{i}": {SLOTS[0]: (i + 1, 0, 0, 0)} for i in range(300)}
    a, b = keyspace(base), keyspace(base)
    b.merge("key-17", {SLOTS[1]: (4, 0, 0, 0)})
    b.flush()
    traffic = run_sync(a, b)
    assert traffic.sent == ["key-17"] and traffic.given == []
    kinds = [type(r).__name__ for r in traffic.requests]
    assert kinds == ["SyncBuckets", "SyncSegments", "SyncKeys"]
    assert traffic.listed <= 2  # only the keys of one segment are listed
    assert export(a) == export(b)


def test_the_initiator_gives_back_what_the_responder_lacks():
    a0 = {"a-only": {SLOTS[0]: (3, 0, 0, 0)}, "both": {SLOTS[0]: (5, 0, 0, 0)},
          "same": {SLOTS[2]: (1, 1, 0, 0)}}
    b0 = {"both": {SLOTS[0]: (4, 0, 0, 0), SLOTS[1]: (2, 0, 0, 0)}, "b-only": {
        SLOTS[1]: (9, 0, 9, 0)}, "same": {SLOTS[2]: (1, 1, 0, 0)}}
    a, b = keyspace(a0), keyspace(b0)
    traffic = run_sync(a, b)
    assert sorted(traffic.sent) == ["b-only", "both"]
    assert sorted(traffic.given) == ["a-only", "both"]
    check(a0, b0, a, b, traffic)


def test_bootstrap_of_an_empty_node_streams_every_key_in_pages(monkeypatch):
    monkeypatch.setattr(repair, "STATES_PER_PAGE", 50)
    full = {f"key-{i}": {SLOTS[i % 3]: (i + 1, 0, 0, 0)} for i in range(400)}
    a, b = Keyspace(), keyspace(full)
    traffic = run_sync(a, b)
    assert sorted(traffic.sent) == sorted(full) and traffic.given == []
    assert traffic.listed == 0  # an empty node lists nothing: no SyncSegments either
    assert not any(isinstance(r, SyncSegments) for r in traffic.requests)
    pages = [r for r in traffic.requests if isinstance(r, SyncKeys)]
    assert len(pages) >= 400 // 50
    assert export(a) == full


def test_equal_keyspaces_need_one_round_trip():
    same = {f"key-{i}": {SLOTS[0]: (1, 0, 0, 0)} for i in range(20)}
    a, b = keyspace(same), keyspace(same)
    traffic = run_sync(a, b)
    assert [type(r) for r in traffic.requests] == [SyncBuckets]
    assert traffic.sent == traffic.given == []


def test_answers_name_exactly_the_differing_buckets_and_segments():
    a = keyspace({"t8464": {SLOTS[0]: (1, 0, 0, 0)}, "t5": {SLOTS[0]: (1, 0, 0, 0)}})
    b = keyspace({"t8464": {SLOTS[0]: (2, 0, 0, 0)}, "t5": {SLOTS[0]: (1, 0, 0, 0)}})
    bucket = segment("t8464") // SEGMENTS_PER_BUCKET
    diff = answer_buckets(b, SyncBuckets(1, 1, tuple(a.tree.bucket_hashes())), 2, {})
    assert diff == SyncDiff(1, 2, (bucket,), {})
    segs = answer_segments(b, SyncSegments(2, 1, (bucket,), tuple(
        a.tree.segment_hashes(bucket))), 2)
    assert segs.indexes == (segment("t8464"),)
