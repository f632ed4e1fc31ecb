# Sourced by scripts/lock.sh and scripts/check-lock.sh: a throwaway venv with a current pip (one
# that reads wheel metadata from the index instead of downloading multi-GB wheels), and
# `lock_pip FLAVOR ...`, pip without this machine's local constraints (a host cap on torch must
# not shape a lock made for the images).
# The CUDA flavour resolves against PyPI alone (--isolated: no local wheel folders or extra
# indexes, whose torch 2.13.0+cpu would otherwise satisfy the CUDA lock's torch==2.13.0). The CPU
# flavour needs the "+cpu" torch: on our machines it lies in the configured local wheel folder;
# elsewhere pass LOCK_PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu".
lockenv="${LOCKENV:-.build/lockenv}"
if [ ! -x "$lockenv/bin/python" ]; then
    python3 -m venv "$lockenv"
    "$lockenv/bin/python" -m pip install --quiet --upgrade pip 2>&1 \
        | grep -v "is ignored: it is neither a file nor a directory" || true
fi
lockpy="$lockenv/bin/python"
lock_pip() {
    local flavor="$1" rc=0 mode=()
    shift
    if [ "$flavor" = cuda ]; then
        mode=(--isolated --cert "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}")
    fi
    # shellcheck disable=SC2086  # LOCK_PIP_ARGS is a list of pip options
    PIP_CONSTRAINT="" PIP_DISABLE_PIP_VERSION_CHECK=1 "$lockpy" -m pip "${mode[@]}" "$@" \
        ${LOCK_PIP_ARGS:-} >"$lockenv/pip.log" 2>&1 || rc=$?
    grep -v "is ignored: it is neither a file nor a directory" "$lockenv/pip.log" || true
    return "$rc"
}
# Resolve (never install) a requirements file for CPython 3.11 / Linux x86_64 into a pip report.
lock_resolve() {  # FLAVOR REQUIREMENTS REPORT
    lock_pip "$1" install --dry-run --ignore-installed --quiet --report "$3" -r "$2"
}
