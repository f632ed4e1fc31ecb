#!/usr/bin/env bash
# Start a Docker engine in the background if none answers (machines without systemd,
# e.g. CI containers). Never passes --bridge=none: that deletes the host's docker0 bridge.
# Usage: scripts/start-dockerd.sh            (log: ${DOCKERD_LOG:-/tmp/dockerd.log})
set -euo pipefail

export PATH="/usr/bin:/usr/sbin:$PATH"   # the Debian docker CLI, not a buildx-less newer one
log="${DOCKERD_LOG:-/tmp/dockerd.log}"

if docker info >/dev/null 2>&1; then
    echo "start-dockerd: a Docker engine is already running"
    exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
    echo "start-dockerd: dockerd not found; install it (apt-get install docker.io)" >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "start-dockerd: no engine answers and starting one needs root" >&2
    exit 1
fi

echo "start-dockerd: starting dockerd in the background (log: $log)"
nohup dockerd >"$log" 2>&1 &
echo $! >/tmp/dockerd.pid
for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then
        echo "start-dockerd: engine ready (pid $(cat /tmp/dockerd.pid))"
        exit 0
    fi
    sleep 1
done
echo "start-dockerd: dockerd did not answer within 60 s; last log lines:" >&2
tail -n 30 "$log" >&2
exit 1
