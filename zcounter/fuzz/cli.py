"""``bin/fuzz``: fuzz every door of a live cluster, with a probe checking it throughout."""

from __future__ import annotations

import random
import sys
import tempfile
import threading
from pathlib import Path

import click

from .._version import __version__
from .inproc import InprocReport, run_inproc
from .live import LIVE_DOORS, RunReport, run_live, triage
from .regressions import REGRESSIONS, save

DOORS = ("resp", "native", "peer", "metrics", "config")
IN_PROCESS_DOORS = ("resp", "native", "peer", "config")


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--minutes", type=click.FloatRange(min=0.05), default=1.0, show_default=True,
              help="How long to fuzz.")
@click.option("--door", type=click.Choice([*DOORS, "all"]), default="all", show_default=True,
              help="Which door to fuzz (config has no socket: in-process only).")
@click.option("--seed", type=int, default=None,
              help="Seed of every choice (printed; a failing seed replays the same inputs).")
@click.option("--inputs", type=click.IntRange(min=1), default=None,
              help="Stop each live door after this many inputs (CI's short run).")
@click.option("--no-inproc", is_flag=True, help="Skip the in-process targets.")
@click.option("--save/--no-save", default=True, show_default=True,
              help="Keep crashing inputs under tests/regressions/<door>/.")
@click.option("--attack-mix", is_flag=True,
              help="Instead: idle connections on every door and issue 19's hostile inputs "
                   "(see zcounter/fuzz/attacks.py).")
@click.option("--idle", type=click.IntRange(min=0), default=2000, show_default=True,
              help="--attack-mix: idle connections per door.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Cluster data and logs here (default: a temporary directory).")
@click.version_option(__version__, "--version", prog_name="zcounter-fuzz",
                      message="%(prog)s %(version)s")
def main(minutes: float, door: str, seed: int | None, inputs: int | None, no_inproc: bool,
         save: bool, attack_mix: bool, idle: int, workdir: Path | None) -> None:
    """Fuzz a live 3-node cluster on loopback for --minutes, and check it throughout.

    Sends generated and mutated inputs to each door of each node over real sockets (RESP,
    native ZeroMQ, peer messages as a forged fourth node, metrics HTTP) and runs the
    in-process targets (coverage-guided with atheris when installed), while a probe on
    its own connections increments and reads a key every ~100 ms: every answer within
    1 s, every count exact.  Prints inputs per door, crashes, the probe's worst latency
    and each node's peak RSS; exits 1 on any failure.
    """
    seed = seed if seed is not None else random.SystemRandom().randrange(2**32)
    click.echo(f"zcounter-fuzz: seed {seed}, {minutes:g} min, door {door}")
    seconds = minutes * 60
    with tempfile.TemporaryDirectory(prefix="zc-fuzz-") as tmp:
        root = workdir or Path(tmp)
        if attack_mix:
            from .attacks import run_attack_mix

            ok = run_attack_mix(root / "attack", seconds, idle, seed, click.echo)
            sys.exit(0 if ok else 1)
        doors = LIVE_DOORS if door == "all" else tuple(d for d in (door,) if d in LIVE_DOORS)
        wanted = IN_PROCESS_DOORS if door == "all" else (door,)
        inproc_doors = () if no_inproc else tuple(d for d in wanted if d in IN_PROCESS_DOORS)
        inproc: list[InprocReport] = []
        thread = threading.Thread(target=_inproc_all, daemon=True,
                                  args=(inproc_doors, seconds, seed, root / "inproc", inproc))
        thread.start()
        report = (run_live(root / "live", seconds, doors, seed, inputs) if doors else None)
        thread.join(seconds + 120)
        ok = _report(report, inproc, root, save, seed)
    sys.exit(0 if ok else 1)


def _inproc_all(doors: tuple[str, ...], seconds: float, seed: int, workdir: Path,
                out: list[InprocReport]) -> None:
    # One child at a time, each for its share (the machine has 2 cores; the cluster and
    # the live senders use them too).
    for door in doors:
        out.append(run_inproc(door, max(5.0, seconds / max(1, len(doors))), seed, workdir))


def _report(live: RunReport | None, inproc: list[InprocReport], root: Path, keep: bool,
            seed: int) -> bool:
    ok = True
    if live is not None:
        click.echo(f"live: {live.seconds:.0f} s; inputs per door: "
                   + ", ".join(f"{d} {n}" for d, n in live.inputs.items()))
        click.echo(f"probe: {live.probe.answers} answers, worst {live.probe.worst_s * 1000:.0f}"
                   f" ms, {len(live.probe.failures)} failures")
        for at, node, what in live.probe.failures[:20]:
            click.echo(f"  probe failure at {at:.1f} s, node {node}: {what}")
        click.echo("peak RSS: " + ", ".join(f"node {n} {_mib(v)}"
                                            for n, v in live.probe.peak_rss.items()))
        click.echo(f"crashes (node died): {len(live.crashes)}; restarts {live.restarts}")
        for index, crash in enumerate(live.crashes):
            last = crash.log.strip().splitlines()[-1:] or ["(no log)"]
            click.echo(f"  crash {index + 1}: node {crash.node} at {crash.at:.1f} s: {last[0]}")
            if index < 3:  # triage costs a fresh cluster per kill: the first few only
                crash.confirmed = triage(root / f"triage-{index}", crash, budget_s=90)
            for sent in crash.confirmed:
                where = save(sent.door, sent.data, f"killed a node ({last[0]}); seed {seed}") \
                    if keep else None
                click.echo(f"    reproduced alone: {sent.door} {sent.data[:60]!r}"
                           + (f" -> {where.relative_to(REGRESSIONS.parent.parent)}"
                              if where else ""))
        ok = live.ok
    for r in inproc:
        click.echo(f"in-process {r.door} ({r.engine}): {r.inputs} inputs, "
                   f"{len(r.failures)} failures")
        for what, data in r.failures:
            ok = False
            where = save(r.door, data, f"in-process target: {what}; seed {seed}") \
                if keep else None
            click.echo(f"  {what[:160]}" + (f" -> {where.name}" if where else ""))
    click.echo("result: " + ("OK" if ok else "FAILED"))
    return ok


def run() -> None:
    main()


