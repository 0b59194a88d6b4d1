"""Deterministic simulation testing of the real node core (``bin/sim``).

Theory of operation
-------------------
One :class:`Simulation` per seed.  It owns one ``random.Random(seed)`` and a simulated
clock in integer milliseconds, and nothing in it may be random or timed otherwise: no
wall clock, no zmq, no real file, no global ``random``, no iteration over a set or dict
whose order depends on string hashing.  Replaying a seed therefore replays the run bit
for bit, whatever ``PYTHONHASHSEED`` is (``bin/sim --seed S --nodes N``).

The parts, one job each (TigerBeetle's VOPR splits the same job the same way):

* :mod:`.swarm` - the fault and workload mix, itself drawn from the seed;
* :mod:`.scheduler` - simulated time and the queue of future events;
* :mod:`.network` - the packet simulator: delays, loss, duplication, reordering,
  directed cuts, per-process lives, sampling through the real wire codec;
* :mod:`.files` - simulated files: a page cache over durable contents, crashes at any
  operation, torn writes, power losses;
* :mod:`.disk` - a node's storage: the runtime's real ``Storage`` (log, checkpoints,
  recovery) over those files and an in-memory SQLite checkpoint, checked after every
  crash against a model of the committed batches;
* :mod:`.cluster` - real :class:`~zcounter.protocol.node.NodeCore` objects driven
  exactly as the runtime drives them (inputs, tick, outputs, commit, then send);
  their commits sequenced by the runtime's own commit policy
  (:mod:`zcounter.protocol.commit`); crashes in five modes, restarts, wipes, pauses;
* :mod:`.workload` - simulated clients: increments, decrements, resets and reads of a
  few keys at every level, request ids and retries, sessions;
* :mod:`.nemesis` - partitions, crashes, wipes and pauses at random moments;
* :mod:`.history` - the ledger of operations and of every application the nodes
  committed (observed, never claimed);
* :mod:`.checker` - watches the nodes as they run: fills the ledger, runs the checks
  after every batch and on every reply;
* :mod:`.oracle` - the checks, as functions of explicit data;
* :mod:`.driver` - the run: safety phase with faults, heal, liveness phase, judgement.

A run is a *safety phase* (``steps`` instants with faults and clients) followed by a
*liveness phase*: partitions healed, paused nodes resumed, crashed ones restarted, no
loss and no new operations; every node must then converge within
:meth:`Simulation.convergence_bound_ms`, and the final oracle judges each key exactly.
"""

from __future__ import annotations

from .cli import main
from .driver import DEFAULT_STEPS, SimResult, Simulation, replay_command, run_seed
from .oracle import SimFailure
from .swarm import Swarm

__all__ = ["DEFAULT_STEPS", "SimFailure", "SimResult", "Simulation", "Swarm", "main",
           "replay_command", "run_seed"]
