from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import LocalCluster, running_cluster  # noqa: E402


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A running three-node cluster of real processes on free loopback ports."""
    with running_cluster(tmp_path / "cluster") as c:
        yield c
