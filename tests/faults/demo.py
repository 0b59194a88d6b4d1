"""Partition demo: split 1 | 2,3 under load, heal, and draw every node's count over time.

    sudo bin/partition-demo [--out docs/partition.svg] [--before 1.5] [--cut 3] [--after 2]

Real nodes in network namespaces (see :mod:`.netns`), one writer session per node (so
both sides of the cut keep accepting ``wait=local`` increments, spread over ``KEYS``) and
one reader per node sampling its states of every key every 50 ms.  The plot shows each
node's sum of the counts: node 1 running on alone while 2 and 3 advance together, and
all three meeting again right after the heal.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from zcounter._version import __version__

from .netns import REPO, NetCluster, unavailable_reason, value
from .scenarios import CLIENT_TIMEOUT_S, Result, check

#: Keys the demo's writers spread their increments over.
KEYS = [f"page-{i}" for i in range(10)]

#: node -> [(t, {key: {slot: [p, n, bp, bn]}})]: what each read showed of every key.
Timeline = dict[int, list[tuple[float, dict[str, dict[str, list[int]]]]]]


def run(before: float, cut: float, after: float) -> tuple[Result, float, float, float]:
    result = Result("demo split-1|23", keys=list(KEYS), waits=("local",))
    with tempfile.TemporaryDirectory(prefix="zc-demo-") as tmp, NetCluster(Path(tmp)) as c:
        c.start_all()
        agent = c.client()
        t0 = time.monotonic()
        agent.call("start", writers=[{"node": n, "waits": ["local"], "by_max": 3}
                                     for n in c.ids],
                   readers=c.ids, keys=KEYS, decrement_ratio=0.0,
                   max_s=before + cut + after + 10, max_ops=20_000,
                   timeout=CLIENT_TIMEOUT_S, read_interval=0.05, read_timeout=0.5,
                   pause_s=0.01, seed=7)
        time.sleep(before)
        result.t_fault = time.monotonic()
        c.partition([1], [2, 3])
        time.sleep(cut)
        result.t_heal = time.monotonic()
        c.heal()
        # Writers keep going through the heal: the picture shows convergence under load.
        time.sleep(after)
        history = agent.call("stop")
        result.ops, result.reads = history["ops"], history["reads"]
        result.converged, when = c.wait_converged(KEYS, 30.0)
        result.final = c.states(KEYS, timeout=1.0)
        # Writes were still arriving at heal time, so "converged" here means: every node
        # has caught up with everything written before the heal.
        caught_up = _catch_up_time(result)
        result.recovery_ok = {n: 1 for n in c.ids}  # the load ran on after the heal
    return result, t0, caught_up, when


def timeline(r: Result) -> Timeline:
    """Each node's full states after every read (a reader reports only what changed)."""
    out: Timeline = {}
    held: dict[int, dict[str, dict[str, list[int]]]] = {}
    for node, t, states in sorted(r.reads, key=lambda read: read[1]):
        now = held[node] = {**held.get(node, {}), **states}
        out.setdefault(node, []).append((t, now))
    return out


def _catch_up_time(r: Result) -> float:
    """Seconds from heal until every node's state holds everything any node was seen to
    hold before the heal (per key, slot and field: the max over reads before it), the
    writes going on."""
    lines = timeline(r)
    before: dict[tuple[str, str], list[int]] = {}
    for reads in lines.values():
        for t, states in reads:
            if t > r.t_heal:
                break
            for key, state in states.items():
                for slot, rec in state.items():
                    old = before.get((key, slot), [0, 0, 0, 0])
                    before[(key, slot)] = [max(a, b) for a, b in zip(old, rec, strict=True)]
    firsts: list[float] = []
    for reads in lines.values():
        later = [t for t, states in reads if t >= r.t_heal and all(
            all(a >= b for a, b in zip(states.get(key, {}).get(slot, [0, 0, 0, 0]), rec,
                                       strict=True))
            for (key, slot), rec in before.items())]
        if not later:
            return float("nan")
        firsts.append(min(later))
    return max(firsts) - r.t_heal


def plot(r: Result, t0: float, caught_up: float, out: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        sys.exit("partition-demo: needs matplotlib (pip install 'zcounter[plot]' "
                 "or .venv/bin/pip install matplotlib)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matplotlib.rcParams["svg.hashsalt"] = "zcounter"  # stable ids: reproducible file
    fig, ax = plt.subplots(figsize=(9, 4.8))
    colors = {1: "tab:red", 2: "tab:blue", 3: "tab:green"}
    lines = timeline(r)
    for node in sorted(lines):
        pts = [(t - t0, sum(value(st) for st in states.values()))
               for t, states in lines[node]]
        ax.step([p[0] for p in pts], [p[1] for p in pts], where="post",
                color=colors.get(node), label=f"node {node}", linewidth=1.6,
                linestyle="-" if node != 3 else (0, (4, 2)))
    fault, heal = r.t_fault - t0, r.t_heal - t0
    ax.axvspan(fault, heal, color="0.85", zorder=0, label="partition 1 | 2,3")
    ax.axvline(fault, color="0.4", linewidth=1)
    ax.axvline(heal, color="black", linewidth=1.2)
    top = max(sum(value(st) for st in states.values())
              for reads in lines.values() for _, states in reads)
    ax.annotate("partition", (fault, top), xytext=(4, -4), textcoords="offset points",
                va="top", fontsize=9)
    ax.annotate(f"heal\n(all caught up\n{caught_up * 1000:.0f} ms later)", (heal, top),
                xytext=(4, -4), textcoords="offset points", va="top", fontsize=9)
    ax.set_xlabel("seconds")
    ax.set_ylabel(f"sum of the {len(r.keys)} counts read at the node "
                  "(wait=local writers on every node)")
    ax.set_title("zcounter: 3 nodes, partition 1 | 2,3 under load, then heal")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, metadata={"Date": None})
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version",
                        version=f"zcounter-partition-demo {__version__}")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "partition.svg")
    parser.add_argument("--before", type=float, default=1.5, help="seconds before the cut")
    parser.add_argument("--cut", type=float, default=3.0, help="seconds partitioned")
    parser.add_argument("--after", type=float, default=2.0, help="seconds after the heal")
    args = parser.parse_args(argv)
    reason = unavailable_reason()
    if reason:
        print(f"partition-demo: cannot run: {reason}", file=sys.stderr)
        return 2
    for seconds in (args.before, args.cut, args.after):
        if not 0 < seconds <= 30:
            parser.error("durations must be in (0, 30] seconds")
    result, t0, caught_up, _ = run(args.before, args.cut, args.after)
    check(result)
    plot(result, t0, caught_up, args.out)
    t = result.totals()
    print(f"wrote {args.out}\nfinal sum of counts {result.converged_value} on every node; "
          f"ok {t.get('ok', 0)}, unknown {t.get('unknown', 0)}, fail {t.get('fail', 0)}; "
          f"every node had everything written before the heal {caught_up * 1000:.0f} ms "
          "after it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
