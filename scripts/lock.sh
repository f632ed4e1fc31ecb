#!/usr/bin/env bash
# Resolve requirements/$FLAVOR.in into the lock requirements/$FLAVOR.txt: every package of the
# dependency closure pinned with ==, for CPython 3.11 on Linux x86_64 (the images' interpreter),
# less the packages the .in file's "# leave-out:" line names (the lock is installed --no-deps).
# Resolution only (`pip install --dry-run --report`): pip reads the wheels' metadata and downloads
# little more than deepspeed's sdist; nothing is installed.
# Packages on the .in file's "# no-deps:" line (the verl flavour's veRL) are resolved apart,
# without their declared dependencies; the rest with its full closure.
# Usage: scripts/lock.sh [cpu] [cuda] [verl]   (default: all; needs PyPI; about a minute each)
# Then scripts/check-lock.sh, which .ci/run runs.
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
    "$lockpy" scripts/lockfile.py split "requirements/$flavor.in" "$work/deps.txt" "$work/bare.txt"
    lock_resolve "$flavor" "$work/deps.txt" "$work/report.json"
    bare=()
    if [ -s "$work/bare.txt" ]; then
        lock_pip "$flavor" install --dry-run --ignore-installed --quiet --no-deps \
            --report "$work/bare.json" -r "$work/bare.txt"
        bare=("$work/bare.json")
    fi
    "$lockpy" scripts/lockfile.py write "$work/report.json" "requirements/$flavor.in" \
        "requirements/$flavor.txt" "${bare[@]}"
done
