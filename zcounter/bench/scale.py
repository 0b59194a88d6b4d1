"""The scale section (``--scale``): a keyspace of N keys (default 1,000,000) against one
key, on two three-node clusters started side by side and measured interleaved.

1. *Fill*: the 1-key cluster gets N increments of ``k0`` at each node; the N-key cluster gets
   ``k0`` .. ``k{N-1}`` written at each of its three nodes (three slots per key), by one
   process keeping a window of increments in flight on a raw DEALER per node.  Reported
   with its own rate and the nodes' CPU per slot written, then the time until the three
   nodes' hash-tree roots agree.
2. *Memory and disk*: every node's RSS and data directory (database, WAL) on both
   clusters once they agree.
3. *Heartbeats*: on both idle clusters at once, a SUB socket on every node's PUB counts
   the heartbeat messages and their bytes for a few seconds; one node's heartbeat stream
   reaches each peer once, so bytes per second of a node's stream = bytes per peer per
   second.  The nodes' own counters over the same seconds are printed beside it.
   Measured on the fresh clusters (1 key each) and after the fills; the target compares
   the filled clusters, because a heartbeat carries delta sequence numbers, which grow
   with the number of batches a node has written, not with its keys: the 1-key cluster
   is therefore filled with as many writes (all to ``k0``) as the N-key one.
4. *Throughput and reads*, in interleaved rounds (the median of each is reported, and
   each ratio is the median of the ratios within a round: ``report.paired_ratio``):
   increments at window 256 of one key on each cluster, of keys uniform over N and
   Zipf over N on the N-key cluster; ``get`` of one key at window 1 on each cluster (on
   the N-key cluster a key drawn uniformly over N per request).
5. *A cut node catching up*: without root there is no network cut on loopback, so the
   cut is a restart: node 3 is killed (SIGKILL), 10,000 keys change at nodes 1 and 2
   (increments at node 1, decrements at node 2), node 3 restarts with its data
   directory.  Measured: its load time; from its first answer until it holds the same
   counts as nodes 1 and 2 for those keys; the bytes it received in peer replies
   (``peer_reply_bytes_received``: what a repair moves to it) against the encoded size
   of those keys' states (``orjson.dumps(wire_states(...))``, as the codec writes them).
6. *A wiped node*: node 3 is killed, its data directory deleted, and it restarts:
   time (from process start and from its first answer) until its root equals its
   peers' with every key, and the bytes moved to it.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import re
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import zmq

from ..localcluster import wait_answering
from ..model.pncounter import Record
from ..protocol.codec import wire_states
from ..protocol.messages import States
from .keys import KeySpec, KeyStream, key_name
from .load import TEMPLATES, Channel, closed_loop, numbered, pipelined
from .measure import median, ratio, stat_delta, tcp_received_from
from .progress import Progress
from .servers import BenchCluster, start_cluster
from .suite import wait_same_root

#: Keys that change while node 3 is down (issue 9), at most N / 10 in smaller runs.
CUT_KEYS = 10_000
#: Requests in flight per node while filling (pipelined raw DEALER).
FILL_WINDOW = 512
#: Keys whose states are fetched to estimate the whole keyspace's encoded size.
SAMPLE_KEYS = 5_000
#: How often convergence is polled during the restarts (its resolution); a get of 10,000
#: keys costs the polled node a few milliseconds, so polling faster would slow its repair.
POLL_S = 0.05
_LOADED_RE = re.compile(r"loaded (\d+) keys and (\d+) request ids in ([0-9.]+)s")
_BOOTSTRAP_RE = re.compile(r"bootstrap from node (\d+) complete: (\d+) keys in ([0-9.]+) ?s")


@dataclass(frozen=True)
class ScaleOptions:
    keys: int
    seed: int
    rounds: int
    ops: int
    seconds: float
    read_ops: int
    heartbeat_seconds: float
    fill_limit_s: float
    #: Bounds on waiting for the cut node to catch up, and for the wiped one.
    cut_limit_s: float
    restart_limit_s: float

    @property
    def cut_keys(self) -> int:
        return max(1, min(CUT_KEYS, self.keys // 10))

    def to_json(self) -> dict[str, Any]:
        return {"keys": self.keys, "seed": self.seed, "rounds": self.rounds, "ops": self.ops,
                "seconds": self.seconds, "read_ops": self.read_ops,
                "heartbeat_seconds": self.heartbeat_seconds, "cut_keys": self.cut_keys,
                "fill_window": FILL_WINDOW, "fill_limit_s": self.fill_limit_s,
                "cut_limit_s": self.cut_limit_s, "restart_limit_s": self.restart_limit_s}


def as_states(wire: dict[str, dict[str, list[int]]]) -> States:
    """A reply's ``states`` (records with trailing zeros dropped) as the core holds them."""
    out: States = {}
    for key, state in wire.items():
        records: dict[str, Record] = {}
        for slot, rec in state.items():
            full = rec + [0] * (4 - len(rec))
            records[slot] = (full[0], full[1], full[2], full[3])
        out[key] = records
    return out


def encoded_size(wire: dict[str, dict[str, list[int]]]) -> int:
    """Bytes of ``{key: {slot: [p, n, bp, bn]}}`` as the codec writes states."""
    return len(orjson.dumps(wire_states(as_states(wire))))


class ScaleSuite:
    def __init__(self, opts: ScaleOptions, root: Path, progress: Progress,
                 results: dict[str, Any]) -> None:
        self.o = opts
        self.root = root
        self.progress = progress
        self.res: dict[str, Any] = results.setdefault("scale", {})

    def run(self) -> None:
        o, res = self.o, self.res
        res["keys"] = o.keys
        started = time.perf_counter()
        with contextlib.ExitStack() as stack:
            small, ready_small = start_cluster(stack, self.root / "scale-1-key", self.progress,
                                               "1-key cluster")
            large, ready_large = start_cluster(stack, self.root / "scale-n-keys",
                                               self.progress, f"{o.keys:,}-key cluster")
            res["ready_s"] = {"small": ready_small, "large": ready_large}
            res["rss_start_kib"] = {"small": small.rss(), "large": large.rss()}
            first = [(c.router(i), numbered(TEMPLATES["increment"], iter([0])))
                     for c in (small, large) for i in c.ids]
            pipelined(first, 1, 30.0)  # k0 at every node: both clusters hold 1 key
            res["heartbeat"] = {"fresh": self._heartbeats(small, large, 2.0)}
            res["fill_small"] = self._fill(small, o.keys, one_key=True)
            res["fill"] = self._fill(large, o.keys, one_key=False)
            self._footprint(small, large)
            res["heartbeat"]["filled"] = self._heartbeats(small, large, o.heartbeat_seconds)
            self._interleaved(small, large)
            self._cut(large)
            self._wipe(large)
            res["rss_end_kib"] = large.rss()
            res["rss_peak_kib"] = large.rss("VmHWM")
        res["elapsed_s"] = time.perf_counter() - started

    # ------------------------------------------------------------------ fill

    def _fill(self, cluster: BenchCluster, n: int, one_key: bool) -> dict[str, Any]:
        """``n`` increments at every node: of keys k0..k{n-1}, or all of k0 (``one_key``:
        the 1-key cluster then has the same write history - the same number of writes
        and about as many deltas - as the N-key one); then wait until the roots agree."""
        label = (f"fill: {n:,} increments of k0 x {len(cluster.ids)} nodes" if one_key else
                 f"fill: {n:,} keys x {len(cluster.ids)} nodes")
        self.progress.note(label)
        cpu0 = {i: cluster.cpu(i) for i in cluster.ids}
        template = TEMPLATES["increment"]
        jobs = [(cluster.router(i),
                 numbered(template, itertools.repeat(0, n) if one_key else iter(range(n))))
                for i in cluster.ids]
        self.progress.start(label, n * len(jobs))
        try:
            r = pipelined(jobs, FILL_WINDOW, self.o.fill_limit_s, self.progress.update)
        finally:
            self.progress.close()
        cpu = {i: cluster.cpu(i) - cpu0[i] for i in cluster.ids}
        r["cpu_s"] = cpu
        writes = r["acked"] * len(cluster.ids)  # each acknowledged write lands on 3 nodes
        r["cpu_us_per_slot_write"] = sum(cpu.values()) / writes * 1e6 if writes else None
        r["converged_s"] = wait_same_root(cluster, timeout_s=max(60.0, n / 5_000))
        r["keys"] = {i: cluster.status(i)["keys"] for i in cluster.ids}
        agree = "never" if r["converged_s"] is None else f"after {r['converged_s']:.2f} s"
        self.progress.note(f"fill done: {r['acked']:,} writes in {r['elapsed_s']:.1f} s "
                           f"({r['ops_per_s']:,.0f}/s); roots agree {agree}")
        return r

    def _footprint(self, small: BenchCluster, large: BenchCluster) -> None:
        res = self.res
        res["rss_after_fill_kib"] = {"small": small.rss(), "large": large.rss()}
        res["disk_after_fill"] = {"small": {i: small.disk(i) for i in small.ids},
                                  "large": {i: large.disk(i) for i in large.ids}}
        grown = [(res["rss_after_fill_kib"]["large"][i] or 0)
                 - (res["rss_start_kib"]["large"][i] or 0) for i in large.ids]
        res["rss_bytes_per_key"] = max(grown) * 1024 / self.o.keys

    # ------------------------------------------------------------------ heartbeats

    def _heartbeats(self, small: BenchCluster, large: BenchCluster,
                    seconds: float) -> dict[str, Any]:
        """Count heartbeat messages and bytes on every node's PUB, both clusters at once."""
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        clusters = {"small": small, "large": large}
        subs: dict[tuple[str, int], zmq.Socket[bytes]] = {}
        poller = zmq.Poller()
        try:
            for name, cluster in clusters.items():
                for i in cluster.ids:
                    sock = ctx.socket(zmq.SUB)
                    sock.setsockopt(zmq.LINGER, 0)
                    sock.setsockopt(zmq.SUBSCRIBE, b"")
                    sock.connect(cluster.pub(i))
                    poller.register(sock, zmq.POLLIN)
                    subs[(name, i)] = sock
            time.sleep(0.5)  # slow joiner: let every subscription reach its PUB
            for sock in subs.values():  # drop what arrived before the window
                with contextlib.suppress(zmq.Again):
                    while True:
                        sock.recv(zmq.NOBLOCK)
            counted = {k: [0, 0, 0] for k in subs}  # heartbeats, their bytes, other bytes
            before = {name: {i: c.stats(i) for i in c.ids} for name, c in clusters.items()}
            self.progress.start(f"heartbeats on both idle clusters, {seconds:g} s",
                                int(seconds))
            start = time.perf_counter()
            end = start + seconds
            shown = 0
            while (now := time.perf_counter()) < end:
                for sock, _ in poller.poll(max(1, int((end - now) * 1000))):
                    key = next(k for k, s in subs.items() if s is sock)
                    with contextlib.suppress(zmq.Again):
                        while True:
                            data = sock.recv(zmq.NOBLOCK)
                            if data.startswith(b'{"t":"h"'):
                                counted[key][0] += 1
                                counted[key][1] += len(data)
                            else:
                                counted[key][2] += len(data)
                if int(now - start) > shown:
                    self.progress.update(int(now - start) - shown)
                    shown = int(now - start)
            elapsed = time.perf_counter() - start
            after = {name: {i: c.stats(i) for i in c.ids} for name, c in clusters.items()}
        finally:
            self.progress.close()
            for sock in subs.values():
                sock.close(linger=0)
        out: dict[str, Any] = {"seconds": elapsed}
        for name, cluster in clusters.items():
            peers = len(cluster.ids) - 1
            per_node = {}
            for i in cluster.ids:
                hb, hb_bytes, other = counted[(name, i)]
                sent = stat_delta(before[name][i], after[name][i], "peer_bytes_sent")
                per_node[i] = {
                    "heartbeats": hb, "heartbeat_bytes": hb_bytes, "other_pub_bytes": other,
                    "heartbeats_per_s": hb / elapsed,
                    "mean_heartbeat_bytes": hb_bytes / hb if hb else None,
                    "bytes_per_peer_per_s": hb_bytes / elapsed,
                    "stats_heartbeats_sent": stat_delta(before[name][i], after[name][i],
                                                        "heartbeats_sent"),
                    "stats_peer_bytes_sent_per_peer_per_s": sent / peers / elapsed}
            out[name] = {
                "per_node": per_node,
                "bytes_per_peer_per_s": _mean_of(per_node, "bytes_per_peer_per_s"),
                "stats_bytes_per_peer_per_s": _mean_of(per_node,
                                                       "stats_peer_bytes_sent_per_peer_per_s")}
        out["ratio"] = ratio(out["large"]["bytes_per_peer_per_s"],
                             out["small"]["bytes_per_peer_per_s"])
        return out

    # ------------------------------------------------------------------ throughput, reads

    def _interleaved(self, small: BenchCluster, large: BenchCluster) -> None:
        o = self.o
        one = KeySpec(1)
        uniform = KeySpec(o.keys, "uniform", o.seed)
        zipf = KeySpec(o.keys, "zipf", o.seed)
        self.progress.note("precomputing key streams")
        streams = {spec: KeyStream(spec) for spec in (one, uniform, zipf)}
        # name -> (cluster, op, keys, window, ops)
        runs: dict[str, tuple[BenchCluster, str, KeySpec, int, int]] = {
            "small_w256_1key": (small, "increment", one, 256, o.ops),
            "large_w256_1key": (large, "increment", one, 256, o.ops),
            "large_w256_uniform": (large, "increment", uniform, 256, o.ops),
            "large_w256_zipf": (large, "increment", zipf, 256, o.ops),
            "small_get_w1_1key": (small, "get", one, 1, o.read_ops),
            "large_get_w1_1key": (large, "get", one, 1, o.read_ops),
            "large_get_w1_uniform": (large, "get", uniform, 1, o.read_ops),
        }
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in runs}
        for r in range(o.rounds):
            for name, (cluster, op, spec, window, ops) in runs.items():
                self.progress.start(f"round {r + 1}/{o.rounds}: {name}", ops)
                try:
                    cpu0 = cluster.cpu(1)
                    result = closed_loop(cluster.router(1), op, streams[spec], window, ops,
                                         o.seconds, self.progress.update)
                    cpu = cluster.cpu(1) - cpu0
                finally:
                    self.progress.close()
                result["cpu_us_per_op"] = cpu / result["acked"] * 1e6 if result["acked"] else None
                rounds[name].append(result)
        out: dict[str, Any] = {}
        for name, (_, op, spec, window, _) in runs.items():
            rs = rounds[name]
            cpus = [x["cpu_us_per_op"] for x in rs if x["cpu_us_per_op"] is not None]
            out[name] = {"op": op, "keys": spec.to_json(), "window": window,
                         "ops_per_s": median([x["ops_per_s"] for x in rs]),
                         "cpu_us_per_op": median(cpus) if cpus else None,
                         "errors": sum(x["errors"] for x in rs),
                         "stalled": any(x["stalled"] for x in rs),
                         "rounds": [{"ops_per_s": x["ops_per_s"], "acked": x["acked"],
                                     "cpu_us_per_op": x["cpu_us_per_op"]} for x in rs]}
        self.res["interleaved"] = out

    # ------------------------------------------------------------------ a cut node

    def _cut(self, cluster: BenchCluster) -> None:
        o = self.o
        rng = random.Random(f"{o.seed}/cut")
        changed = sorted(rng.sample(range(o.keys), o.cut_keys))
        names = [key_name(k) for k in changed]
        out: dict[str, Any] = {"keys": len(changed), "how": "restart"}
        self.progress.note(f"cut: node 3 killed (SIGKILL) while {len(changed):,} keys change "
                           "at nodes 1 and 2")
        cluster.close_channel(3)
        cluster.kill(3, signal.SIGKILL)
        killed = time.perf_counter()
        jobs = [(cluster.router(1), numbered(TEMPLATES["increment"], iter(changed[0::2]))),
                (cluster.router(2), numbered(TEMPLATES["decrement"], iter(changed[1::2])))]
        self.progress.start("cut: changing keys at nodes 1 and 2", len(changed))
        try:
            out["changes"] = pipelined(jobs, 256, o.fill_limit_s, self.progress.update)
        finally:
            self.progress.close()
        # Nodes 1 and 2 agree on the changed keys before node 3 comes back, so what
        # follows measures node 3's repair only.
        expected = self._agree(cluster, [1, 2], names, o.cut_limit_s)
        out["survivors_agree"] = expected is not None
        wire = cluster.channel(1).counts(names, states=True)["states"]
        out["encoded_state_bytes"] = encoded_size(wire)
        before = {i: cluster.stats(i) for i in (1, 2)}
        out["down_s"] = time.perf_counter() - killed
        started = time.perf_counter()
        proc = cluster.start(3)
        answer = wait_answering(cluster.router(3), started, proc, o.cut_limit_s)
        out["answer_s"] = answer
        target = expected or cluster.channel(1).counts(names)["counts"]
        same = self._poll_counts(cluster, 3, names, target, started + answer, o.cut_limit_s)
        out["converged_after_answer_s"] = same
        out["converged_after_start_s"] = None if same is None else same + answer
        waited_from = time.perf_counter() - started - answer
        out["roots_agree_after_answer_s"] = _plus(wait_same_root(cluster, o.cut_limit_s),
                                                  waited_from)
        stats3 = cluster.stats(3)
        after = {i: cluster.stats(i) for i in (1, 2)}
        out["load"] = _last_match(cluster.log_lines(3, "loaded"), _LOADED_RE)
        self._received(cluster, stats3, before, after, out)
        out["keys_repaired"] = stats3.get("keys_repaired", 0)
        out["repairs_completed"] = stats3.get("repairs_completed", 0)
        out["ratio"] = ratio(out["reply_bytes_received"], out["encoded_state_bytes"])
        out["wait_limit_s"] = o.cut_limit_s
        out["tcp_ratio"] = ratio(out["tcp_bytes_from_peers"], out["encoded_state_bytes"])
        self.res["cut"] = out
        self.progress.note(f"cut: node 3 answered after {answer:.2f} s, same counts "
                           f"{_fmt_s(same)} later; {out['reply_bytes_received']:,} reply bytes "
                           f"for {out['encoded_state_bytes']:,} bytes of state")

    @staticmethod
    def _received(cluster: BenchCluster, stats3: dict[str, int],
                  before: dict[int, dict[str, int]], after: dict[int, dict[str, int]],
                  out: dict[str, Any]) -> None:
        """What node 3 received since it restarted, three ways: its counter of peer reply
        bytes (what the repairs *it* ran moved to it), its counter of every peer byte it
        read on SUB and DEALER, and the kernel's count of every byte on its TCP
        connections with nodes 1 and 2 - which also holds what arrives on its ROUTER: the
        peers' own repair requests (hash lists) and the keys they give back (merges)."""
        out["reply_bytes_received"] = stats3.get("peer_reply_bytes_received", 0)
        out["peer_bytes_received"] = stats3.get("peer_bytes_received", 0)
        out["tcp_bytes_from_peers"] = tcp_received_from(cluster.pid(3),
                                                        [cluster.pid(1), cluster.pid(2)])
        out["peers_bytes_sent"] = sum(stat_delta(before[i], after[i], "peer_bytes_sent")
                                      for i in (1, 2))

    def _agree(self, cluster: BenchCluster, nodes: list[int], names: list[str],
               limit_s: float) -> list[int] | None:
        deadline = time.perf_counter() + limit_s
        while True:
            views: list[list[int]] = [cluster.channel(i).counts(names)["counts"]
                                      for i in nodes]
            if all(v == views[0] for v in views):
                return views[0]
            if time.perf_counter() > deadline:
                return None
            time.sleep(POLL_S)

    def _poll_counts(self, cluster: BenchCluster, node: int, names: list[str],
                     expected: list[int], since: float, limit_s: float) -> float | None:
        """Seconds from ``since`` until ``node`` answers ``expected`` for ``names``."""
        channel: Channel = cluster.channel(node)
        deadline = since + limit_s
        while time.perf_counter() < deadline:
            if channel.counts(names, timeout_s=limit_s)["counts"] == expected:
                return time.perf_counter() - since
            time.sleep(POLL_S)
        return None

    # ------------------------------------------------------------------ a wiped node

    def _wipe(self, cluster: BenchCluster) -> None:
        o = self.o
        out: dict[str, Any] = {}
        reference = cluster.status(1)
        out["keys"] = reference["keys"]
        self.progress.note(f"wipe: node 3 killed, its data directory deleted, restarted "
                           f"({reference['keys']:,} keys to stream)")
        cluster.close_channel(3)
        cluster.kill(3, signal.SIGKILL)
        shutil.rmtree(cluster.data_dir(3))
        before = {i: cluster.stats(i) for i in (1, 2)}
        started = time.perf_counter()
        proc = cluster.start(3)
        answer = wait_answering(cluster.router(3), started, proc, o.restart_limit_s)
        out["answer_s"] = answer
        # One read right away: how long a wiped node holds a client request.
        t = time.perf_counter()
        first = cluster.channel(3).call({"op": "get", "key": "k0"}, o.restart_limit_s)
        out["first_get_s"] = time.perf_counter() - t
        out["first_get_ok"] = first.get("ok") is True
        full = None
        deadline = started + o.restart_limit_s
        while time.perf_counter() < deadline:
            status = cluster.status(3)
            if (status["keys"] == reference["keys"] and not status["bootstrapping"]
                    and status["root"] == cluster.status(1)["root"]):
                full = time.perf_counter() - started
                break
            time.sleep(POLL_S)
        out["full_after_start_s"] = full
        out["wait_limit_s"] = o.restart_limit_s
        out["full_after_answer_s"] = None if full is None else full - answer
        stats3 = cluster.stats(3)
        after = {i: cluster.stats(i) for i in (1, 2)}
        out["bootstrap"] = _last_match(cluster.log_lines(3, "bootstrap from node"),
                                       _BOOTSTRAP_RE)
        self._received(cluster, stats3, before, after, out)
        out["rss_kib"] = cluster.rss().get(3)
        out["disk"] = cluster.disk(3)
        # The whole keyspace's encoded size, estimated from a sample of its keys.
        rng = random.Random(f"{o.seed}/sample")
        sample = [key_name(k) for k in rng.sample(range(o.keys), min(SAMPLE_KEYS, o.keys))]
        wire = cluster.channel(1).counts(sample, states=True)["states"]
        per_key = encoded_size(wire) / max(1, len(wire))
        out["encoded_bytes_estimate"] = per_key * reference["keys"]
        out["ratio_estimate"] = ratio(out["reply_bytes_received"], out["encoded_bytes_estimate"])
        out["tcp_ratio_estimate"] = ratio(out["tcp_bytes_from_peers"],
                                          out["encoded_bytes_estimate"])
        self.res["wipe"] = out
        self.progress.note(f"wipe: full keyspace after {_fmt_s(full)} from start")


def _mean_of(per_node: dict[int, dict[str, Any]], field: str) -> float:
    values: list[float] = [v[field] for v in per_node.values()]
    return sum(values) / len(values)


def _plus(a: float | None, b: float) -> float | None:
    return None if a is None else a + b


def _fmt_s(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def _last_match(lines: list[str], pattern: re.Pattern[str]) -> dict[str, Any] | None:
    for line in reversed(lines):
        m = pattern.search(line)
        if m:
            return {"line": line.strip(), "numbers": [float(g) for g in m.groups()]}
    return None
