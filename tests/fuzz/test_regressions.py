"""Every crashing input the fuzzers kept (tests/regressions/<door>/<sha>.bin) replayed
against a fresh node: the node survives and still answers.

A case of the ``config`` door is replayed in process (load_config: only ConfigError may
escape).  A case whose open finding (its note, zcounter.fuzz.known) is still present is
an expected failure until the fix lands; the run then reports it as XPASS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from zcounter.fuzz.known import open_finding
from zcounter.fuzz.live import REAL, FuzzCluster, Sent, replay
from zcounter.fuzz.regressions import cases
from zcounter.fuzz.targets import IN_PROCESS

#: Next to this file, not next to the installed package: tox installs zcounter into
#: site-packages, where ``zcounter.fuzz.regressions.REGRESSIONS`` names no such directory
#: (the replays were then an empty parameter set, skipped in CI).
ROOT = Path(__file__).resolve().parents[1] / "regressions"
CASES = cases(ROOT)


def test_the_saved_cases_are_found() -> None:
    """An empty set would skip every replay below without a word."""
    doors = {door for door, _ in CASES}
    assert {"config", "resp"} <= doors, f"no saved cases under {ROOT}"


def _open(door: str, path: Path) -> None:
    finding = open_finding(door, path.read_bytes())
    if finding is not None:
        pytest.xfail(f"open finding {finding.name}: {finding.what}")


@pytest.mark.parametrize(("door", "path"), [c for c in CASES if c[0] == "config"],
                         ids=lambda v: v.name if isinstance(v, Path) else v)
def test_saved_config_cases_raise_only_config_errors(door: str, path: Path) -> None:
    _open(door, path)
    IN_PROCESS["config"](path.read_bytes())


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzCluster]:
    cluster = FuzzCluster(tmp_path_factory.mktemp("regressions"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.mark.integration
@pytest.mark.parametrize(("door", "path"), [c for c in CASES if c[0] != "config"],
                         ids=lambda v: v.name if isinstance(v, Path) else v)
def test_saved_inputs_no_longer_kill_a_node(fresh: FuzzCluster, door: str, path: Path) -> None:
    for node in REAL:  # a previous case may have killed one (then it failed)
        if not fresh.alive(node):
            fresh.restart(node)
    _open(door, path)
    replay(fresh, Sent(door, 1, path.read_bytes(), 0.0))
    from zcounter.fuzz.live import _answers

    assert fresh.alive(1) and _answers(fresh, 1), fresh.log_tail(1)
