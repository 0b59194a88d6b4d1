"""The storage engine under crashes, torn writes and power loss.

A seeded workload of batches (some flushed, some not) runs against the real
:class:`~zcounter.runtime.storage.Storage` on a simulated disk (:mod:`zcounter.sim.files`) with tiny
segments, so that rotations, checkpoints and segment deletions happen every few
batches.  It crashes at every operation the log performs in turn (and inside every
checkpoint, before and after its SQLite transaction), with and without a torn last
write, with and without a power loss (every write not yet flushed is lost).  After
each crash the storage is opened again and must hold exactly the state after some
prefix of the batches - never a mix - and that prefix must contain every batch whose
commit returned: with a power loss, every flushed one (``sync``); without, every one.
"""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import pytest

from zcounter.model.records import FORMAT
from zcounter.protocol.outputs import Persist
from zcounter.runtime.storage import Storage
from zcounter.runtime.storage.checkpoint import Checkpoint
from zcounter.sim.files import Crash, SimFiles

SEGMENT = 2048
BATCHES = 36
KEYS = [f"k{i}" for i in range(12)]


#: A packed state's hash and flags, with the flag of the current form (records.FORMAT).
CURRENT = bytes(8) + bytes([FORMAT])


def workload(seed: int) -> list[Persist]:
    rng = random.Random(seed)
    out = []
    slot = 0
    for i in range(BATCHES):
        keys = rng.sample(KEYS, rng.randint(0, 4))
        # Opaque states, with the flag byte of the current packed form (issue 21):
        # recovery converts a state without it (0.2's form) when its size fits one.
        states = {k: CURRENT + f"{k}@{i};".encode() * rng.randint(1, 12) for k in keys}
        slots = []
        if rng.random() < 0.2:
            slots.append((slot, f"{slot + 1}.{slot:012x}"))
            slot += 1
        rids = [(f"r{i}", k, {"1.000000000000": (i, 0, 0, 0)}) for k in keys[:1]]
        forget = [f"r{j}" for j in range(i) if rng.random() < 0.05]
        out.append(Persist(states, slots, rids, forget, sync=rng.random() < 0.5))
    return out


def model(batches: list[Persist]) -> tuple[dict[str, bytes], list[str], list[str]]:
    states: dict[str, bytes] = {}
    slots: list[str] = []
    rids: dict[str, None] = {}
    for p in batches:
        states.update(p.states)
        slots += [name for _, name in p.slots]
        for rid, _, _ in p.rids:
            rids.pop(rid, None)
            rids[rid] = None
        for rid in p.forget:
            rids.pop(rid, None)
    return states, slots, list(rids)


def recovered(storage: Storage) -> tuple[dict[str, bytes], list[str], list[str]]:
    return (dict(storage.load_states()), storage.load_slot_names(),
            [rid for rid, _, _ in storage.load_rids()])


def run(tmp: Path, disk: SimFiles, batches: list[Persist], lag: int = 0,
        handover: int = 1000) -> tuple[int, int]:
    """Commit batches until done or crashed: (batches whose commit returned, index of the
    last of those that was flushed + 1)."""
    returned = flushed = 0
    storage = None
    try:
        storage = Storage.open(tmp, 1, files=disk, segment_size=SEGMENT, background=False,
                               lag=lag, handover_keys=handover)
        for i, batch in enumerate(batches):
            storage.commit(batch)
            returned = i + 1
            if batch.sync:
                flushed = i + 1
        storage.close()
    except Crash:
        if storage is not None:
            storage._checkpoint.close()  # the process is gone: so are its handles
    return returned, flushed


def check_recovery(tmp: Path, disk: SimFiles, batches: list[Persist], returned: int,
                   flushed: int, power_loss: bool, where: str) -> None:
    if power_loss:
        disk.power_loss()
    disk.restart()
    storage = Storage.open(tmp, 1, files=disk, segment_size=SEGMENT, background=False)
    try:
        got = recovered(storage)
    finally:
        storage.close()
    # The batch in flight at the crash may be there too (written, not yet returned).
    must = flushed if power_loss else returned
    candidates = range(must, min(returned + 1, len(batches)) + 1)
    assert any(got == model(batches[:n]) for n in candidates), (
        f"{where}: recovered state is not the state after any of the first {list(candidates)} "
        f"batches (returned {returned}, flushed {flushed}, power loss {power_loss})")


def reference_ops(tmp: Path, batches: list[Persist], lag: int = 0,
                  handover: int = 1000) -> int:
    disk = SimFiles()
    run(tmp, disk, batches, lag, handover)
    return disk.ops


@pytest.mark.parametrize(("seed", "lag", "handover"), [(1, 0, 1000), (2, 3, 1000), (4, 1, 5)])
def test_crash_at_every_log_operation(tmp_path: Path, seed: int, lag: int,
                                      handover: int) -> None:
    """``lag``: checkpoints trail the log by that many commits, as a background
    checkpointer may (with 0 a checkpoint would hide a log that loses data).
    ``handover``: changes also go to the checkpointer once that many keys changed,
    between rotations (5: several times per segment here)."""
    batches = workload(seed)
    total = reference_ops(tmp_path / "ref", batches, lag, handover)
    assert total > 50  # rotations and checkpoints did happen
    case = 0
    for crash_at in range(1, total + 1):
        for torn in (None, 1, 30):
            for power_loss in (False, True):
                case += 1
                where = f"seed {seed}, crash at op {crash_at}, torn {torn}, power loss {power_loss}"
                tmp = tmp_path / f"c{case}"
                disk = SimFiles(crash_at=crash_at, torn_bytes=torn)
                returned, flushed = run(tmp, disk, batches, lag, handover)
                check_recovery(tmp, disk, batches, returned, flushed, power_loss, where)


@pytest.mark.parametrize("before", [True, False])
def test_crash_inside_every_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       before: bool) -> None:
    batches = workload(3)
    real = Checkpoint.write
    for target in range(1, 12):
        calls = 0

        def write(self: Checkpoint, *args: object, target: int = target) -> None:
            nonlocal calls
            calls += 1
            if calls == target and before:
                raise Crash("crash before the checkpoint transaction")
            real(self, *args)  # type: ignore[arg-type]
            if calls == target:
                raise Crash("crash after the checkpoint transaction")

        monkeypatch.setattr(Checkpoint, "write", write)
        tmp = tmp_path / f"t{target}"
        disk = SimFiles()
        returned, flushed = run(tmp, disk, batches)
        monkeypatch.setattr(Checkpoint, "write", real)
        for power_loss in (False, True):
            check_recovery(tmp, disk, batches, returned, flushed, power_loss,
                           f"checkpoint {target}, crash {'before' if before else 'after'}")


def test_crash_during_recovery_then_recover(tmp_path: Path) -> None:
    batches = workload(4)
    disk = SimFiles(crash_at=reference_ops(tmp_path / "ref", batches) - 3)
    returned, flushed = run(tmp_path / "d", disk, batches)
    disk.power_loss()
    for crash_at in range(1, 8):
        disk.restart()
        disk.crash_at, disk.ops = crash_at, 0
        with contextlib.suppress(Crash):
            Storage.open(tmp_path / "d", 1, files=disk, segment_size=SEGMENT,
                         background=False).close()
    check_recovery(tmp_path / "d", disk, batches, returned, flushed, True, "after recoveries")
