"""The commit pipeline: order of messages against commits, grouping, deferred writes."""

from __future__ import annotations

import select

from zcounter.protocol.outputs import Persist
from zcounter.runtime.committer import DEFER_S, Pipeline


class Recorder:
    """Stands in for Storage: records each commit (the pipeline calls only commit())."""

    path = "recorder"

    def __init__(self) -> None:
        self.commits: list[Persist] = []

    def commit(self, persist: Persist) -> None:
        self.commits.append(persist)


def finish(pipe: Pipeline) -> list[object]:
    """Wait for the in-flight commit; the messages it releases."""
    select.select([pipe.wake_fd], [], [], 5)
    return pipe.completed()


def test_messages_wait_for_their_commit_and_every_earlier_one():
    store = Recorder()
    pipe = Pipeline(store)  # type: ignore[arg-type]
    try:
        assert pipe.submit(Persist(states={"a": b"1"}, sync=True), ["m1"]) == []
        # A batch arriving meanwhile waits, even with nothing to write itself.
        assert pipe.submit(None, ["m2"]) == []
        assert pipe.submit(Persist(states={"a": b"2"}, sync=True), ["m3"]) == []
        assert finish(pipe) == ["m1"]  # the next group starts at once
        assert finish(pipe) == ["m2", "m3"]
        assert [c.states for c in store.commits] == [{"a": b"1"}, {"a": b"2"}]
    finally:
        pipe.close()


def test_merged_state_is_written_later_and_newer_states_win():
    store = Recorder()
    pipe = Pipeline(store)  # type: ignore[arg-type]
    try:
        # Acknowledges nothing, nothing ahead of it: its messages go now, no write yet.
        assert pipe.submit(Persist(states={"a": b"old", "b": b"1"}), ["x"], now=1.0) == ["x"]
        assert store.commits == [] and pipe.deadline() == 1.0 + DEFER_S
        pipe.tick(1.0 + DEFER_S / 2)
        assert store.commits == []
        # The next acknowledging batch carries it, written first (its states are older).
        assert pipe.submit(Persist(states={"a": b"new"}, sync=True), ["y"], now=1.01) == []
        assert finish(pipe) == ["y"]
        assert store.commits[0].states == {"a": b"new", "b": b"1"} and store.commits[0].sync
        assert pipe.deferred is None and pipe.deadline() == float("inf")
        # Alone, it is written once DEFER_S has passed.
        pipe.submit(Persist(states={"c": b"1"}), [], now=2.0)
        pipe.tick(2.0 + DEFER_S)
        finish(pipe)
        assert store.commits[-1].states == {"c": b"1"} and not store.commits[-1].sync
    finally:
        pipe.close()


def test_drain_writes_deferred_changes():
    store = Recorder()
    pipe = Pipeline(store)  # type: ignore[arg-type]
    try:
        pipe.submit(Persist(states={"a": b"1"}), [], now=0.0)
        assert pipe.drain() == [] and store.commits[0].states == {"a": b"1"}
    finally:
        pipe.close()


def test_commit_here_writes_deferred_changes_first_and_releases_messages():
    store = Recorder()
    pipe = Pipeline(store)  # type: ignore[arg-type]
    try:
        assert pipe.idle
        pipe.submit(Persist(states={"a": b"old", "b": b"1"}), [], now=0.0)
        assert pipe.idle  # deferred changes are not a commit in flight
        out = pipe.commit_here(Persist(states={"a": b"new"}, sync=True), ["reply"])
        assert out == ["reply"] and pipe.commits == 1 and pipe.deferred is None
        assert store.commits[0].states == {"a": b"new", "b": b"1"} and store.commits[0].sync
        # A commit in flight makes the pipeline busy until its completion is read.
        pipe.submit(Persist(states={"c": b"1"}, sync=True), ["m"])
        assert not pipe.idle
        assert finish(pipe) == ["m"] and pipe.idle
    finally:
        pipe.close()
