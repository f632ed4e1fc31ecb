# Sourced by scripts/lock-cuda.sh and scripts/check-cuda-lock.sh: a throwaway venv with a
# current pip (one that reads wheel metadata from the index instead of downloading the multi-GB
# CUDA wheels), and `lock_pip`, pip without this machine's local constraints (a host cap on torch
# must not shape a lock made for the images).
lockenv="${LOCKENV:-.build/lockenv}"
if [ ! -x "$lockenv/bin/python" ]; then
    python3 -m venv "$lockenv"
    "$lockenv/bin/python" -m pip install --quiet --upgrade pip 2>&1 \
        | grep -v "is ignored: it is neither a file nor a directory" || true
fi
lockpy="$lockenv/bin/python"
lock_pip() {
    local rc=0
    PIP_CONSTRAINT="" PIP_DISABLE_PIP_VERSION_CHECK=1 "$lockpy" -m pip "$@" >"$lockenv/pip.log" 2>&1 \
        || rc=$?
    grep -v "is ignored: it is neither a file nor a directory" "$lockenv/pip.log" || true
    return "$rc"
}
