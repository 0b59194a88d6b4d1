#!/bin/bash
# Interleaved bench rounds of several checkouts of zcounter, for before/after claims on
# this shared machine (one absolute time means little; medians of interleaved rounds do).
#
#   docs/measurements/bench_versions.sh OUTDIR ROUNDS CHECKOUT...
#   python docs/measurements/bench_versions_summary.py OUTDIR
#
# Each CHECKOUT is a directory with its own .venv (same interpreter for all: a venv of
# another Python version is a different benchmark), e.g. made by
#   git worktree add /work/wt/base f094339 && cd /work/wt/base &&
#   python3.13 -m venv .venv && PIP_CONSTRAINT=requirements/ci.txt .venv/bin/pip install -e '.[bench]'
# Round r runs every checkout once, in the order given, with the same options:
# the quick default sections, 30,000 requests or 10 s per throughput run, 3 s per
# latency run, zcounter only. Results: OUTDIR/<basename of CHECKOUT>-<r>.json.
set -euo pipefail
out=$1; rounds=$2; shift 2
mkdir -p "$out"
for r in $(seq 1 "$rounds"); do
  for dir in "$@"; do
    name=$(basename "$dir")
    (cd "$dir" && .venv/bin/python -m zcounter.bench --quick --ops 30000 --seconds 10 \
      --latency-seconds 3 --skip-baselines --no-progress --json "$out/$name-$r.json" \
      > "$out/$name-$r.log" 2>&1)
  done
done
