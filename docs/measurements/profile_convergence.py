"""Where the convergence tail at 5,000/s comes from (WRITEUP.md section 7.5): the
bench's open loop (one key, an observer per other node, as ``bin/bench``) at RATE
increments/s on node 1 of a fresh 3-node cluster, with py-spy recording node 1 and
node 2 (all threads, wall clock), and every node's CPU over the run.

Usage: .venv/bin/python docs/measurements/profile_convergence.py RATE OUT_PREFIX [SECONDS]
(needs py-spy; writes OUT_PREFIX-node1.txt and OUT_PREFIX-node2.txt in py-spy's raw
format, summarised by summarise_profile.py).  Prints latency and convergence quantiles
and each node's CPU as a share of one core."""
import os, subprocess, sys, tempfile, time
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(1, os.path.join(HERE, "..", "..", "tests")); sys.path.insert(1, os.path.join(HERE, "..", ".."))
from pathlib import Path  # noqa: E402
from harness import running_cluster  # noqa: E402
from zcounter.bench.keys import KeySpec  # noqa: E402
from zcounter.bench.load import open_loop  # noqa: E402

rate = int(sys.argv[1]); out = sys.argv[2]; secs = float(sys.argv[3]) if len(sys.argv) > 3 else 8.0
TICK = os.sysconf("SC_CLK_TCK")


def cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / TICK


with running_cluster(Path(tempfile.mkdtemp()) / "c", settings={}) as c:
    eps = {i: c.config.nodes[i].router for i in (1, 2, 3)}
    open_loop(eps[1], rate, 1.0, KeySpec(1), [eps[2], eps[3]], 0.0005)  # warm up
    spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
    spies = [subprocess.Popen([spy, "record", "-r", "250", "--nonblocking", "--threads", "-f", "raw",
                               "-d", str(int(secs) - 1), "-p", str(c.procs[i].pid),
                               "-o", f"{out}-node{i}.txt"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in (1, 2)]
    before = {i: cpu(c.procs[i].pid) for i in (1, 2, 3)}
    t0 = time.perf_counter()
    r = open_loop(eps[1], rate, secs, KeySpec(1), [eps[2], eps[3]], 0.0005)
    dt = time.perf_counter() - t0
    used = {i: cpu(c.procs[i].pid) - before[i] for i in (1, 2, 3)}
    for s in spies:
        s.wait()
    lat, conv = r["latency_s"], r["convergence_s"]
    print(f"{rate}/s for {secs:.0f} s (under py-spy): acked {r['acked']}")
    print("latency     p50 {:.2f} p99 {:.2f} max {:.2f} ms".format(lat["p50"] * 1e3, lat["p99"] * 1e3, lat["max"] * 1e3))
    print("convergence p50 {:.2f} p99 {:.2f} max {:.2f} ms".format(conv["p50"] * 1e3, conv["p99"] * 1e3, conv["max"] * 1e3))
    print("node CPU, share of one core: " + ", ".join(f"node {i} {used[i] / dt:.0%}" for i in used))
