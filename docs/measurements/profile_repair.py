"""py-spy profiles of node 3 (and nodes 1 and 2, one of which answers it) while node 3 catches up after
a wiped restart (MODE wipe) or a SIGKILL while 10,000 keys changed (MODE cut), N keys each
written at each node (WRITEUP.md sections 3.4, 3.5).

Usage: .venv/bin/python docs/measurements/profile_repair.py N OUTDIR wipe|cut
(needs py-spy; summarise OUTDIR/MODE_node3.txt with summarise_profile.py)."""
import random, shutil, signal, subprocess, sys, tempfile, time
from pathlib import Path
from zcounter.bench.servers import BenchCluster
from zcounter.bench.load import pipelined, numbered, TEMPLATES
from zcounter.bench.suite import wait_same_root
from zcounter.localcluster import wait_answering
N = int(sys.argv[1]); out = Path(sys.argv[2]); mode = sys.argv[3]
root = Path(tempfile.mkdtemp(prefix="zc-prof-"))
c = BenchCluster(root / "c")
def spy(pid, name):
    return subprocess.Popen([sys.prefix + "/bin/py-spy", "record", "--idle", "-r", "100", "-f", "raw", "-o", str(out / name), "-p", str(pid), "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    c.start_all()
    r = pipelined([(c.router(i), numbered(TEMPLATES["increment"], iter(range(N)))) for i in c.ids], 512, 3600)
    print("fill", round(r["ops_per_s"]), "converged", wait_same_root(c, 120), flush=True)
    ref = c.status(1)
    c.close_channel(3); c.kill(3, signal.SIGKILL)
    if mode == "wipe":
        shutil.rmtree(c.data_dir(3))
    else:
        changed = sorted(random.Random(1).sample(range(N), 10000))
        pipelined([(c.router(1), numbered(TEMPLATES["increment"], iter(changed[0::2]))), (c.router(2), numbered(TEMPLATES["decrement"], iter(changed[1::2])))], 256, 60)
        time.sleep(1); ref = c.status(1)
    t0 = time.perf_counter(); proc = c.start(3)
    ans = wait_answering(c.router(3), t0, proc, 300)
    spies = [spy(c.pid(i), f"{mode}_node{i}.txt") for i in (3, 1, 2)]
    while True:
        st = c.status(3)
        if st["keys"] == ref["keys"] and not st["bootstrapping"] and st["root"] == c.status(1)["root"]:
            break
        if time.perf_counter() - t0 > 600: print("timeout"); break
        time.sleep(0.05)
    full = time.perf_counter() - t0
    for s in spies: s.send_signal(2); s.wait()
    print(mode, "answer", round(ans, 2), "full", round(full, 2), flush=True)
    for i in (1, 2, 3): print(i, {k: v for k, v in c.stats(i).items() if "sync" in k or "repair" in k or "given" in k or "reply" in k or "merge" in k})
    print(subprocess.run(["grep", "-h", "-E", "repair|bootstrap|abandon|loaded", str(c.log_path(3)), str(c.log_path(1)), str(c.log_path(2))], capture_output=True, text=True).stdout[-3000:])
finally:
    c.stop_all(); shutil.rmtree(root, ignore_errors=True)
