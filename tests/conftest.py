from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import CLUSTER_ROOTS, LocalCluster, running_cluster

#: Lines of each node log attached to a failed test's report.
LOG_TAIL_LINES = 150


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A running three-node cluster of real processes on free loopback ports."""
    with running_cluster(tmp_path / "cluster") as c:
        yield c


def pytest_runtest_setup(item):  # type: ignore[no-untyped-def]
    CLUSTER_ROOTS.clear()


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(unreadable: {exc})"
    skipped = len(text) - lines
    return ((f"... {skipped} earlier lines in {path}\n" if skipped > 0 else "")
            + "\n".join(text[-lines:]))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    """Attach the node and agent logs of every cluster the test started to a failed
    report, so a red CI run can be diagnosed from its output alone.

    With ZCOUNTER_REQUIRE_NETNS=1 (set by .ci/run), a skipped netns test is a failure:
    CI must prove the fault suite ran, not that it politely stepped aside."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for root in CLUSTER_ROOTS:
            for log in sorted(root.glob("*.log")):
                report.sections.append((f"{log.name} ({root})", _tail(log, LOG_TAIL_LINES)))
    if (os.environ.get("ZCOUNTER_REQUIRE_NETNS") == "1" and report.skipped
            and item.get_closest_marker("netns") is not None):
        report.outcome = "failed"
        report.longrepr = f"netns test skipped but ZCOUNTER_REQUIRE_NETNS=1: {report.longrepr}"
