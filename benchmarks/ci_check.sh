#!/usr/bin/env bash
# Check the asv suite and run every benchmark once in the current Python environment.
#
# Usage: benchmarks/ci_check.sh [extra `asv run` options, e.g. -b Forward]
#
# Needs nbnorm installed in the environment of `python` (pip install .) and asv,
# virtualenv in it (pip install .[bench]).  Fails (non-zero exit) when the suite
# cannot be imported, when `asv check` finds a problem, or when any benchmark
# raises (asv run exits 2 then); skipped combinations (no GPU, peer library not
# installed) do not fail it.  Nothing is written to .asv/results (--dry-run).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python}"
asv() { "$PYTHON" -m asv "$@"; }

start=$SECONDS
# Run from outside the checkout so that the installed nbnorm is what is imported.
(cd / && "$PYTHON" -c "import nbnorm, sys; print('nbnorm', nbnorm.__version__, 'from', nbnorm.__file__)") || {
    echo "ci_check: nbnorm is not importable by $PYTHON: run 'pip install .' first" >&2
    exit 1
}

asv machine --yes
asv check --python=same

# CUDA contexts do not survive fork(): spawn a fresh process per benchmark on GPU hosts.
launch=()
if compgen -G "/dev/nvidia[0-9]*" >/dev/null && [[ "${NBNORM_BENCH_CUDA:-1}" != 0 ]]; then
    launch=(--launch-method spawn)
fi

asv run --python=same --quick --show-stderr --dry-run --durations 10 "${launch[@]}" "$@"

echo "ci_check: all benchmarks passed in $((SECONDS - start)) s"
