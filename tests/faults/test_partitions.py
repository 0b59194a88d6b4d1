"""Partitions and process faults on real nodes in network namespaces (needs root).

Each test runs one scenario from :mod:`.scenarios` (timeline and oracle are described
there) and prints what the clients saw.  Set ``ZC_FAULT_RESULTS=FILE`` to append each
run's numbers (JSON lines) to FILE; for median and max convergence over several runs use
``bin/fault-report``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .netns import unavailable_reason
from .scenarios import SCENARIOS, check, run_named

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module")
def netns_usable() -> None:
    # Probed once, and only when a netns test is actually selected (it creates and
    # deletes a throwaway namespace).
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_fault_scenario(name: str, tmp_path: Path, netns_usable: None) -> None:
    result = run_named(name, tmp_path / "cluster")
    print("\n" + result.summary())
    sink = os.environ.get("ZC_FAULT_RESULTS")
    if sink:
        with open(sink, "a") as fh:
            fh.write(json.dumps({"scenario": name, "convergence_s": result.convergence_s,
                                 "heal_s": result.heal_s, "final": result.converged_value,
                                 "totals": result.totals()}) + "\n")
    check(result)
