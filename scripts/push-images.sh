#!/usr/bin/env bash
# Push the stage images to a registry and pin them by digest in the Kubernetes overlay.
# Tags proactive-rl/<stage>:$FLAVOR (base, prep, sft, rollout, grpo, eval) as
# $REGISTRY/proactive-rl/<stage>:$FLAVOR, pushes each, reads the digest the registry stored and
# writes the overlay's images component (deploy/k8s/overlays/<cpu|gpu>/images/kustomization.yaml):
# `newName: $REGISTRY/proactive-rl/<stage>` + `digest: sha256:...`, so the manifests name exactly
# the images pushed, never a tag that can move. The file is replaced in one rename, and only
# after every push succeeded: a failure leaves it as it was.
#
# Usage: make push-images REGISTRY=host:port [FLAVOR=cpu] [K8S_DIR=deploy/k8s]
#        REGISTRY=host:port [FLAVOR=cpu] scripts/push-images.sh [--k8s DIR | --out FILE]
#   REGISTRY  host[:port][/path], no scheme (registry.example.com/team, localhost:5000);
#             `docker login` first where it needs one
#   FLAVOR    cpu (default) or cuda: which images (what `make build-images FLAVOR=...` built);
#             the cuda images go to the gpu overlay
#   --k8s     the deploy/k8s folder to write into (default deploy/k8s; the tests use a copy)
#   --out     the component file itself (default DIR/overlays/<cpu|gpu>/images/kustomization.yaml)
# Errors are one line on stderr, exit 2 for what the user fixes (REGISTRY, images), 1 otherwise.
set -euo pipefail
# shellcheck source=scripts/usage.sh
source "$(dirname "$0")/usage.sh"
usage "$@"

export PATH="/usr/bin:/usr/sbin:$PATH"
repo_root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo_root"
flavor="${FLAVOR:-cpu}"
registry="${REGISTRY:-}"
out=""
k8s="deploy/k8s"
images=(base prep sft rollout grpo eval)
label="org.proactive-rl.inputs"

die() { # exit code, message
    echo "push-images: $2" >&2
    exit "$1"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --out) [ $# -ge 2 ] || die 2 "--out needs a file"; out="$2"; shift 2 ;;
        --out=*) out="${1#--out=}"; shift ;;
        --k8s) [ $# -ge 2 ] || die 2 "--k8s needs a folder"; k8s="$2"; shift 2 ;;
        --k8s=*) k8s="${1#--k8s=}"; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die 2 "unknown argument '$1' (usage: REGISTRY=host:port scripts/push-images.sh [--k8s DIR | --out FILE])" ;;
    esac
done

# --- REGISTRY: set, and a docker registry reference (lower case, no scheme).
[ -n "$registry" ] || die 2 "REGISTRY is not set: make push-images REGISTRY=host:port (e.g. localhost:5000)"
registry="${registry%/}"
[[ "$registry" =~ ^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9._-]+)*$ ]] \
    || die 2 "REGISTRY=$registry is not host[:port][/path] (lower case, no http://)"

# --- where the component goes: the flavour's overlay, unless --out names the file.
overlay="$flavor"
[ "$flavor" = cuda ] && overlay=gpu # the overlays are named for the hardware, images for the build
if [ -z "$out" ]; then
    [ -d "$k8s/overlays/$overlay" ] \
        || die 2 "no overlay $k8s/overlays/$overlay for FLAVOR=$flavor (cpu or cuda)"
    out="$k8s/overlays/$overlay/images/kustomization.yaml"
fi

# --- the registry answers on /v2/ (200, or 401: a registry that wants a login). https first, as
# docker does; plain http is what docker uses for localhost registries.
probe="$(python3 - "${registry%%/*}" <<'EOF'
import ssl, sys, urllib.error, urllib.request

host, tried = sys.argv[1], []
# The Docker engine reaches its own host directly: so does the probe, whatever *_proxy says.
# Reachability only: docker checks the certificate itself (/etc/docker/certs.d).
local = host.split(":")[0] in ("localhost", "127.0.0.1", "[::1]")
opener = urllib.request.build_opener(
    urllib.request.ProxyHandler({} if local else None),
    urllib.request.HTTPSHandler(context=ssl._create_unverified_context()),
)
for scheme in ("https", "http"):
    url = f"{scheme}://{host}/v2/"
    try:
        opener.open(url, timeout=10)
    except urllib.error.HTTPError as error:
        if error.code != 401:  # a proxy's 502, a web server's 404: not a registry
            tried.append(f"{url} (HTTP {error.code}: not a registry's answer)")
            continue
    except Exception as error:  # refused, no such host, not TLS, timed out
        tried.append(f"{url} ({getattr(error, 'reason', error)})")
        continue
    print(url)
    sys.exit(0)
print(", ".join(tried))
sys.exit(1)
EOF
)" || die 1 "registry $registry unreachable: $probe"

# --- Docker, and every image built by the same build (a mixed set would pin mismatched stages).
docker info >/dev/null 2>&1 || die 1 "the Docker engine does not answer (docker info): start it (scripts/ensure-docker.sh)"
build=""
for image in "${images[@]}"; do
    inputs="$(docker image inspect -f "{{ index .Config.Labels \"$label\" }}" \
        "proactive-rl/$image:$flavor" 2>/dev/null)" \
        || die 2 "proactive-rl/$image:$flavor is not built: run make build-images FLAVOR=$flavor"
    if [ -n "$build" ] && [ "$inputs" != "$build" ]; then
        die 2 "proactive-rl/*:$flavor come from different builds: run make build-images FLAVOR=$flavor"
    fi
    build="$inputs"
done

# --- tag and push; the digest is the one the registry reports for this push.
log="$(mktemp)"
tmp=""
trap 'rm -f "$log" ${tmp:+"$tmp"}' EXIT
declare -A digests
for image in "${images[@]}"; do
    target="$registry/proactive-rl/$image:$flavor"
    start=$SECONDS
    docker tag "proactive-rl/$image:$flavor" "$target"
    if ! docker push "$target" >"$log" 2>&1; then
        why="$(grep -v '^\s*$' "$log" | tail -n 1)"
        hint=""
        if grep -q -i -E 'denied|unauthorized|authentication required' <<<"$why"; then
            hint=" (docker login ${registry%%/*} first?)"
        fi
        die 1 "docker push $target failed: $why$hint"
    fi
    digest="$(sed -n 's/.*digest: \(sha256:[0-9a-f]\{64\}\).*/\1/p' "$log" | tail -n 1)"
    if [ -z "$digest" ]; then # an older client's output: the digest docker recorded for the repo
        digest="$(docker image inspect -f '{{ range .RepoDigests }}{{ println . }}{{ end }}' \
            "$target" | sed -n "s|^$registry/proactive-rl/$image@||p" | head -n 1)"
    fi
    [[ "$digest" =~ ^sha256:[0-9a-f]{64}$ ]] || die 1 "docker push $target reported no digest"
    digests[$image]="$digest"
    echo "push-images: $target -> $digest ($((SECONDS - start)) s)"
done

# --- the component, written beside its place and renamed over it (readers never see half).
mkdir -p "$(dirname "$out")"
tmp="$(mktemp "$out.XXXXXX")"
{
    echo "# Written by \`make push-images\` (scripts/push-images.sh) on $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "# from registry $registry: the proactive-rl/<stage>:$flavor images (build $build), pinned by"
    echo "# digest. Push again after every build; \`git checkout\` this file for the local tags."
    echo "apiVersion: kustomize.config.k8s.io/v1alpha1"
    echo "kind: Component"
    echo "images:"
    for image in "${images[@]}"; do
        echo "  - name: proactive-rl/$image"
        echo "    newName: $registry/proactive-rl/$image"
        echo "    digest: ${digests[$image]}"
    done
} >"$tmp"
chmod 644 "$tmp"
mv -f "$tmp" "$out"
tmp=""
echo "push-images: wrote $out (${#images[@]} images by digest from $registry)"
