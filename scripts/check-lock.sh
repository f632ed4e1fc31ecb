#!/usr/bin/env bash
# CI check of the locks without downloading them (a few MB instead of GBs): resolve each
# requirements/$FLAVOR.txt with its dependencies (`pip install --dry-run`) and require that the
# resolution is exactly the lock (less the packages its header leaves out): every pin exists for
# CPython 3.11 / Linux x86_64, the pins are mutually compatible, nothing needed is missing.
# Usage: scripts/check-lock.sh [cpu] [cuda]   (default: both; needs PyPI; under a minute each)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lockenv.sh
source scripts/lockenv.sh

report="$(mktemp)"
trap 'rm -f "$report"' EXIT
for flavor in ${@:-cpu cuda}; do
    t0=$SECONDS
    if ! lock_resolve "$flavor" "requirements/$flavor.txt" "$report"; then
        echo "check-lock: requirements/$flavor.txt does not resolve (see pip's message above)" >&2
        exit 1
    fi
    "$lockpy" scripts/lockfile.py check "$report" "requirements/$flavor.txt" "$((SECONDS - t0))"
done
