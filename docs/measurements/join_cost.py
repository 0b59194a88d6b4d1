"""The keyspace's hot paths before and after a change to zcounter/model, measured two
ways: written for the one packed-record join (issue 20, ``zcounter/model/records.py``).

Result, before = main at f094339, after = the join branch at 8cb62af (the one join), 2
cores shared with ~6 other jobs (load 3-7).  The next commit, 879f048, only moves the
merge methods to a base class: against 8cb62af, merge_cold 1.008, merge_hot 1.001,
page_present 1.003, add_uniform 1.001 (instructions).

    --instructions (PYTHONHASHSEED=0), per unit:
    case                 before        after  after/before
    add_uniform           71025        71716         1.010   code unchanged
    add_single             7710         7718         1.001   code unchanged
    merge_hot            111806       114761         1.026   per batch: 1 add, 2 merges
    merge_cold            39075        40065         1.025
    merge_absent          23618        24126         1.022   code unchanged
    page_present          57815        61050         1.056
    page_absent           33975        34656         1.020   code unchanged
    (with the collector off: merge_absent 1.027, add_uniform 1.008, merge_cold 1.027)

    CPU time, us per unit, medians of 9 alternated rounds (per-round ratio range):
    add_uniform 8.98 -> 10.20 (0.67-1.32), add_single 0.76 -> 0.70 (0.74-1.21),
    merge_hot 13.40 -> 13.86 (0.75-1.20), merge_cold 4.63 -> 4.60 (0.63-1.20),
    merge_absent 3.20 -> 3.15 (0.85-1.36), page_present 6.98 -> 6.99 (0.68-1.13),
    page_absent 4.50 -> 4.97 (0.92-1.56)

Reading: CPU time on this machine cannot tell 10 % apart (unchanged code moved by
-7 % to +13 %).  Instructions repeat exactly, but paths whose code did not change also
moved, by +0.1 to +2.7 % (another tree's layout in memory; not the collector): that is
the floor.  The join's paths are at it (a peer's delta into a held key +2.5 %, into a
key changed in the batch +2.6 % per batch) except a repair page into held keys, +5.6 %:
``records.grow`` is a call per record compared where the hand-written loops compared
inline (~300 instructions each; a page's key has three records, a delta's one).  An
equality check before the call won a page back 1,400 instructions per key and cost a
delta 350; deltas are the steady path, pages the rarer one, so it is not there.

- CPU time, in one process, alternated case by case: the model imports nothing outside
  itself, so each tree's ``zcounter/model`` is loaded as its own package
  (``before_model``, ``after_model``) and every case runs before, after, before, ...
  (the order swapped every other round), so load from other processes on a shared
  machine falls on both alike; ``time.process_time`` after ``gc.collect()``.
- Instructions (``--instructions``): each case under ``valgrind --tool=callgrind``, once
  with no work and once with K units of it, the difference divided by K (string
  hashing fixed, ``PYTHONHASHSEED=0``, so a run repeats to the instruction).  Independent
  of the machine's load, so it shows differences of a few percent that CPU time on a
  shared 2-core machine cannot (per-round ratios of CPU time for unchanged code ranged
  0.65-1.21 here); it counts instructions, not time (no cache misses).

Cases, keys of three slots (a peer's delta grows one record per key):

- ``add_uniform``: one increment per key, its value read for the reply, the flush per
  256 keys (the increment path under keys drawn uniformly), per key;
- ``add_single``: one key, batches of 100 increments and values, then the flush, per
  increment;
- ``merge_hot``: one key, per batch one increment then two peers' deltas of it
  (``merge_many``), then the flush (the receive path under a single-key load: the key is
  changed in the open batch), per batch;
- ``merge_cold``: keys held, a peer's delta per key in batches of 256, merged
  (``merge_many``) and flushed (the packed path), per key;
- ``merge_absent``: the same deltas into an empty keyspace (keys adopted), per key;
- ``page_present`` / ``page_absent``: repair pages of 1,024 keys merged (``merge_page``)
  and flushed, into a keyspace holding every key one record behind / none (a
  bootstrap), per key.

Usage: .venv/bin/python docs/measurements/join_cost.py [--instructions] BEFORE AFTER
           [ROUNDS [CASE,...]]
BEFORE and AFTER are trees holding ``zcounter/model`` (e.g. ``git archive REV zcounter |
tar -x -C DIR``).  CPU time: ROUNDS rounds (9) of 40,960 units per case (20,000 for
merge_hot, 204,800 for add_single), medians, the ratio of the medians, and the range of
the per-round ratios.  Instructions: one run per tree and case (they repeat exactly),
4,096 units, per unit.
"""
import gc, importlib.util, os, re, statistics, subprocess, sys, time
from types import ModuleType
from typing import Any, Callable

SLOTS = ["1.aaaaaaaaaaaa", "2.bbbbbbbbbbbb", "3.cccccccccccc"]
FULL = {s: (5, 1, 0, 0) for s in SLOTS}
BEHIND = {**FULL, SLOTS[2]: (4, 1, 0, 0)}
PAGE = 1024
BATCH = 256


def load(tree: str, name: str) -> ModuleType:
    path = os.path.join(os.path.abspath(tree), "zcounter", "model")
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(path, "__init__.py"), submodule_search_locations=[path])
    assert spec and spec.loader
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)
    for sub in ("keyspace", "page"):
        importlib.import_module(f"{name}.{sub}")
    return package


def held(model: Any, keys: list[str], state: dict = FULL) -> Any:
    ks = model.keyspace.Keyspace()
    ks.merge_many({k: state for k in keys})
    ks.flush()
    return ks


# Each case: setup(model, k) builds everything k units need; work(arg, n) does n <= k
# units (n a multiple of the batch or page size).

def setup_keys(model: Any, k: int, state: dict | None = FULL) -> tuple[Any, list[str]]:
    keys = [f"k{i}" for i in range(k)]
    return (held(model, keys, state) if state else model.keyspace.Keyspace()), keys


def add_uniform(arg: tuple[Any, list[str]], n: int) -> None:
    ks, keys = arg
    me = ks.slots.index[SLOTS[0]]
    for j in range(0, n, BATCH):
        for key in keys[j:j + BATCH]:
            ks.add(key, me, 1)
            ks.value(key)
        ks.flush()


def add_single(ks: Any, n: int) -> None:
    me = ks.slots.index[SLOTS[0]]
    for _ in range(n // 100):
        for _ in range(100):
            ks.add("k0", me, 1)
            ks.value("k0")
        ks.flush()


def setup_hot(model: Any, k: int) -> tuple[Any, list[dict], list[dict]]:
    return (held(model, ["k0"]), [{"k0": {SLOTS[1]: (6 + b, 1, 0, 0)}} for b in range(k)],
            [{"k0": {SLOTS[2]: (6 + b, 1, 0, 0)}} for b in range(k)])


def merge_hot(arg: tuple[Any, list[dict], list[dict]], n: int) -> None:
    ks, first, second = arg
    me = ks.slots.index[SLOTS[0]]
    for b in range(n):
        ks.add("k0", me, 1)
        ks.merge_many(first[b])
        ks.merge_many(second[b])
        ks.flush()


def setup_deltas(model: Any, k: int, state: dict | None) -> tuple[Any, list[dict]]:
    ks, keys = setup_keys(model, k, state)
    return ks, [{key: {SLOTS[1]: (6, 1, 0, 0)} for key in keys[j:j + BATCH]}
                for j in range(0, k, BATCH)]


def merge_deltas(arg: tuple[Any, list[dict]], n: int) -> None:
    ks, batches = arg
    for batch in batches[:n // BATCH]:
        ks.merge_many(batch)
        ks.flush()


def setup_pages(model: Any, k: int, state: dict | None) -> tuple[Any, list[Any]]:
    source, keys = setup_keys(model, k)
    ks = held(model, keys, state) if state else model.keyspace.Keyspace()
    return ks, [source.page(keys[j:j + PAGE]) for j in range(0, k, PAGE)]


def merge_pages(arg: tuple[Any, list[Any]], n: int) -> None:
    ks, pages = arg
    for page in pages[:n // PAGE]:
        ks.merge_page(page)
        ks.flush()


CASES: dict[str, tuple[Callable[[Any, int], Any], Callable[[Any, int], None], int]] = {
    "add_uniform": (setup_keys, add_uniform, 40 * PAGE),
    "add_single": (lambda m, k: held(m, ["k0"]), add_single, 200 * PAGE),
    "merge_hot": (setup_hot, merge_hot, 20_000),
    "merge_cold": (lambda m, k: setup_deltas(m, k, FULL), merge_deltas, 40 * PAGE),
    "merge_absent": (lambda m, k: setup_deltas(m, k, None), merge_deltas, 40 * PAGE),
    "page_present": (lambda m, k: setup_pages(m, k, BEHIND), merge_pages, 40 * PAGE),
    "page_absent": (lambda m, k: setup_pages(m, k, None), merge_pages, 40 * PAGE),
}


def cpu_us(model: Any, case: str) -> float:
    setup, work, k = CASES[case]
    arg = setup(model, k)
    gc.collect()
    t = time.process_time()
    work(arg, k)
    return (time.process_time() - t) / k * 1e6


def cpu(before: ModuleType, after: ModuleType, rounds: int, only: list[str]) -> None:
    runs: dict[str, dict[str, list[float]]] = {c: {"before": [], "after": []} for c in only}
    for r in range(rounds):
        for case in only:
            order = [("before", before), ("after", after)]
            for name, model in (order if r % 2 == 0 else order[::-1]):
                runs[case][name].append(cpu_us(model, case))
        print(f"round {r}: " + "  ".join(
            f"{c} {runs[c]['before'][-1]:.2f}/{runs[c]['after'][-1]:.2f}" for c in runs),
            flush=True)
    print(f"{'case':14} {'before us':>10} {'after us':>10} {'after/before':>13} "
          f"{'per-round ratios':>18}   (CPU time, medians of {rounds} rounds)")
    for case, got in runs.items():
        b, a = statistics.median(got["before"]), statistics.median(got["after"])
        ratios = [x / y for x, y in zip(got["after"], got["before"])]
        print(f"{case:14} {b:10.2f} {a:10.2f} {a / b:13.3f} "
              f"{min(ratios):8.2f} - {max(ratios):.2f}")


def instructions(trees: dict[str, str], only: list[str], k: int = 4 * PAGE) -> None:
    def count(tree: str, case: str, n: int) -> int:
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
             __file__, "--child", tree, case, str(k), str(n)],
            check=True, capture_output=True, text=True,
            env={**os.environ, "PYTHONHASHSEED": "0"}).stderr  # the same dict layouts
        return int(re.search(r"Collected : (\d+)", out).group(1))  # type: ignore[union-attr]

    print(f"{'case':14} {'before':>12} {'after':>12} {'after/before':>13}   "
          f"(instructions per unit, valgrind, {k} units)")
    for case in only:
        per = {name: (count(tree, case, k) - count(tree, case, 0)) / k
               for name, tree in trees.items()}
        print(f"{case:14} {per['before']:12.0f} {per['after']:12.0f} "
              f"{per['after'] / per['before']:13.3f}", flush=True)


def main() -> None:
    args = sys.argv[1:]
    if args[0] == "--child":  # tree case k n: set up k units, do n
        tree, case, k, n = args[1], args[2], int(args[3]), int(args[4])
        setup, work, _ = CASES[case]
        work(setup(load(tree, "model"), k), n)
        return
    counting = args[0] == "--instructions"
    if counting:
        args = args[1:]
    only = args[3].split(",") if len(args) > 3 else list(CASES)
    if counting:
        instructions({"before": args[0], "after": args[1]}, only)
    else:
        cpu(load(args[0], "before_model"), load(args[1], "after_model"),
            int(args[2]) if len(args) > 2 else 9, only)


if __name__ == "__main__":
    main()
