#!/usr/bin/env bash
# Make sure a Docker engine with compose answers, so `make demo` / `make smoke` need no other
# step on a fresh machine:
#   1. docker, docker-compose (or the compose v2 plugin) and debootstrap (for the registry-free
#      Debian base image) installed - on Debian as root they are installed with apt, with a line
#      saying so; anywhere else we stop with the one command to run;
#   2. an engine answering - started as a plain background dockerd where none runs (machines
#      without systemd, e.g. CI containers). Never with --bridge=none: that deletes docker0.
# Usage: scripts/ensure-docker.sh       (dockerd log: ${DOCKERD_LOG:-/tmp/dockerd.log})
#   PROACTIVE_NO_INSTALL=1   never install packages; say what to install instead
set -euo pipefail
# shellcheck source=scripts/usage.sh
source "$(dirname "$0")/usage.sh"
usage "$@"

export PATH="/usr/bin:/usr/sbin:$PATH"   # the Debian docker CLI, not a buildx-less newer one
log="${DOCKERD_LOG:-/tmp/dockerd.log}"
packages=(docker.io docker-compose debootstrap)

have_compose() { docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1; }

missing=()
command -v dockerd >/dev/null 2>&1 || docker info >/dev/null 2>&1 || missing+=(docker.io)
have_compose || missing+=(docker-compose)
# debootstrap builds the base OS image without a registry; a machine that already has the image
# (or uses DEBIAN_IMAGE from a registry) does not need it.
if ! command -v debootstrap >/dev/null 2>&1 && [ -z "${DEBIAN_IMAGE:-}" ] \
    && ! docker image inspect local/debian:bookworm >/dev/null 2>&1; then
    missing+=(debootstrap)
fi

if [ "${#missing[@]}" -gt 0 ]; then
    if [ -f /etc/debian_version ] && [ "$(id -u)" = 0 ] && [ "${PROACTIVE_NO_INSTALL:-0}" != 1 ]; then
        echo "ensure-docker: installing ${missing[*]} with apt (Debian, running as root)"
        t0=$SECONDS
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
        echo "ensure-docker: installed in $((SECONDS - t0)) s"
    else
        echo "ensure-docker: Docker is not fully installed (missing: ${missing[*]}). Run:" >&2
        if [ -f /etc/debian_version ]; then
            echo "    sudo apt-get install -y ${packages[*]}" >&2
        else
            echo "    Docker Engine with compose: https://docs.docker.com/engine/install/" >&2
        fi
        exit 1
    fi
fi

if docker info >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-docker: no Docker engine answers. Start it (sudo systemctl start docker, or" \
         "sudo $0) and make sure your user may use it (sudo usermod -aG docker $USER)" >&2
    exit 1
fi
echo "ensure-docker: starting dockerd in the background (log: $log)"
nohup dockerd >"$log" 2>&1 &
echo $! >/tmp/dockerd.pid
for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then
        echo "ensure-docker: engine ready (pid $(cat /tmp/dockerd.pid))"
        exit 0
    fi
    sleep 1
done
echo "ensure-docker: dockerd did not answer within 60 s; last log lines:" >&2
tail -n 30 "$log" >&2
exit 1
