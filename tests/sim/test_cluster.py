"""Nodes driven like the runtime: lives, and what each crash mode commits and sends."""

from __future__ import annotations

from zcounter.protocol.messages import Add
from zcounter.sim import Simulation, Swarm
from zcounter.sim.network import Kind, Packet


def _sim() -> Simulation:
    sim = Simulation(1, 3, swarm=Swarm.calm(clients=0, p_codec=0.0, keys=("k",)))
    for node_id in sim.cluster.ids:
        sim.cluster.start(sim.nodes[node_id])
    return sim


def _until(sim: Simulation, ms: int) -> None:
    while sim.scheduler.now_ms < ms:
        sim._instant()


def test_nothing_sent_to_a_process_reaches_its_successor() -> None:
    sim = _sim()
    node = sim.nodes[2]
    stale = Packet(Kind.BROADCAST, 1, 2, node.life, None)
    sim.nemesis.crash(2, "clean")
    sim.nemesis.restart(2)
    assert node.life == 2 and sim.cluster.accept(stale) is None
    assert sim.stats["stale_life"] == 1


def _doomed_batch(sim: Simulation, node_id: int, mode: str, amount: int) -> object:
    """Submit an update to a paused node; once it is queued, doom the node's next batch
    and resume it: that batch holds the update."""
    node = sim.nodes[node_id]
    sim.cluster.pause(node)
    op = sim.workload.submit(node_id, "add", ("k",), amount, timeout_ms=100, retries=0)
    # Wait for the update itself, not merely the first thing to arrive (a heartbeat can).
    while not any(p.kind is Kind.REQUEST and isinstance(p.body, Add) for p in node.inbox):
        sim._instant()
    node.doom = mode
    sim.cluster.resume(node)
    assert not node.up
    return op


def test_midbatch_crash_applies_nothing_and_torn_crash_commits_everything() -> None:
    sim = _sim()
    _until(sim, 500)  # bootstrapped
    op = _doomed_batch(sim, 2, "midbatch", 5)
    assert op.apps == [] and sim.nodes[2].disk.current.state("k") == {}  # type: ignore[attr-defined]
    sim.nemesis.restart(2)
    _until(sim, 1000)
    op = _doomed_batch(sim, 3, "torn", 7)
    (app,) = op.apps  # type: ignore[attr-defined]
    assert sim.nodes[3].disk.current.state("k")[app.slot][0] == 7
    assert sim.stats["crashes_midbatch"] == 1 and sim.stats["crashes_torn"] == 1
    _until(sim, 1300)
    assert op.outcome in ("ok", "unknown")  # type: ignore[attr-defined]


def test_power_loss_rolls_back_to_the_last_fsync() -> None:
    sim = _sim()
    _until(sim, 500)
    sim.workload.submit(1, "add", ("k",), 5)
    _until(sim, 800)
    disk = sim.nodes[2].disk
    # Node 2 merged node 1's delta without an fsync (node 1 holds it durably).
    assert disk.current.state("k") and not disk.durable.state("k")
    sim.nemesis.crash(2, "power")
    assert disk.current.state("k") == {}
    sim.nemesis.restart(2)
    _until(sim, 2500)
    assert sim.nodes[2].core is not None and sim.nodes[2].core.keys.value("k", 0) == 5


def test_a_crash_loses_deferred_merges_and_the_restarted_node_repairs_them() -> None:
    """Like the runtime's pipeline, a batch that only merged a peer's delta is written
    within DEFER_S, not at once: a crash right after loses it, nothing acknowledged."""
    sim = _sim()
    _until(sim, 500)
    sim.workload.submit(1, "add", ("k",), 5)
    node = sim.nodes[2]
    while node.deferred is None or "k" not in node.deferred.states:
        sim._instant()
    assert node.core is not None and node.core.keys.value("k", 0) == 5
    assert node.disk.current.state("k") == {}  # merged, not yet written
    sim.nemesis.crash(2, "clean")
    assert node.deferred is None
    sim.nemesis.restart(2)
    _until(sim, sim.scheduler.now_ms + 2000)
    assert node.core is not None and node.core.keys.value("k", 0) == 5
    assert node.disk.current.state("k") != {}  # repaired, and written this time


def test_a_commit_crash_waits_for_a_batch_that_writes() -> None:
    """Most batches write nothing (heartbeats): a ``commit`` crash lets them pass and
    dies in the first that writes - the node's own update - sending nothing of it."""
    sim = _sim()
    _until(sim, 500)
    node = sim.nodes[2]
    sim.nemesis.crash(2, "commit", restart_after_ms=1)
    _until(sim, 700)  # idle: heartbeats only
    assert node.up and node.doom_waited > 0
    op = sim.workload.submit(2, "add", ("k",), 5, timeout_ms=100, retries=0)
    while node.up:
        sim._instant()
    assert sim.stats["crashes_commit"] == 1 and sim.stats["crashes"] == 1
    _until(sim, sim.scheduler.now_ms + 50)
    assert node.up and node.life == 2  # the planned restart followed the crash
    _until(sim, sim.scheduler.now_ms + 1500)
    assert op.outcome != "ok"  # type: ignore[attr-defined]
