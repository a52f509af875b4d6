#!/usr/bin/env bash
# Benchmark a range of commits and publish the asv dashboard in one command.
#
# Usage: benchmarks/history.sh [RANGE] [extra `asv run` options]
#   RANGE  a git range as `asv run` takes it (default: main = every commit of main),
#          e.g. HEAD~10..HEAD for the last 10 commits, v0.1..main, or abc123^! for one.
#   extra  passed to `asv run`, e.g. `-b Forward` to run a subset, `--quick`, or
#          `--skip-existing-commits` to run only commits without results yet.
#
# asv builds a wheel of each commit (build_command in asv.conf.json), installs it into
# a virtualenv under .asv/env and runs the benchmark suite of this checkout against it
# (commits that predate benchmarks/ are measured too).  Results go to .asv/results,
# the dashboard to .asv/html; view it with `asv preview`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python}"
asv() { "$PYTHON" -m asv "$@"; }

range="${1:-main}"
shift $(( $# > 0 ? 1 : 0 ))

launch=()
if compgen -G "/dev/nvidia[0-9]*" >/dev/null && [[ "${NBNORM_BENCH_CUDA:-1}" != 0 ]]; then
    launch=(--launch-method spawn)   # CUDA contexts do not survive fork()
fi

start=$SECONDS
asv machine --yes
# RANGE goes to `git rev-list --first-parent`: a branch name means all its history.
# A benchmark that fails on an old commit (a bug fixed since) must not stop the
# dashboard from being published: note the status, publish, report it.
status=0
asv run --show-stderr "${launch[@]}" "$@" "$range" || status=$?
bash benchmarks/publish.sh     # asv publish + local copies of its scripts (opens offline)
echo "history: $range benchmarked and published in $((SECONDS - start)) s to .asv/html;" \
     "view with: $PYTHON -m asv preview"
if (( status != 0 )); then
    echo "history: some benchmarks failed on some commits (asv run exit status $status);" \
         "they have no point for those commits" >&2
fi
