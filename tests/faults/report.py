"""Run every fault scenario K times and print convergence times (median, max) per scenario.

    sudo bin/fault-report -k 3                 # all scenarios, 3 runs each
    sudo bin/fault-report -k 5 split-1\\|23     # one scenario

Each run also checks the oracle; a failing run is counted and its reason printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from zcounter._version import __version__

from . import scenarios
from .netns import unavailable_reason
from .scenarios import SCENARIOS, Result, check, median_max, run_named


def client_view(results: list[Result]) -> str:
    """Mean updates per node during the fault, as ok/fail/unknown/indet."""
    total: dict[int, Counter[str]] = {}
    for r in results:
        for node, c in r.outcomes(during_fault=True).items():
            total.setdefault(node, Counter()).update(c)
    k = max(1, len(results))
    return " ".join(
        f"n{node} {'/'.join(str(round(c[o] / k)) for o in ('ok', 'fail', 'unknown', 'indet'))}"
        for node, c in sorted(total.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version",
                        version=f"zcounter-fault-report {__version__}")
    parser.add_argument("-k", "--runs", type=int, default=3, help="runs per scenario")
    parser.add_argument("--json", type=Path, help="also write every run's numbers here")
    parser.add_argument("--fault-seconds", type=float, default=scenarios.FAULT_S,
                        help="how long each fault lasts (default %(default)s)")
    parser.add_argument("scenarios", nargs="*", help=f"default: all of {', '.join(SCENARIOS)}")
    args = parser.parse_args(argv)
    reason = unavailable_reason()
    if reason:
        print(f"fault-report: cannot run: {reason}", file=sys.stderr)
        return 2
    if not 0 < args.fault_seconds <= 120:
        parser.error("--fault-seconds must be in (0, 120]")
    scenarios.FAULT_S = args.fault_seconds  # read by every scenario when it runs
    names = args.scenarios or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}")
    rows = []
    dump = []
    started = time.monotonic()
    for name in names:
        results: list[Result] = []
        failures: list[str] = []
        for i in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="zc-fault-") as tmp:
                result = run_named(name, Path(tmp), seed=i + 1)
            results.append(result)
            failure = None
            try:
                check(result)
            except AssertionError as exc:
                failure = str(exc)
                failures.append(failure)
            print(f"  {name} run {i + 1}: convergence {result.convergence_s:.3f}s, "
                  f"sum of counts {result.converged_value}", file=sys.stderr, flush=True)
            dump.append({"scenario": name, "run": i + 1, "convergence_s": result.convergence_s,
                         "heal_s": result.heal_s, "final": result.converged_value,
                         "totals": result.totals(), "failure": failure})
        conv_med, conv_max = median_max([r.convergence_s for r in results])
        heal_med, _ = median_max([r.heal_s for r in results])
        rows.append((name, len(results), len(results) - len(failures), conv_med, conv_max,
                     heal_med, client_view(results)))
        for f in failures:
            print(f"  {name}: ORACLE FAILED: {f}", file=sys.stderr)
    print(f"\n{args.runs} run(s) per scenario, faults of {args.fault_seconds:g}s, "
          f"{time.monotonic() - started:.0f}s in all; "
          f"{len(scenarios.KEYS)} keys, {scenarios.DECREMENT_RATIO:.0%} of the updates "
          "decrements; convergence = start of heal -> all nodes hold the same state of "
          "every key.\n"
          "client view = mean updates per node started during the fault: "
          "ok/fail/unknown/indet\n")
    print("| scenario | runs | oracle ok | convergence median | convergence max "
          "| heal action | client view during fault |")
    print("|---|---|---|---|---|---|---|")
    for name, n, ok, med, mx, heal, view in rows:
        print(f"| {name} | {n} | {ok}/{n} | {med * 1000:.0f} ms | {mx * 1000:.0f} ms "
              f"| {heal * 1000:.0f} ms | {view} |")
    if args.json:
        args.json.write_text(json.dumps(dump, indent=1))
    return 0 if all(ok == n for _, n, ok, *_ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
