"""A checkpoint's INSERTs beside a thread running Python, one row per statement step
(``executemany``) against ROWS_PER_STATEMENT rows per statement (WRITEUP.md section 4.3).

Python's sqlite3 releases the GIL around each statement step and takes it back after; a
checkpoint thread that steps once per row must win the GIL back from the busy loop once
per row, and waits up to the switch interval each time.  The node runs at 0.2 ms
(zcounter.runtime.committer.SWITCH_INTERVAL_S).

Usage: .venv/bin/python docs/measurements/checkpoint_gil.py [ROWS]   (default 300,000)
Prints, per method and switch interval: the checkpoint's time, and the busy thread's
rate during it against its rate alone."""
import os, random, sqlite3, sys, tempfile, threading, time

ROWS = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
PER_STATEMENT = 400
STATE = 117  # bytes of a packed state with three slots


def spin(n: int) -> int:
    x = 0
    for i in range(n):
        x += i * i % 7
    return x


def run(method: str, switch: float) -> None:
    sys.setswitchinterval(switch)
    path = os.path.join(tempfile.mkdtemp(prefix="zc-ckpt-"), "db.sqlite3")
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL"); conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA cache_size=-8192")
    conn.execute("CREATE TABLE counters (key TEXT PRIMARY KEY, state BLOB NOT NULL) WITHOUT ROWID")
    rng = random.Random(1)
    states = {f"key:{rng.randrange(10**12)}": rng.randbytes(STATE) for _ in range(ROWS)}
    done = threading.Event(); took = []

    def checkpoint() -> None:
        t = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        keys = sorted(states)
        if method == "executemany":
            conn.executemany("INSERT OR REPLACE INTO counters VALUES (?, ?)",
                             ((k, states[k]) for k in keys))
        else:
            for i in range(0, len(keys), PER_STATEMENT):
                chunk = keys[i:i + PER_STATEMENT]
                conn.execute("INSERT OR REPLACE INTO counters VALUES "
                             + ",".join(["(?,?)"] * len(chunk)),
                             [v for k in chunk for v in (k, states[k])])
        conn.execute("COMMIT")
        took.append(time.perf_counter() - t); done.set()

    t = time.perf_counter(); spin(3_000_000); alone = 3_000_000 / (time.perf_counter() - t)
    thread = threading.Thread(target=checkpoint); thread.start()
    t = time.perf_counter(); n = 0
    while not done.is_set():
        spin(100_000); n += 100_000
    rate = n / (time.perf_counter() - t)
    thread.join(); conn.close()
    print(f"{method:>20} switch {switch * 1000:.1f} ms: checkpoint of {ROWS:,} rows "
          f"{took[0]:6.2f} s, busy thread at {rate / alone:.2f}x its rate alone", flush=True)


for method in ("executemany", f"{PER_STATEMENT} rows/statement"):
    for switch in (0.0002, 0.005):
        run(method, switch)
