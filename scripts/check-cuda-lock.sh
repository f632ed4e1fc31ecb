#!/usr/bin/env bash
# CI check of the CUDA lock without downloading it (a few MB instead of ~7 GB): resolve
# requirements/cuda.txt on PyPI with its dependencies (`pip install --dry-run`) and require that
# the resolution is exactly the lock: every pin exists for CPython 3.11 / Linux x86_64, the pins
# are mutually compatible, and nothing the pinned packages need is missing from the lock.
# Usage: scripts/check-cuda-lock.sh    (needs PyPI; about a minute)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lockenv.sh
source scripts/lockenv.sh

report="$(mktemp)"
trap 'rm -f "$report"' EXIT
t0=$SECONDS
if ! lock_pip install --dry-run --ignore-installed --quiet --report "$report" \
        -r requirements/cuda.txt; then
    echo "check-cuda-lock: requirements/cuda.txt does not resolve (see pip's message above)" >&2
    exit 1
fi
"$lockpy" - "$report" requirements/cuda.txt "$((SECONDS - t0))" <<'PY'
import json
import sys

report, lock, seconds = sys.argv[1], sys.argv[2], sys.argv[3]
norm = lambda name: name.lower().replace("_", "-")  # noqa: E731
resolved = {
    norm(i["metadata"]["name"]): i["metadata"]["version"] for i in json.load(open(report))["install"]
}
pinned = {}
for line in open(lock):
    line = line.split("#")[0].strip()
    if line:
        name, _, version = line.partition("==")
        pinned[norm(name)] = version
extra = sorted(set(resolved) - set(pinned))
if extra or resolved != {k: v for k, v in pinned.items() if k in resolved}:
    print(f"check-cuda-lock: {lock} is incomplete: pip also needs {extra}; "
          "run scripts/lock-cuda.sh", file=sys.stderr)
    sys.exit(1)
print(f"check-cuda-lock: {lock} resolves as pinned ({len(pinned)} packages, {seconds} s)")
PY
