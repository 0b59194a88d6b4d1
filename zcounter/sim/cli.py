"""``bin/sim``: run seeds, print a summary, and the replay line of every failure."""

from __future__ import annotations

import sys
import time

import click

from .._version import __version__
from .driver import DEFAULT_STEPS, SimResult, run_seed
from .oracle import short


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--seeds", "count", type=click.IntRange(min=1), default=100, show_default=True,
              help="How many consecutive seeds to run.")
@click.option("--seed", "single", type=int, default=None,
              help="Run exactly this seed (replay a failure).")
@click.option("--start", type=int, default=0, show_default=True, help="First seed.")
@click.option("--nodes", type=click.IntRange(min=1), default=3, show_default=True,
              help="Cluster size.")
@click.option("--steps", type=click.IntRange(min=1), default=DEFAULT_STEPS, show_default=True,
              help="Simulated instants before the heal phase.")
@click.option("-v", "--verbose", is_flag=True, help="Print the swarm and every event.")
@click.version_option(__version__, "--version", prog_name="zcounter-sim",
                      message="%(prog)s %(version)s")
def main(count: int, single: int | None, start: int, nodes: int, steps: int,
         verbose: bool) -> None:
    """Deterministic simulation of a zcounter cluster: real node cores, simulated network,
    disks, crashes, clocks and clients, judged by an oracle that knows every update.

    Exits 1 if any seed breaks an invariant, and prints the command that replays it.
    """
    seeds = [single] if single is not None else list(range(start, start + count))
    failures: list[SimResult] = []
    ops = sim_ms = converge_max = 0
    began = time.perf_counter()  # throughput reporting only; the simulation never reads it
    for seed in seeds:
        result = run_seed(seed, nodes, steps, click.echo if verbose else None)
        ops += result.ops
        sim_ms += result.sim_ms
        converge_max = max(converge_max, result.converge_ms or 0)
        if verbose or single is not None:
            final = None if result.final is None else ", ".join(
                f"{short(k)}: {v}" for k, v in result.final.items())
            click.echo(f"seed {seed}: {'ok' if result.ok else 'FAIL'}, {result.ops} ops "
                       f"{result.outcomes}, final {{{final}}}, converged "
                       f"{result.converge_ms}ms after heal, fingerprint {result.fingerprint}")
            click.echo(f"  swarm: {result.swarm.brief()}")
            click.echo(f"  stats: {result.stats}")
        if not result.ok:
            failures.append(result)
            click.echo(f"FAIL seed {seed} ({nodes} nodes): {result.failure}", err=True)
            click.echo(f"  replay: {result.replay}", err=True)
    elapsed = max(time.perf_counter() - began, 1e-9)
    click.echo(f"{len(seeds)} seeds x {nodes} nodes, {len(failures)} failed: "
               f"{len(seeds) / elapsed:.1f} seeds/s, {ops / elapsed:.0f} ops/s "
               f"({ops} client ops, {sim_ms / 1000:.0f} simulated s, "
               f"slowest convergence {converge_max}ms) in {elapsed:.1f}s")
    if failures:
        click.echo("replay with: " + ", ".join(f.replay for f in failures[:5]), err=True)
        sys.exit(1)
