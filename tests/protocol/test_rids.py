"""The request-id log (zcounter.protocol.rids) against a plain list: a window bounded by
count and age, and pages after a cursor that never skip or repeat a live entry."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zcounter.protocol import rids as rids_module
from zcounter.protocol.rids import RidLog

T = {"1.0123456789ab": (1, 0, 0, 0)}

ops = st.lists(st.one_of(
    st.tuples(st.just("remember"), st.integers(0, 30)),
    st.tuples(st.just("advance"), st.floats(0.0, 4.0)),
    st.tuples(st.just("prune")),
    st.tuples(st.just("page"), st.integers(0, 40), st.booleans()),
), max_size=60)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 30), max_size=4, unique=True), ops)
def test_the_log_matches_a_list(restored, script):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rids_module, "RIDS_PER_PAGE", 3)
        now = 0.0
        log = RidLog(5, 10.0, "ep", now, [(f"r{i}", "k", T) for i in restored])
        # The model: (number, rid, time) of every entry ever numbered; live ones in `live`.
        numbered = [(n + 1, f"r{i}", now) for n, i in enumerate(restored)]
        live = list(numbered)
        for op in script:
            if op[0] == "remember":
                rid = f"r{op[1]}"
                added = log.remember(rid, "k", T, now)
                assert added == (rid not in {r for _, r, _ in live})
                if added:
                    entry = (len(numbered) + 1, rid, now)
                    numbered.append(entry)
                    live.append(entry)
            elif op[0] == "advance":
                now += op[1]
            elif op[0] == "prune":
                log.prune(now)
                while live and (len(live) > 5 or now - live[0][2] > 10.0):
                    live.pop(0)
            else:
                after, same_epoch = op[1], op[2]
                page, cursor, more = log.page("ep" if same_epoch else "other", after)
                start = after if same_epoch else 0
                expected = [(n, r) for n, r, _ in live if n > start][:3]
                assert [r for r, _, _ in page] == [r for _, r in expected]
                if expected:
                    assert cursor == expected[-1][0]
                assert more == any(n > cursor for n, _, _ in live)
            assert len(log) == len(live) and log.next == len(numbered) + 1
            assert all(r in log for _, r, _ in live)


def test_paging_survives_the_compaction_of_a_long_window():
    log = RidLog(5000, 3600.0, "ep", 0.0)
    for i in range(12_000):
        log.remember(f"r{i}", "k", T, 0.0)
    log.prune(0.0)  # 7,000 ids forgotten at once: the order list is compacted
    assert len(log) == 5000 and log._base > 0
    seen: list[str] = []
    cursor, more = 0, True
    while more:
        page, cursor, more = log.page("ep", cursor)
        seen += [r for r, _, _ in page]
    assert seen == [f"r{i}" for i in range(7000, 12_000)]
    assert log.take_changes()[1][:2] == ["r0", "r1"]
    assert log.get("r11999") == ("k", T) and log.get("r0") is None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.sampled_from("abc")), max_size=40),
       st.sets(st.sampled_from("abcd")))
def test_neutralise_clears_exactly_the_ids_of_the_keys_in_the_window(script, collected):
    """Against a scan of the window: every id of a collected key, and only those, has
    its target cleared (and persisted), through evictions by count."""
    log = RidLog(8, 100.0, "ep", 0.0, [("r-1", "a", T)])
    for i, key in script:
        log.remember(f"r{i}", key, T, 0.0)
        log.prune(0.0)
    log.take_changes()
    expected = [rid for rid in list(log._entries) if log.get(rid)[0] in collected]
    assert log.neutralise(sorted(collected)) == len(expected)
    for rid in log._entries:
        key, target = log.get(rid)
        assert target == ({} if key in collected else T)
    added, _ = log.take_changes()
    assert sorted(rid for rid, _, _ in added) == sorted(expected)
    assert all(target == {} for _, _, target in added)
    assert log.neutralise(sorted(collected)) == 0  # once
    assert log._by_key.keys() <= {log.get(r)[0] for r in log._entries}
