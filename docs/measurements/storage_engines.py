#!/usr/bin/env python3
"""Durable-write micro-benchmark for the zcounter storage engine decision.

A one-off measurement kept for the record (WRITEUP.md sections 4.1 and 7.4); its results
on the 2-core development machine are in storage_engines-results.txt. Run it in a
virtualenv holding the candidates (`pip install rocksdict lmdb`):
    python docs/measurements/storage_engines.py
Parts can be selected: --parts commits,gil,recovery,memory,hash
Everything is written below a mkdtemp() directory inside $ZC_STORAGE_BENCH_DIR (default:
the current directory; fsync cost depends on its file system) and removed at the end
(unless --keep).
"""
import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import timeit
import zlib

BASE = os.environ.get("ZC_STORAGE_BENCH_DIR", os.getcwd())
MiB = 1 << 20
LOG_SIZE = 64 * MiB
KEYSPACE = 1_000_000
PREPOP = 100_000
VAL_LEN = 110
RUN_TIME_LIMIT = 90.0  # seconds per (candidate, batch, repeat) timed loop

# ---------------------------------------------------------------- helpers


def key_str(i):
    return "c:%010d" % i  # 12 bytes


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def proc_write_bytes():
    """Bytes this process caused to be written (accounted at page-dirty time)."""
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _block_dev_of(path):
    st = os.stat(path)
    maj, mnr = os.major(st.st_dev), os.minor(st.st_dev)
    p = "/sys/dev/block/%d:%d" % (maj, mnr)
    if os.path.exists(p + "/stat"):
        return p + "/stat"
    return None


DEV_STAT = None


def dev_sectors_written():
    if DEV_STAT is None:
        return None
    with open(DEV_STAT) as f:
        return int(f.read().split()[6])


def fsync_path(p):
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(d):
    for root, dirs, files in os.walk(d):
        for fn in files:
            fsync_path(os.path.join(root, fn))
        fsync_path(root)


def dir_size(d):
    tot_size = tot_alloc = 0
    for root, dirs, files in os.walk(d):
        for fn in files:
            st = os.stat(os.path.join(root, fn))
            tot_size += st.st_size
            tot_alloc += st.st_blocks * 512
    return tot_size, tot_alloc


def pctl(sorted_vals, q):
    # nearest-rank percentile
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, int(round(q * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


class Workload:
    """Pre-generated batches so generation is not timed."""

    def __init__(self, seed, nbatches, bs, single_key=False):
        rnd = random.Random(seed)
        pool = [rnd.randbytes(VAL_LEN) for _ in range(4096)]
        self.batches = []
        for b in range(nbatches):
            recs = []
            for j in range(bs):
                kid = 7 if single_key else rnd.randrange(KEYSPACE)
                ks = key_str(kid)
                recs.append((ks, ks.encode(), pool[rnd.randrange(4096)]))
            self.batches.append(recs)


# ---------------------------------------------------------------- log encoding
HDR = struct.Struct("<IQI")  # payload_len, seq, crc32(len|seq|payload)
REC = struct.Struct("<HH")


def encode_batch(seq, recs):
    parts = []
    ap = parts.append
    pk = REC.pack
    for _, kb, v in recs:
        ap(pk(len(kb), len(v)))
        ap(kb)
        ap(v)
    payload = b"".join(parts)
    head = struct.pack("<IQ", len(payload), seq)
    crc = zlib.crc32(payload, zlib.crc32(head))
    return head + struct.pack("<I", crc) + payload


# ---------------------------------------------------------------- candidates
UPSERT = ("INSERT INTO kv(key, state) VALUES(?, ?) "
          "ON CONFLICT(key) DO UPDATE SET state=excluded.state")

_TEMPLATES = {}


def sqlite_template(root):
    p = os.path.join(root, "template.sqlite")
    if "sqlite" not in _TEMPLATES:
        rnd = random.Random(42)
        c = sqlite3.connect(p, isolation_level=None)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("CREATE TABLE kv(key TEXT PRIMARY KEY, state BLOB) WITHOUT ROWID")
        ids = rnd.sample(range(KEYSPACE), PREPOP)
        c.execute("BEGIN")
        c.executemany("INSERT INTO kv VALUES(?,?)", ((key_str(i), rnd.randbytes(VAL_LEN)) for i in ids))
        c.execute("COMMIT")
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        c.close()
        fsync_path(p)
        _TEMPLATES["sqlite"] = p
    return p


def lmdb_template(root):
    import lmdb
    d = os.path.join(root, "template.lmdb")
    if "lmdb" not in _TEMPLATES:
        rnd = random.Random(43)
        env = lmdb.open(d, map_size=1 << 30, sync=True)
        ids = rnd.sample(range(KEYSPACE), PREPOP)
        with env.begin(write=True) as txn:
            for i in ids:
                txn.put(key_str(i).encode(), rnd.randbytes(VAL_LEN))
        env.sync(True)
        env.close()
        _TEMPLATES["lmdb"] = d
    return d


class Candidate:
    name = "?"
    logical = None  # logical bytes per commit, if known

    def setup(self, d, bs):
        pass

    def commit(self, seq, recs):
        raise NotImplementedError

    def close(self):
        pass


class SqliteC(Candidate):
    def __init__(self, sync, wal_fdatasync=False, single_key=False):
        self.sync = sync
        self.wal_fdatasync = wal_fdatasync
        self.single_key = single_key
        self.name = "sqlite WAL %s%s%s" % (sync, "+fdatasync(-wal)" if wal_fdatasync else "",
                                            " 1key" if single_key else "")

    def setup(self, d, bs):
        self.path = os.path.join(d, "kv.sqlite")
        shutil.copyfile(sqlite_template(os.path.dirname(d)), self.path)
        fsync_path(self.path)
        fsync_path(d)
        self.c = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.c.execute("PRAGMA journal_mode=WAL")
        self.c.execute("PRAGMA synchronous=%s" % self.sync)
        # make sure the -wal file exists before we open an fd on it
        self.c.execute("BEGIN IMMEDIATE")
        self.c.execute(UPSERT, ("c:init", b"x"))
        self.c.execute("COMMIT")
        fsync_path(d)
        self.walfd = os.open(self.path + "-wal", os.O_RDWR) if self.wal_fdatasync else None

    def commit(self, seq, recs):
        c = self.c
        c.execute("BEGIN")
        c.executemany(UPSERT, [(k, v) for k, _, v in recs])
        c.execute("COMMIT")
        if self.walfd is not None:
            os.fdatasync(self.walfd)

    def close(self):
        if self.walfd is not None:
            os.close(self.walfd)
        self.c.close()


class AppendLog(Candidate):
    name = "append log O_APPEND+fdatasync"

    def setup(self, d, bs):
        self.fd = os.open(os.path.join(d, "log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.fsync(self.fd)
        fsync_path(d)

    def commit(self, seq, recs):
        os.write(self.fd, encode_batch(seq, recs))
        os.fdatasync(self.fd)

    def close(self):
        os.close(self.fd)


def make_prealloc(path, written):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.posix_fallocate(fd, 0, LOG_SIZE)
    if written:
        z = bytes(MiB)
        for off in range(0, LOG_SIZE, MiB):
            os.pwrite(fd, z, off)
    os.fsync(fd)
    os.close(fd)
    fsync_path(os.path.dirname(path))


class PreallocLog(Candidate):
    def __init__(self, written, dsync=False):
        self.written = written
        self.dsync = dsync
        if dsync:
            self.name = "prealloc log (written) O_DSYNC pwrite"
        else:
            self.name = "prealloc log (%s) pwrite+fdatasync" % ("written" if written else "fallocate-only")

    def setup(self, d, bs):
        p = os.path.join(d, "log")
        make_prealloc(p, self.written)
        flags = os.O_WRONLY | (os.O_DSYNC if self.dsync else 0)
        self.fd = os.open(p, flags)
        self.off = 0

    def commit(self, seq, recs):
        buf = encode_batch(seq, recs)
        if self.off + len(buf) > LOG_SIZE:
            self.off = 0  # wrap (does not happen with the default sizes)
        os.pwrite(self.fd, buf, self.off)
        self.off += len(buf)
        if not self.dsync:
            os.fdatasync(self.fd)

    def close(self):
        os.close(self.fd)


class RocksC(Candidate):
    name = "rocksdict WriteBatch sync=True"

    def setup(self, d, bs):
        import rocksdict as rd
        self.rd = rd
        opts = rd.Options(raw_mode=True)
        opts.create_if_missing(True)
        self.db = rd.Rdict(os.path.join(d, "rocks"), opts)
        self.wo = rd.WriteOptions()
        self.wo.sync = True
        fsync_tree(d)

    def commit(self, seq, recs):
        wb = self.rd.WriteBatch(raw_mode=True)
        for _, kb, v in recs:
            wb.put(kb, v)
        self.db.write(wb, self.wo)

    def close(self):
        self.db.close()


class LmdbC(Candidate):
    name = "lmdb txn sync=True"

    def setup(self, d, bs):
        import lmdb
        dd = os.path.join(d, "lmdb")
        shutil.copytree(lmdb_template(os.path.dirname(d)), dd)
        fsync_tree(dd)
        self.env = lmdb.open(dd, map_size=1 << 30, sync=True, metasync=True)

    def commit(self, seq, recs):
        with self.env.begin(write=True) as txn:
            for _, kb, v in recs:
                txn.put(kb, v)

    def close(self):
        self.env.close()


def all_candidates():
    return [
        SqliteC("FULL"),
        SqliteC("FULL", single_key=True),
        SqliteC("NORMAL"),
        SqliteC("NORMAL", single_key=True),
        SqliteC("NORMAL", wal_fdatasync=True),
        SqliteC("NORMAL", wal_fdatasync=True, single_key=True),
        AppendLog(),
        PreallocLog(written=True),
        PreallocLog(written=False),
        PreallocLog(written=True, dsync=True),
        RocksC(),
        LmdbC(),
    ]


# ---------------------------------------------------------------- part 1: commit latency

def run_one(cand, root, bs, n, warm, seed):
    d = tempfile.mkdtemp(dir=root, prefix="run-")
    wl = Workload(seed, n + warm, bs, single_key=getattr(cand, "single_key", False))
    cand.setup(d, bs)
    logical = len(encode_batch(0, wl.batches[0]))
    for i in range(warm):
        cand.commit(i, wl.batches[i])
    lat = []
    wb0, ds0 = proc_write_bytes(), dev_sectors_written()
    t_start = time.perf_counter()
    pc = time.perf_counter
    for i in range(warm, warm + n):
        t0 = pc()
        cand.commit(i, wl.batches[i])
        lat.append(pc() - t0)
        if t0 - t_start > RUN_TIME_LIMIT:
            break
    wb1, ds1 = proc_write_bytes(), dev_sectors_written()
    cand.close()
    shutil.rmtree(d)
    k = len(lat)
    lat.sort()
    return dict(n=k, mean=sum(lat) / k * 1e3, p50=pctl(lat, 0.5) * 1e3, p99=pctl(lat, 0.99) * 1e3,
                dirtied=(wb1 - wb0) / k if wb0 is not None else None,
                dev=(ds1 - ds0) * 512 / k if ds0 is not None else None,
                logical=logical)


def part_commits(root, args):
    cands = all_candidates()
    results = {}  # (name, bs) -> list of dicts
    t_all = time.perf_counter()
    for rep in range(args.repeats):
        order = cands[rep % len(cands):] + cands[:rep % len(cands)]  # rotate start
        for bs in args.batches:
            for c in order:
                r = run_one(c, root, bs, args.n, args.warmup, seed=1000 * rep + bs)
                results.setdefault((c.name, bs), []).append(r)
                print("  rep %d bs %4d %-48s mean %7.3f p50 %7.3f p99 %7.3f ms (n=%d)" % (
                    rep, bs, c.name, r["mean"], r["p50"], r["p99"], r["n"]), flush=True)
    print("commit part took %.1f s" % (time.perf_counter() - t_all))
    med = lambda rs, k: statistics.median([r[k] for r in rs]) if rs[0][k] is not None else float("nan")
    print()
    print("TABLE 1: ms per durable commit (median over %d interleaved repeats of N=%d after %d warm-up)"
          % (args.repeats, args.n, args.warmup))
    hdr = "%-48s %5s %8s %8s %8s %11s %9s %10s %9s" % (
        "candidate", "batch", "mean", "p50", "p99", "mean-rng", "logicalB", "dirtiedB", "devB")
    print(hdr)
    print("-" * len(hdr))
    out = []
    for bs in args.batches:
        for c in cands:
            rs = results[(c.name, bs)]
            means = [r["mean"] for r in rs]
            row = dict(candidate=c.name, batch=bs, mean=med(rs, "mean"), p50=med(rs, "p50"),
                       p99=med(rs, "p99"), mean_min=min(means), mean_max=max(means),
                       logical=rs[0]["logical"] if isinstance(c, (AppendLog, PreallocLog)) else None,
                       dirtied=med(rs, "dirtied"), dev=med(rs, "dev"))
            out.append(row)
            print("%-48s %5d %8.3f %8.3f %8.3f %5.2f-%-5.2f %9s %10.0f %9.0f" % (
                c.name, bs, row["mean"], row["p50"], row["p99"], row["mean_min"], row["mean_max"],
                row["logical"] if row["logical"] is not None else "-", row["dirtied"], row["dev"]))
        print()
    print("logicalB = bytes of the log record (header+payload) per commit; dirtiedB = /proc/self/io "
          "write_bytes per commit (page-granular, incl. checkpoints/flushes); devB = sectors written to "
          "the block device per commit (whole device, incl. ext4 journal and anything else on the machine)")
    return out


# ---------------------------------------------------------------- part A: GIL

GAP = 50e-6  # an iteration of the counter loop is ~0.1-0.3 us; a longer gap means it did not hold the GIL/CPU


def _gap_counter(stop):
    """Pure-Python loop; returns (iterations, seconds of gaps > GAP, seconds running)."""
    pc = time.perf_counter
    t0 = last = pc()
    gaps = 0.0
    k = 0
    while not stop[0]:
        now = pc()
        if now - last > GAP:
            gaps += now - last
        last = now
        k += 1
    return k, gaps, pc() - t0


def count_alone(seconds):
    stop = [False]
    res = []
    t = threading.Thread(target=lambda: res.append(_gap_counter(stop)))
    t.start()
    time.sleep(seconds)
    stop[0] = True
    t.join()
    k, gaps, run = res[0]
    return k / run, 1 - gaps / run


def gil_one(cand, root, bs, n, tlimit, with_counter):
    d = tempfile.mkdtemp(dir=root, prefix="gil-")
    wl = Workload(77 + bs, n + 20, bs, single_key=getattr(cand, "single_key", False))
    cand.setup(d, bs)
    for i in range(20):
        cand.commit(i, wl.batches[i])
    stop = [False]
    res = []
    lat = []

    def counter():
        res.append(_gap_counter(stop))

    def committer():
        pc = time.perf_counter
        ts = pc()
        for i in range(20, 20 + n):
            t0 = pc()
            cand.commit(i, wl.batches[i])
            lat.append(pc() - t0)
            if t0 - ts > tlimit:
                break

    ct = threading.Thread(target=counter) if with_counter else None
    wt = threading.Thread(target=committer)
    t0 = time.perf_counter()
    if ct:
        ct.start()
    wt.start()
    wt.join()
    stop[0] = True
    if ct:
        ct.join()
    el = time.perf_counter() - t0
    cand.close()
    shutil.rmtree(d)
    lat.sort()
    return dict(rate=(res[0][0] / res[0][2]) if res else None, free=(1 - res[0][1] / res[0][2]) if res else None,
                commits=len(lat), wall=el,
                mean=sum(lat) / len(lat) * 1e3, p50=pctl(lat, 0.5) * 1e3)


def part_gil(root, args):
    rows = []
    for sw in args.gil_switch:
        sys.setswitchinterval(sw)
        if sw == args.gil_switch[0]:
            cands, batches = all_candidates(), args.gil_batches
        else:  # extra, smaller table with a shorter switch interval
            cands = [c for c in all_candidates() if c.name in (
                "sqlite WAL FULL", "append log O_APPEND+fdatasync", "prealloc log (written) pwrite+fdatasync",
                "prealloc log (written) O_DSYNC pwrite", "rocksdict WriteBatch sync=True", "lmdb txn sync=True")]
            batches = [16]
        print()
        print("TABLE A: GIL, sys.setswitchinterval(%g). A pure-Python counter thread runs while another thread "
              "commits in a loop; GIL-free(gaps) = 1 - (sum of counter-loop gaps > 50us)/wall; by-rate = counter "
              "iterations/s relative to the counter alone; GIL-held ms/commit = (free of the counter alone - free)*wall/commits." % sw)
        hdr = "%-48s %5s %8s %8s %10s %10s %10s %10s" % ("candidate", "batch", "GIL-free", "by-rate", "GIL-held",
                                                          "commit p50", "commit p50", "commits/s")
        print(hdr)
        print("%-48s %5s %8s %8s %10s %10s %10s %10s" % ("", "", "(gaps)", "(iters)", "ms/commit", "alone ms",
                                                          "w/cnt ms", "w/counter"))
        print("-" * len(hdr))
        for bs in batches:
            for c in cands:
                fr, fr2, held, la, lc, cps = [], [], [], [], [], []
                for rep in range(args.gil_repeats):
                    alone = gil_one(c, root, bs, args.gil_n, args.gil_t, with_counter=False)
                    brate, bfree = count_alone(0.3)
                    w = gil_one(c, root, bs, args.gil_n, args.gil_t, with_counter=True)
                    f = w["free"]
                    fr.append(f)
                    fr2.append(min(1.0, w["rate"] / brate))
                    held.append(max(0.0, bfree - f) * w["wall"] * 1e3 / w["commits"])
                    la.append(alone["p50"])
                    lc.append(w["p50"])
                    cps.append(w["commits"] / w["wall"])
                row = dict(switchinterval=sw, candidate=c.name, batch=bs, free=statistics.median(fr),
                           free_by_rate=statistics.median(fr2), baseline_free=bfree,
                           held_ms=statistics.median(held), lat_alone=statistics.median(la),
                           lat_counter=statistics.median(lc), commits_per_s=statistics.median(cps),
                           free_all=fr)
                rows.append(row)
                print("%-48s %5d %8.2f %8.2f %10.3f %10.3f %10.3f %10.0f" % (
                    c.name, bs, row["free"], row["free_by_rate"], row["held_ms"], row["lat_alone"], row["lat_counter"],
                    row["commits_per_s"]), flush=True)
            print()
    sys.setswitchinterval(0.005)
    return rows


# ---------------------------------------------------------------- part B: recovery

def scan_log(path, decode):
    with open(path, "rb", buffering=0) as f:
        data = f.read()
    mv = memoryview(data)
    n = len(data)
    off = 0
    batches = recs = 0
    state = {} if decode else None
    unpack_hdr = HDR.unpack_from
    unpack_rec = REC.unpack_from
    crc32 = zlib.crc32
    while off + 16 <= n:
        ln, seq, crc = unpack_hdr(data, off)
        if ln == 0:
            break
        end = off + 16 + ln
        if end > n:
            break
        if crc32(mv[off + 16:end], crc32(mv[off:off + 12])) != crc:
            break
        if decode:
            p = off + 16
            while p < end:
                kl, vl = unpack_rec(data, p)
                p += 4
                k = bytes(mv[p:p + kl])
                p += kl
                state[k] = bytes(mv[p:p + vl])
                p += vl
                recs += 1
        batches += 1
        off = end
    return off, batches, recs, (len(state) if decode else None)


def part_recovery(root, args):
    d = tempfile.mkdtemp(dir=root, prefix="rec-")
    p = os.path.join(d, "log")
    make_prealloc(p, True)
    wl = Workload(5, 64, 256)
    fd = os.open(p, os.O_WRONLY)
    off = seq = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 60:
        buf = encode_batch(seq, wl.batches[seq % 64])
        if off + len(buf) > LOG_SIZE:
            break
        os.pwrite(fd, buf, off)
        off += len(buf)
        seq += 1
    os.fdatasync(fd)
    os.close(fd)
    print()
    print("TABLE B: recovery scan of a 64 MiB preallocated log (%d batches x 256 records, %.1f MiB valid)"
          % (seq, off / MiB))
    print("%-40s %9s %9s %12s" % ("mode", "seconds", "MB/s", "records"))
    rows = []
    for mode, decode, cold in [("cold cache, CRC only", False, True), ("warm cache, CRC only", False, False),
                               ("cold cache, CRC + decode into dict", True, True),
                               ("warm cache, CRC + decode into dict", True, False)]:
        ts = []
        for rep in range(3):
            if cold:
                fd = os.open(p, os.O_RDONLY)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                os.close(fd)
            t = time.perf_counter()
            end, nb, nr, nk = scan_log(p, decode)
            ts.append(time.perf_counter() - t)
            assert end == off and nb == seq, (end, off, nb, seq)
        t = statistics.median(ts)
        rows.append(dict(mode=mode, seconds=t, MBps=LOG_SIZE / 1e6 / t, valid_MBps=off / 1e6 / t))
        print("%-40s %9.3f %9.1f %12s" % (mode, t, LOG_SIZE / 1e6 / t, nr if decode else nb * 256))
    print("(MB/s is over the whole 64 MiB file = 67.1 MB; the scan stops at the first zero header)")
    shutil.rmtree(d)
    return rows


# ---------------------------------------------------------------- part C: memory (each in a subprocess)
PERM_A = 387_403  # coprime with 10**6 -> i*A mod 1e6 is a permutation


def mem_child(engine, d):
    import gc
    rnd = random.Random(9)
    out = {"engine": engine, "rss_start_kib": rss_kib()}
    N = KEYSPACE
    B = 1000
    t0 = time.perf_counter()
    if engine == "rocksdict":
        import rocksdict as rd
        opts = rd.Options(raw_mode=True)
        opts.create_if_missing(True)
        path = os.path.join(d, "rocks")
        db = rd.Rdict(path, opts)
        out["rss_after_open_kib"] = rss_kib()
        wo = rd.WriteOptions()
        wo.sync = False
        for b0 in range(0, N, B):
            wb = rd.WriteBatch(raw_mode=True)
            for i in range(b0, b0 + B):
                wb.put(key_str(i * PERM_A % N).encode(), rnd.randbytes(VAL_LEN))
            db.write(wb, wo)
            if time.perf_counter() - t0 > 300:
                break
        out["insert_s"] = time.perf_counter() - t0
        out["rss_after_insert_kib"] = rss_kib()
        db.flush()
        out["rss_after_flush_kib"] = rss_kib()
        db.close()
        del db
        gc.collect()
        out["disk_size"], out["disk_alloc"] = dir_size(path)
        db = rd.Rdict(path, rd.Options(raw_mode=True))
        t = time.perf_counter()
        cnt = 0
        last = b""
        for k, v in db.items():
            assert k > last
            last = k
            cnt += 1
        out["iter_s"] = time.perf_counter() - t
        out["iter_count"] = cnt
        out["rss_after_iter_kib"] = rss_kib()
        db.close()
    elif engine == "sqlite":
        path = os.path.join(d, "kv.sqlite")
        c = sqlite3.connect(path, isolation_level=None)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=NORMAL")
        c.execute("CREATE TABLE kv(key TEXT PRIMARY KEY, state BLOB) WITHOUT ROWID")
        out["rss_after_open_kib"] = rss_kib()
        for b0 in range(0, N, B):
            c.execute("BEGIN")
            c.executemany(UPSERT, [(key_str(i * PERM_A % N), rnd.randbytes(VAL_LEN)) for i in range(b0, b0 + B)])
            c.execute("COMMIT")
            if time.perf_counter() - t0 > 300:
                break
        out["insert_s"] = time.perf_counter() - t0
        out["rss_after_insert_kib"] = rss_kib()
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        out["rss_after_flush_kib"] = rss_kib()
        c.close()
        out["disk_size"], out["disk_alloc"] = dir_size(d)
        c = sqlite3.connect(path, isolation_level=None)
        t = time.perf_counter()
        cnt = 0
        last = ""
        for k, v in c.execute("SELECT key, state FROM kv ORDER BY key"):
            assert k > last
            last = k
            cnt += 1
        out["iter_s"] = time.perf_counter() - t
        out["iter_count"] = cnt
        out["rss_after_iter_kib"] = rss_kib()
        c.close()
    elif engine == "lmdb":
        import lmdb
        path = os.path.join(d, "lmdb")
        env = lmdb.open(path, map_size=1 << 30, sync=True)
        out["rss_after_open_kib"] = rss_kib()
        for b0 in range(0, N, B):
            with env.begin(write=True) as txn:
                for i in range(b0, b0 + B):
                    txn.put(key_str(i * PERM_A % N).encode(), rnd.randbytes(VAL_LEN))
            if time.perf_counter() - t0 > 300:
                break
        out["insert_s"] = time.perf_counter() - t0
        out["rss_after_insert_kib"] = rss_kib()
        env.sync(True)
        out["rss_after_flush_kib"] = rss_kib()
        env.close()
        out["disk_size"], out["disk_alloc"] = dir_size(path)
        env = lmdb.open(path, map_size=1 << 30, readonly=True, lock=False)
        t = time.perf_counter()
        cnt = 0
        last = b""
        with env.begin() as txn:
            for k, v in txn.cursor():
                assert k > last
                last = k
                cnt += 1
        out["iter_s"] = time.perf_counter() - t
        out["iter_count"] = cnt
        out["rss_after_iter_kib"] = rss_kib()
        env.close()
    print("MEMJSON " + json.dumps(out))


def part_memory(root, args):
    rows = []
    print()
    print("TABLE C: 1,000,000 keys (12 B key, 110 B random value), batches of 1,000, no sync; "
          "default options; each engine in a fresh subprocess")
    hdr = "%-10s %8s %11s %11s %11s %11s %10s %10s %9s" % (
        "engine", "insert_s", "RSS start", "RSS insert", "RSS flushed", "RSS iter", "disk MB", "alloc MB",
        "iter_s")
    print(hdr)
    print("-" * len(hdr))
    for eng in ["rocksdict", "sqlite", "lmdb"]:
        d = tempfile.mkdtemp(dir=root, prefix="mem-")
        cp = subprocess.run([sys.executable, os.path.abspath(__file__), "--mem-child", eng, "--mem-dir", d],
                            capture_output=True, text=True, timeout=900)
        shutil.rmtree(d)
        line = [l for l in cp.stdout.splitlines() if l.startswith("MEMJSON ")]
        if not line:
            print(eng, "FAILED", cp.stdout[-2000:], cp.stderr[-2000:])
            continue
        o = json.loads(line[0][8:])
        rows.append(o)
        print("%-10s %8.1f %9.1fMB %9.1fMB %9.1fMB %9.1fMB %10.1f %10.1f %9.2f" % (
            eng, o["insert_s"], o["rss_start_kib"] / 1024, o["rss_after_insert_kib"] / 1024,
            o["rss_after_flush_kib"] / 1024, o["rss_after_iter_kib"] / 1024, o["disk_size"] / 1e6,
            o["disk_alloc"] / 1e6, o["iter_s"]), flush=True)
    print("(RSS in MiB from VmRSS; for lmdb RSS includes touched pages of the mmap'ed file, i.e. page cache)")
    return rows


# ---------------------------------------------------------------- part D: hashes

def part_hash(root, args):
    import xxhash
    data = random.Random(3).randbytes(60)
    g = {"data": data}
    cases = [
        ("hashlib.blake2b(data, digest_size=8).digest()", "import hashlib",
         "hashlib.blake2b(data, digest_size=8).digest()"),
        ("blake2b(data, digest_size=8).digest() [prebound]", "from hashlib import blake2b",
         "blake2b(data, digest_size=8).digest()"),
        ("xxhash.xxh3_64_intdigest(data)", "import xxhash", "xxhash.xxh3_64_intdigest(data)"),
        ("xxh3_64_intdigest(data) [prebound]", "from xxhash import xxh3_64_intdigest", "xxh3_64_intdigest(data)"),
        ("zlib.crc32(data) [reference]", "from zlib import crc32", "crc32(data)"),
    ]
    print()
    print("TABLE D: ns per call on 60-byte input (timeit, number=1,000,000, best of 5)")
    rows = []
    for label, setup, stmt in cases:
        best = min(timeit.repeat(stmt, setup=setup, globals=g, number=1_000_000, repeat=5))
        rows.append(dict(case=label, ns=best * 1e3))
        print("%-52s %8.1f ns" % (label, best * 1e3))
    return rows


# ---------------------------------------------------------------- main

def main():
    global DEV_STAT
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="commits,gil,recovery,memory,hash")
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batches", default="1,16,256")
    ap.add_argument("--gil-batches", default="1,16,256")
    ap.add_argument("--gil-n", type=int, default=300)
    ap.add_argument("--gil-t", type=float, default=1.0)
    ap.add_argument("--gil-repeats", type=int, default=2)
    ap.add_argument("--gil-switch", default="0.005,0.0005")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json", default=None, help="write all results as JSON here")
    ap.add_argument("--mem-child", default=None)
    ap.add_argument("--mem-dir", default=None)
    args = ap.parse_args()
    if args.mem_child:
        mem_child(args.mem_child, args.mem_dir)
        return
    args.batches = [int(x) for x in args.batches.split(",")]
    args.gil_batches = [int(x) for x in args.gil_batches.split(",")]
    args.gil_switch = [float(x) for x in args.gil_switch.split(",")]
    root = tempfile.mkdtemp(dir=BASE)
    DEV_STAT = _block_dev_of(root)
    import lmdb
    import rocksdict
    import xxhash
    from importlib.metadata import version
    print("python %s | sqlite %s | lmdb %s (liblmdb %s) | rocksdict %s | xxhash %s | kernel %s | tmp %s | dev %s"
          % (sys.version.split()[0], sqlite3.sqlite_version, lmdb.__version__, ".".join(map(str, lmdb.version())),
             version("rocksdict"), xxhash.VERSION, os.uname().release, root, DEV_STAT), flush=True)
    allres = {}
    try:
        parts = args.parts.split(",")
        if "commits" in parts:
            allres["commits"] = part_commits(root, args)
        if "gil" in parts:
            allres["gil"] = part_gil(root, args)
        if "recovery" in parts:
            allres["recovery"] = part_recovery(root, args)
        if "memory" in parts:
            allres["memory"] = part_memory(root, args)
        if "hash" in parts:
            allres["hash"] = part_hash(root, args)
    finally:
        if args.json:
            with open(args.json, "w") as f:
                json.dump(allres, f, indent=1)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
