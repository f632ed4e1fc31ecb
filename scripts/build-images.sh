#!/usr/bin/env bash
# Build every image: proactive-rl/base:$FLAVOR, then proactive-rl/<stage>:$FLAVOR FROM it.
# Images are labelled with a fingerprint of what goes into them (the lock, the packaged models,
# the Dockerfiles, the project's sources); when every image carries the current one, nothing is
# rebuilt (a second or so), otherwise Docker's layer cache rebuilds only what changed.
# Usage: scripts/build-images.sh            (what `make build-images` runs; --force: rebuild)
#   FLAVOR        cpu (default: requirements/cpu.txt) or cuda (requirements/cuda.txt: PyPI's CUDA
#                 builds of torch, vLLM, DeepSpeed; ~7 GB of wheels; runs on any host with an
#                 NVIDIA driver and the container toolkit). Also the images' tag.
#   DEBIAN_IMAGE  base OS image (default local/debian:bookworm, made by scripts/docker-base.sh;
#                 with a registry at hand, debian:bookworm-slim works too)
# Needs BuildKit (bind mounts): the Debian docker 20.10 CLI has it built in; newer CLIs need buildx.
set -euo pipefail
# shellcheck source=scripts/usage.sh
source "$(dirname "$0")/usage.sh"
usage "$@"

# /usr/bin first: a newer docker CLI without buildx in /usr/local/bin fails with DOCKER_BUILDKIT=1.
export PATH="/usr/bin:/usr/sbin:$PATH" DOCKER_BUILDKIT=1
repo_root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo_root"
flavor="${FLAVOR:-cpu}"
debian="${DEBIAN_IMAGE:-local/debian:bookworm}"
stages=(prep sft rollout grpo eval)
progress=()
# Plain progress keeps CI logs readable (the flag exists only with BuildKit).
[ -n "${CI:-}" ] && progress=(--progress=plain)

# The inputs: tracked and untracked-but-not-ignored files (what the wheel and the contexts hold).
fingerprint() {
    {
        echo "$flavor $debian"
        if git rev-parse --git-dir >/dev/null 2>&1; then
            git ls-files -z --cached --others --exclude-standard \
                | grep -z -v -E '^(checkpoints|data|tests)/' | sort -z \
                | xargs -0 -r sha256sum 2>/dev/null || true
        else
            find . -path ./.venv -prune -o -path ./.build -prune -o -path ./checkpoints -prune \
                -o -path ./data -prune -o -path ./.git -prune -o -type f -print0 \
                | sort -z | xargs -0 -r sha256sum
        fi
    } | sha256sum | cut -c1-16
}
inputs="$(fingerprint)"
label="org.proactive-rl.inputs"
up_to_date=1
for image in base "${stages[@]}"; do
    have="$(docker image inspect -f "{{ index .Config.Labels \"$label\" }}" \
        "proactive-rl/$image:$flavor" 2>/dev/null || true)"
    [ "$have" = "$inputs" ] || up_to_date=0
done
if [ "$up_to_date" = 1 ] && [ "${1:-}" != "--force" ]; then
    echo "build-images: proactive-rl/*:$flavor are up to date (inputs $inputs); nothing to build"
    exit 0
fi

t0=$SECONDS
if [ "$debian" = "local/debian:bookworm" ]; then
    DEBIAN_IMAGE="$debian" scripts/docker-base.sh
fi
t1=$SECONDS
FLAVOR="$flavor" scripts/wheelhouse.sh
t2=$SECONDS
echo "build-images: proactive-rl/base:$flavor"
docker build "${progress[@]}" --build-arg DEBIAN_IMAGE="$debian" \
    --build-arg FLAVOR="$flavor" --label "$label=$inputs" -f images/base/Dockerfile \
    -t "proactive-rl/base:$flavor" \
    ".build/$flavor"
t3=$SECONDS
for stage in "${stages[@]}"; do
    echo "build-images: proactive-rl/$stage:$flavor"
    docker build "${progress[@]}" --build-arg BASE_IMAGE="proactive-rl/base:$flavor" \
        --label "$label=$inputs" -t "proactive-rl/$stage:$flavor" "images/$stage"
done
t4=$SECONDS
echo "build-images: debian base $((t1 - t0)) s, wheelhouse $((t2 - t1)) s," \
     "base image $((t3 - t2)) s, stage images $((t4 - t3)) s"
docker image ls --filter "reference=proactive-rl/*:$flavor" --filter "reference=$debian"
