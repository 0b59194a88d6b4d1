"""One seed, one run: the same seed replays bit for bit, in-process and across
processes with different string-hash seeds; the command line prints the replay line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from zcounter import __version__
from zcounter.model.keyspace import Keyspace
from zcounter.model.pncounter import Record
from zcounter.sim import Swarm, main, run_seed

from .test_oracle import merging_with


def test_same_seed_same_run() -> None:
    a, b = run_seed(42, 5, 500), run_seed(42, 5, 500)
    assert a.fingerprint == b.fingerprint and a.events == b.events and a.final == b.final
    assert run_seed(43, 5, 500).fingerprint != a.fingerprint


def test_the_swarm_is_drawn_from_the_seed() -> None:
    import random

    draws = [Swarm.draw(random.Random(seed)) for seed in range(40)]
    assert Swarm.draw(random.Random(7)) == draws[7]
    # Different seeds explore different corners: key counts, crash modes, networks.
    assert len({len(d.keys) for d in draws}) >= 4
    assert {m for d in draws for m in d.crash_modes} == {"clean", "torn", "midbatch", "commit",
                                                            "power"}
    assert {d.fifo for d in draws} == {True, False} and any(d.p_drop == 0 for d in draws)
    calm = Swarm.calm()
    assert calm.p_drop == calm.p_dup == calm.nemesis_ms == 0 and not calm.crash_modes


def test_replay_is_independent_of_the_hash_seed() -> None:
    # String hashing is randomized per process: the simulator (and the core) must not
    # let set or dict order of strings decide anything.
    prints = set()
    for hash_seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-m", "zcounter.sim", "--seed", "7", "--nodes", "5",
             "--steps", "600"], capture_output=True, text=True, check=True,
            env={**os.environ, "PYTHONHASHSEED": hash_seed})
        prints.add(out.stdout.split("fingerprint ")[1].split()[0])
    assert len(prints) == 1


def test_cli_help_and_version() -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    for flag in ("--seeds", "--seed", "--start", "--nodes", "--steps", "-v", "--version"):
        assert flag in result.output
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_cli_runs_seeds_and_prints_the_replay_line_of_a_failure(
        monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["--seeds", "2", "--start", "3", "--steps", "200"])
    assert result.exit_code == 0, result.output
    assert "2 seeds x 3 nodes, 0 failed" in result.output

    def grow_everything(self: Keyspace, key: str, state: dict[str, Record]) -> bool:
        return original(self, key, {s: (r[0] + 1, r[1], r[2], r[3]) for s, r in state.items()})

    original = Keyspace.merge
    monkeypatch.setattr(Keyspace, "merge", grow_everything)
    monkeypatch.setattr(Keyspace, "merge_many", merging_with(grow_everything))
    result = runner.invoke(main, ["--seed", "2", "--steps", "300"])
    assert result.exit_code == 1
    assert "FAIL seed 2 (3 nodes)" in result.output
    assert "replay: bin/sim --seed 2 --nodes 3 --steps 300" in result.output
