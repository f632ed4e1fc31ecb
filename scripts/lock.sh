#!/usr/bin/env bash
# Resolve requirements/$FLAVOR.in into the lock requirements/$FLAVOR.txt: every package of the
# dependency closure pinned with ==, for CPython 3.11 on Linux x86_64 (the images' interpreter),
# less the packages the .in file's "# leave-out:" line names (the lock is installed --no-deps).
# Resolution only (`pip install --dry-run --report`): pip reads the wheels' metadata and downloads
# little more than deepspeed's sdist; nothing is installed.
# Usage: scripts/lock.sh [cpu] [cuda]     (default: both; needs PyPI; about a minute each)
# Then scripts/check-lock.sh, which .ci/run runs.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lockenv.sh
source scripts/lockenv.sh

report="$(mktemp)"
trap 'rm -f "$report"' EXIT
for flavor in ${@:-cpu cuda}; do
    lock_resolve "$flavor" "requirements/$flavor.in" "$report"
    "$lockpy" scripts/lockfile.py write "$report" "requirements/$flavor.in" "requirements/$flavor.txt"
done
