"""What TLS costs on the RESP door (issue 19): redis-py INCR throughput over TLS against
plaintext, a new connection's handshake, and the memory a half-open handshake holds.

Two one-node clusters run side by side on loopback, alike but for TLS on the door (a
node has one door, so "the same node" is the same code, data directory layout and
settings); rounds alternate between them so drift in the machine's load hits both.

Per round and door: ``SEQ`` INCRs one at a time on one connection (each waits for its
fdatasync: the disk, not TLS, sets this pace), ``SEQ`` GETs one at a time (no commit:
the round trip through the door), ``PIPES`` pipelines of ``PIPE`` INCRs (the commit is
shared: closer to the cost of the bytes; the node's CPU time per INCR from /proc), and
``CONNECTS`` new connections each doing one PING.  Then, once,
``HALF_OPEN`` connections that send the first bytes of a ClientHello and stop: the TLS
node's RSS before and after (from /proc), against as many idle plaintext connections.

Usage: .venv/bin/python docs/measurements/resp_tls_cost.py [ROUNDS]
Needs the openssl command (certificates are made in a temporary directory)."""

from __future__ import annotations

import os
import socket
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "tests"))
import redis
from harness import FAST_SETTINGS, LocalCluster, running_cluster
from tlscerts import make_certs

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
SEQ, PIPES, PIPE, CONNECTS, HALF_OPEN = 2000, 20, 1000, 200, 400


def rss_kib(c: LocalCluster) -> int:
    status = Path(f"/proc/{c.procs[1].pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines()
                    if line.startswith("VmRSS:")))


def cpu_s(pid: int) -> float:
    """The node process's user + system CPU seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_round(make: Callable[[], redis.Redis], key: str, port: int,
              context: ssl.SSLContext | None, pid: int) -> dict[str, float]:
    out: dict[str, float] = {}
    with make() as r:
        r.ping()
        start = time.perf_counter()
        for _ in range(SEQ):
            r.incr(key)
        out["seq_per_s"] = SEQ / (time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(SEQ):
            r.get(key)
        out["get_per_s"] = SEQ / (time.perf_counter() - start)
        start, cpu = time.perf_counter(), cpu_s(pid)
        for _ in range(PIPES):
            pipe = r.pipeline(transaction=False)
            for _ in range(PIPE):
                pipe.incr(key)
            pipe.execute()
        out["pipe_per_s"] = PIPES * PIPE / (time.perf_counter() - start)
        out["pipe_cpu_us"] = (cpu_s(pid) - cpu) / (PIPES * PIPE) * 1e6
    # New connections with one client-side context (redis-py builds an SSLContext, CA
    # file included, per connection: that would be the client's cost, not the door's).
    start = time.perf_counter()
    for _ in range(CONNECTS):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
            sock = context.wrap_socket(raw, server_hostname="127.0.0.1") if context else raw
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            assert sock.recv(100) == b"+PONG\r\n"
            sock.close()
    out["connect_ms"] = (time.perf_counter() - start) / CONNECTS * 1e3
    return out


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="resp-tls-cost-"))
    certs = make_certs(root / "certs")
    settings = {**FAST_SETTINGS, "resp_tls_handshake_timeout_s": 600.0}
    tls = {"resp_tls_cert": str(certs.server_cert), "resp_tls_key": str(certs.server_key)}
    with running_cluster(root / "tls", n=1, resp=True, settings=settings,
                         security=tls) as t, \
            running_cluster(root / "plain", n=1, resp=True, settings=settings) as p:
        makers = {
            "tls": lambda: redis.Redis(port=t.resp_port(1), protocol=2, ssl=True,
                                       ssl_ca_certs=str(certs.ca), socket_timeout=30),
            "plain": lambda: redis.Redis(port=p.resp_port(1), protocol=2, socket_timeout=30),
        }
        ports = {"tls": t.resp_port(1), "plain": p.resp_port(1)}
        pids = {"tls": t.procs[1].pid, "plain": p.procs[1].pid}
        contexts = {"tls": ssl.create_default_context(cafile=certs.ca), "plain": None}
        results: dict[str, list[dict[str, float]]] = {"tls": [], "plain": []}
        for i in range(ROUNDS):
            order = ("tls", "plain") if i % 2 == 0 else ("plain", "tls")
            for door in order:
                results[door].append(one_round(makers[door], f"k{i}", ports[door],
                                               contexts[door], pids[door]))
            print(f"round {i + 1}: " + "; ".join(
                f"{d} seq {results[d][-1]['seq_per_s']:.0f}/s get "
                f"{results[d][-1]['get_per_s']:.0f}/s pipe "
                f"{results[d][-1]['pipe_per_s']:.0f}/s "
                f"({results[d][-1]['pipe_cpu_us']:.1f} us CPU each) connect "
                f"{results[d][-1]['connect_ms']:.2f} ms" for d in ("tls", "plain")),
                flush=True)
        for metric in ("seq_per_s", "get_per_s", "pipe_per_s", "pipe_cpu_us", "connect_ms"):
            tls_m = statistics.median(r[metric] for r in results["tls"])
            plain_m = statistics.median(r[metric] for r in results["plain"])
            print(f"median {metric}: tls {tls_m:.2f}, plain {plain_m:.2f}, "
                  f"tls/plain {tls_m / plain_m:.3f}")
        for door, c in (("tls", t), ("plain", p)):
            before = rss_kib(c)
            socks = []
            for _ in range(HALF_OPEN):
                s = socket.create_connection(("127.0.0.1", c.resp_port(1)), timeout=30)
                s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
                socks.append(s)
            with makers[door]() as r:  # one answer after them: all were read
                r.ping()
            time.sleep(0.5)  # let the node's cycle run over every connection
            after = rss_kib(c)
            print(f"{door}: {HALF_OPEN} connections sending 11 bytes of a ClientHello: "
                  f"RSS {before} -> {after} KiB, {(after - before) / HALF_OPEN:.1f} KiB each")
            for s in socks:
                s.close()


if __name__ == "__main__":
    main()
