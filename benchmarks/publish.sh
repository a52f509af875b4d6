#!/usr/bin/env bash
# Publish the asv dashboard so that it opens anywhere, also without internet.
#
# Usage: benchmarks/publish.sh [extra `asv publish` options]
#
# `asv publish` writes .asv/html, whose index.html loads jQuery, flot, stupidtable,
# blueimp-md5 and Bootstrap from public CDNs; benchmarks/dashboard/offline.py then
# points those tags at pinned copies vendored in benchmarks/dashboard/vendor (npm
# packages with their licences, copied to .asv/html/vendor) with matching integrity
# hashes.  View with `python -m asv preview` (the dashboard reads its data over HTTP).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python}"
"$PYTHON" -m asv publish "$@"
"$PYTHON" -m benchmarks.dashboard.offline .asv/html
