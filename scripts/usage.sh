# Sourced first thing by the scripts that can run for minutes or hours (benchmarks, image
# builds, locks, the smoke run): `usage "$@"` prints the script's header comment and exits 0
# when an argument is -h or --help, before any work starts (a user asking for help must not
# start a three-hour sweep).
usage() {
    local arg
    for arg in "$@"; do
        if [ "$arg" = -h ] || [ "$arg" = --help ]; then
            # the comment lines between the shebang and `set -euo pipefail`, without "# "
            sed -n '2,/^set -/{/^#/s/^# \{0,1\}//p}' "$0"
            exit 0
        fi
    done
}
