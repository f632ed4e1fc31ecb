#!/usr/bin/env bash
# Build the local Debian base image without any container registry:
# debootstrap a minimal bookworm root filesystem and `docker import` it.
# Usage: scripts/docker-base.sh [--force]
#   DEBIAN_IMAGE   tag to create          (default local/debian:bookworm)
#   DEBIAN_MIRROR  Debian mirror          (default http://deb.debian.org/debian)
# Skips the work if the image already exists (pass --force to rebuild). Needs root + debootstrap.
set -euo pipefail
# shellcheck source=scripts/usage.sh
source "$(dirname "$0")/usage.sh"
usage "$@"

export PATH="/usr/bin:/usr/sbin:$PATH"
image="${DEBIAN_IMAGE:-local/debian:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if [ "${1:-}" != "--force" ] && docker image inspect "$image" >/dev/null 2>&1; then
    echo "docker-base: $image already exists (use --force to rebuild)"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "docker-base: install debootstrap" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "docker-base: debootstrap needs root" >&2; exit 1; }

# Outside the repository: .build/ is the base image's build context.
work="$(mktemp -d "${TMPDIR:-/tmp}/proactive-rootfs.XXXXXX")"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
echo "docker-base: debootstrap bookworm (minbase) from $mirror"
debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
# Keep apt lists out of the image; later layers run apt-get update if they need packages.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
echo "docker-base: importing as $image"
tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$image"
docker image ls "$image"
