"""``zcounter-bench`` (``bin/bench``): the command line."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

import click
import orjson
import zmq

from .._version import __version__
from .floor import commit_costs
from .keys import DISTRIBUTIONS, ZIPF_EXPONENT, KeySpec
from .progress import Progress
from .ratelimit import RateLimitOptions, render_ratelimit, run_ratelimit
from .report import check_targets, default_rows, render, render_targets, scale_rows, to_json
from .resp import render_resp, run_resp
from .scale import ScaleOptions, ScaleSuite
from .scrape import render_scrape_cost, run_scrape_cost
from .secure import render_secure, run_secure
from .suite import DefaultSuite, Options

#: --quick: requests per throughput run, seconds per run, per latency run, soak count.
QUICK = (5000, 5.0, 1.0, 20_000)
SCALE_KEYS = 1_000_000
QUICK_SCALE_KEYS = 20_000


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _side_sections(resp: bool, scrape_cost: bool, ops: int, seconds: float, keys: KeySpec,
                   quick: bool, json_path: str | None, data_root: Path | None,
                   no_progress: bool, secure: bool = False, latency_seconds: float = 5.0,
                   poll_interval_s: float = 0.0005,
                   ratelimit: RateLimitOptions | None = None) -> None:
    """``--resp`` / ``--scrape-cost`` (issue 12), ``--secure`` (issue 10) and
    ``--ratelimit`` (issue 21): sections of their own, run alone."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    if data_root is not None:
        data_root.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="zcounter-bench-", dir=data_root))
    progress = Progress(enabled=not no_progress and sys.stderr.isatty())
    res: dict[str, Any] = {"version": __version__, "machine": {
        "cpus": os.cpu_count(), "load_average": os.getloadavg(),
        "python": sys.version.split()[0]}}
    texts: list[str] = []
    try:
        if resp:
            res["resp"] = run_resp(root, ops, seconds, keys, progress)
            texts.append(render_resp(res["resp"]))
        if scrape_cost:
            res["scrape_cost"] = run_scrape_cost(
                root, min(ops, 20_000), seconds, 1 if quick else 5, 16, 0.1, progress)
            texts.append(render_scrape_cost(res["scrape_cost"]))
        if secure:
            res["secure"] = run_secure(root, ops, seconds, latency_seconds,
                                       1 if quick else 3, keys, poll_interval_s, progress)
            texts.append(render_secure(res["secure"]))
        if ratelimit is not None:
            run_ratelimit(ratelimit, root, progress, res)
            texts.append(render_ratelimit(res["ratelimit"]))
    except KeyboardInterrupt:
        progress.close()
        click.echo("[bench] interrupted; everything started was stopped", err=True)
        sys.exit(130)
    finally:
        progress.close()
        shutil.rmtree(root, ignore_errors=True)
    res["machine"]["load_average_end"] = os.getloadavg()
    res["targets"] = check_targets(res)
    if res["targets"]:
        texts.append("\n".join(render_targets(res["targets"])))
    if json_path == "-":
        click.echo(to_json(res).decode())
        return
    if json_path:
        Path(json_path).write_bytes(to_json(res) + b"\n")
    click.echo("\n\n".join(texts))
    click.echo(f"(load average {res['machine']['load_average'][0]:.1f} at start, "
               f"{res['machine']['load_average_end'][0]:.1f} at end, "
               f"{res['machine']['cpus']} CPUs)")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="zcounter-bench",
                      message="%(prog)s %(version)s")
@click.option("--ops", type=click.IntRange(min=100), default=100_000, show_default=True,
              help="Requests per throughput run (each run also stops after --seconds).")
@click.option("--seconds", type=click.FloatRange(min=0.5), default=15.0, show_default=True,
              help="Time limit of each throughput run.")
@click.option("--latency-seconds", type=click.FloatRange(min=0.5), default=5.0,
              show_default=True, help="Duration of each fixed-load latency run.")
@click.option("--count", type=click.IntRange(min=1000), default=1_000_000, show_default=True,
              help="Increments of the memory soak (spread over the three nodes).")
@click.option("--poll-interval-ms", type=click.FloatRange(min=0.0), default=0.5,
              show_default=True,
              help="Convergence observers ask each other node at most this often.")
@click.option("--keys", "n_keys", type=click.IntRange(min=1), default=1, show_default=True,
              help="Requests of the default sections name keys k0..k{N-1}.")
@click.option("--dist", type=click.Choice(DISTRIBUTIONS), default="uniform", show_default=True,
              help=f"How each request's key is drawn (zipf: exponent {ZIPF_EXPONENT}, "
                   "precomputed).")
@click.option("--seed", type=int, default=1, show_default=True,
              help="Seed of every key draw (printed in --json; a run can be repeated).")
@click.option("--scale", is_flag=True,
              help="Also run the scale section (a million keys: memory, disk, heartbeats, "
                   "a cut and a wiped node, throughput and reads). Took 6-7 minutes on this "
                   "2-core machine: ~3 filling 3,000,000 slots, 1 filling the 1-key "
                   "cluster, 0.3 for the wiped node.")
@click.option("--scale-only", is_flag=True, help="Run only the scale section.")
@click.option("--scale-keys", type=click.IntRange(min=100), default=None,
              help=f"Keys of the scale section [default: {SCALE_KEYS:,}; "
                   f"{QUICK_SCALE_KEYS:,} with --quick].")
@click.option("--scale-rounds", type=click.IntRange(min=1), default=None,
              help="Interleaved rounds of the scale section's throughput and read runs "
                   "(each figure is the median of its rounds, each ratio the median of the "
                   "ratios within a round) [default: 5; 1 with --quick].")
@click.option("--quick", is_flag=True,
              help="A short run to try things out: --ops 5000 --seconds 5 "
                   "--latency-seconds 1 --count 20000, and a small scale section.")
@click.option("--skip-baselines", is_flag=True, help="Measure zcounter only.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, allow_dash=True),
              help="Also write every figure and target as JSON to this file ('-': stdout, "
                   "instead of the table).")
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path),
              help="Where the temporary clusters and Redis data go (default: the system temp "
                   "dir). fsync cost depends on this file system.")
@click.option("--keep-data", is_flag=True,
              help="Keep the clusters' data directories and node logs (printed at the end).")
@click.option("--no-progress", is_flag=True, help="No progress display or notes on stderr.")
@click.option("--from-json", "from_json", type=click.Path(exists=True, dir_okay=False),
              help="Run nothing: print the tables and targets of a saved --json file again "
                   "(with this version's targets).")
@click.option("--resp", "resp_only", is_flag=True,
              help="Run only the RESP section: zcounter's Redis-protocol door against Redis "
                   "(appendfsync always and everysec) and zcounter's native protocol, same "
                   "client (redis-py), windows 1, 16 and 256, as ratios.")
@click.option("--scrape-cost", is_flag=True,
              help="Run only the metrics-cost measurement: a cluster without metrics, one "
                   "with metrics unscraped, and scraped every 100 ms, interleaved rounds.")
@click.option("--secure", is_flag=True,
              help="Run only the CurveZMQ section: a cluster in none mode and one in curve "
                   "mode, started together; throughput at windows 1, 16 and 256, latency and "
                   "convergence at 1000/s and 5000/s, node CPU per increment, in 3 "
                   "interleaved rounds (1 with --quick), each curve figure as a ratio to "
                   "none; target: curve >= 0.8x none at window 256.")
@click.option("--ratelimit", is_flag=True,
              help="Run only the rate-limit section (issue 21): each second 2,000 new keys, "
                   "each incremented 5 times (ttl 2 s on the first), against a 3-node "
                   "cluster for --minutes; every node's RSS, data directory, held and "
                   "live keys, collection lag; then paired rounds of plain and ttl "
                   "increments.")
@click.option("--minutes", type=click.FloatRange(min=0.5), default=None,
              help="Length of the --ratelimit load [default: 10; 2 with --quick].")
def main(ops: int, seconds: float, latency_seconds: float, count: int, poll_interval_ms: float,
         n_keys: int, dist: str, seed: int, scale: bool, scale_only: bool,
         scale_keys: int | None, scale_rounds: int | None, quick: bool, skip_baselines: bool,
         json_path: str | None, data_root: Path | None, keep_data: bool, no_progress: bool,
         from_json: str | None, resp_only: bool = False, scrape_cost: bool = False,
         secure: bool = False, ratelimit: bool = False,
         minutes: float | None = None) -> None:
    """Benchmark fresh local three-node clusters against an echo ceiling and Redis.

    Every system is started first and the measurements are interleaved, so a noisy
    machine hurts all of them alike; each zcounter figure is printed beside the
    baselines' and as a ratio to them, and every target of issues 5 and 9 says met or
    missed. Everything runs on 127.0.0.1 and is torn down at the end (also on Ctrl-C).
    """
    if from_json is not None:
        _render_saved(Path(from_json), json_path)
        return
    if quick:
        ops, seconds, latency_seconds, count = QUICK
    if resp_only or scrape_cost or secure or ratelimit:
        rl = None
        if ratelimit:
            rl = RateLimitOptions(seconds=int((minutes or (2 if quick else 10)) * 60),
                                  round_ops=5000 if quick else 20_000)
        _side_sections(resp_only, scrape_cost, ops, seconds, KeySpec(n_keys, dist, seed),
                       quick, json_path, data_root, no_progress, secure, latency_seconds,
                       poll_interval_ms / 1000.0, rl)
        return
    opts = Options(ops, seconds, latency_seconds, count, poll_interval_ms / 1000.0,
                   KeySpec(n_keys, dist, seed), baselines=not skip_baselines)
    n_scale = scale_keys or (QUICK_SCALE_KEYS if quick else SCALE_KEYS)
    scale_opts = ScaleOptions(
        keys=n_scale, seed=seed, rounds=scale_rounds or (1 if quick else 5),
        ops=5000 if quick else 50_000, seconds=seconds, read_ops=1000 if quick else 5000,
        heartbeat_seconds=2.0 if quick else 5.0, fill_limit_s=3600.0, cut_limit_s=300.0,
        restart_limit_s=600.0)
    run_default = not scale_only
    run_scale = scale or scale_only
    signal.signal(signal.SIGTERM, _raise_interrupt)
    if data_root is not None:
        data_root.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="zcounter-bench-", dir=data_root))
    progress = Progress(enabled=not no_progress and sys.stderr.isatty(), notes=not no_progress)
    res: dict[str, Any] = {
        "version": __version__,
        "options": {**opts.to_json(), "quick": quick,
                    "sections": [s for s, on in (("default", run_default),
                                                 ("scale", run_scale)) if on]},
        "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg(),
                    "python": sys.version.split()[0], "pyzmq": zmq.__version__,
                    "libzmq": zmq.zmq_version(), "data_root": str(root)},
        "systems": {}, "skipped": [], "zcounter": {}}
    if run_scale:
        res["options"]["scale"] = scale_opts.to_json()
    started = time.perf_counter()
    try:
        try:
            res["commit_costs"] = commit_costs(root)
        except Exception as exc:  # the floor is context: never lose the run over it
            res["skipped"].append(f"commit floor: {type(exc).__name__}: {exc}")
        if run_default:
            DefaultSuite(opts, root, progress, res).run()
        if run_scale:
            ScaleSuite(scale_opts, root, progress, res).run()
    except KeyboardInterrupt:
        progress.close()
        click.echo("[bench] interrupted; everything started was stopped", err=True)
        sys.exit(130)
    finally:
        progress.close()
        if not keep_data:
            shutil.rmtree(root, ignore_errors=True)
    res["elapsed_s"] = time.perf_counter() - started
    res["machine"]["load_average_end"] = os.getloadavg()
    _report(res, json_path)
    if keep_data:
        click.echo(f"(data directories and node logs kept in {root})")


def _report(res: dict[str, Any], json_path: str | None) -> None:
    """Rows and targets from the figures; then the table, the JSON, or both."""
    if res.get("zcounter"):
        res["rows"] = default_rows(res)
    if "scale" in res:
        res["scale_rows"] = scale_rows(res)
    res["targets"] = check_targets(res)
    if json_path == "-":
        click.echo(to_json(res).decode())
        return
    if json_path:
        Path(json_path).write_bytes(to_json(res) + b"\n")
    click.echo(render(res))
    click.echo(f"\n(run took {res['elapsed_s']:.0f} s)")


def _render_saved(path: Path, json_path: str | None) -> None:
    """``--from-json``: the report of a saved run, with this version's rows and targets."""
    try:
        res = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise click.ClickException(f"{path}: not JSON ({exc})") from None
    if not isinstance(res, dict) or "machine" not in res or "version" not in res:
        raise click.ClickException(f"{path}: not a --json file of zcounter-bench")
    _report(res, json_path)
