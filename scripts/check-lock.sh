#!/usr/bin/env bash
# CI check of the locks without downloading them (a few MB instead of GBs): resolve each
# requirements/$FLAVOR.txt with its dependencies (`pip install --dry-run`) and require that the
# resolution is exactly the lock (less the packages its header leaves out): every pin exists for
# CPython 3.11 / Linux x86_64, the pins are mutually compatible, nothing needed is missing.
# A lock's "# no-deps:" packages (the verl flavour's veRL) are resolved apart, without their
# declared dependencies, and every pin they declare a range for must lie in it.
# Usage: scripts/check-lock.sh [cpu] [cuda] [verl]   (default: all; needs PyPI; under a minute each)
set -euo pipefail
# shellcheck source=scripts/usage.sh
source "$(dirname "$0")/usage.sh"
usage "$@"
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lockenv.sh
source scripts/lockenv.sh

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for flavor in ${@:-cpu cuda verl}; do
    t0=$SECONDS
    lock="requirements/$flavor.txt"
    "$lockpy" scripts/lockfile.py split "$lock" "$work/deps.txt" "$work/bare.txt"
    bare=()
    if ! lock_resolve "$flavor" "$work/deps.txt" "$work/report.json" || { [ -s "$work/bare.txt" ] \
        && ! lock_pip "$flavor" install --dry-run --ignore-installed --quiet --no-deps \
            --report "$work/bare.json" -r "$work/bare.txt"; }; then
        echo "check-lock: $lock does not resolve (see pip's message above)" >&2
        exit 1
    fi
    [ -s "$work/bare.txt" ] && bare=("$work/bare.json")
    "$lockpy" scripts/lockfile.py check "$work/report.json" "$lock" "$((SECONDS - t0))" "${bare[@]}"
done
