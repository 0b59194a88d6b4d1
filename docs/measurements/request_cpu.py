"""Node CPU per request at window 1, split into user and system time and by thread
(the loop, ZeroMQ's I/O thread, the committer): 3,000 gets, then 3,000 increments, one
client, one key (WRITEUP.md section 7.5).  With OUT.txt, also a py-spy profile of node 1
(busy samples only) during 7 s of window-1 gets, summarised by summarise_profile.py.

Usage: .venv/bin/python docs/measurements/request_cpu.py [OUT.txt]
"""
import os, subprocess, sys, time, tempfile
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests"))
from pathlib import Path
import orjson, zmq
from harness import running_cluster

def cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    t = os.sysconf("SC_CLK_TCK")
    return int(parts[11]) / t, int(parts[12]) / t

def threads(pid):
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            s = f.read(); name = s[s.index("(")+1:s.rindex(")")]; parts = s.rsplit(")",1)[1].split()
        out[f"{tid}:{name}"] = (int(parts[11]) + int(parts[12]))
    return out

with running_cluster(Path(tempfile.mkdtemp()) / "c", settings={}) as c:
    ep = c.config.nodes[1].router; pid = c.procs[1].pid
    ctx = zmq.Context(); s = ctx.socket(zmq.DEALER); s.linger = 0; s.connect(ep)
    for op in ("get", "increment"):
        body = orjson.dumps({"op": op, "id": 1, "key": "default"})
        for _ in range(200): s.send(body); s.recv()
        u0, k0 = cpu(pid); th0 = threads(pid); t0 = time.perf_counter(); n = 3000
        for _ in range(n): s.send(body); s.recv()
        dt = time.perf_counter() - t0; u1, k1 = cpu(pid); th1 = threads(pid)
        print(op, f"{n/dt:.0f}/s user {(u1-u0)/n*1e6:.0f} us sys {(k1-k0)/n*1e6:.0f} us per op")
        print("  per thread (clock ticks):", {k: th1[k]-th0.get(k,0) for k in th1 if th1[k]-th0.get(k,0)})
    if len(sys.argv) > 1:
        body = orjson.dumps({"op": "get", "id": 1, "key": "default"})
        spy = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "-r", "500", "--nonblocking", "-f", "raw", "-d", "6", "-p", str(pid), "-o", sys.argv[1]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.perf_counter() + 7
        while time.perf_counter() < end:
            s.send(body); s.recv()
        spy.wait()
