"""`make push-images REGISTRY=host:port`: the stage images pushed to a registry and pinned by digest
in the overlay's images component (scripts/push-images.sh), against a registry on this machine
(Debian's docker-registry, on a free localhost port with a temporary store).

The plain tests (bad REGISTRY, registry unreachable) need no Docker and run in `make test`. The
`docker` ones push stand-in images: six one-file images tagged proactive-rl/<stage>:pushtest, so the
push takes seconds; pushing the real 4.5 GB images does exactly the same and takes 2-4.5 min here
(PUSH_IMAGES_FLAVOR=cpu pushes those instead). Files go to a temporary copy of deploy/k8s.
    .venv/bin/pytest -m docker tests/e2e/test_push_images.py
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ["base", "prep", "sft", "rollout", "grpo", "eval"]
FLAVOR = os.environ.get("PUSH_IMAGES_FLAVOR", "pushtest")
PATH = f"/usr/bin:/usr/sbin:{os.environ.get('PATH', '')}"
# What docker pushes (schema 2, or OCI): the registry answers with that manifest's digest.
MANIFESTS = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)
SENTINEL = "# the component as it was before\n"


def push(registry: str | None, *args: str, flavor: str = FLAVOR) -> subprocess.CompletedProcess:
    """scripts/push-images.sh ARGS with REGISTRY (None: unset) and FLAVOR."""
    env = {k: v for k, v in os.environ.items() if k != "REGISTRY"}
    env |= {"PATH": PATH, "FLAVOR": flavor, **({"REGISTRY": registry} if registry else {})}
    return subprocess.run(
        [str(ROOT / "scripts" / "push-images.sh"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def component_at(tmp_path: Path) -> Path:
    """A component file that exists before the push: a failed push must leave it as it was."""
    out = tmp_path / "images" / "kustomization.yaml"
    out.parent.mkdir(parents=True)
    out.write_text(SENTINEL)
    return out


def assert_refused(proc: subprocess.CompletedProcess, out: Path, *fragments: str) -> None:
    """Non-zero, one line on stderr that says what to fix, and the component untouched."""
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("push-images: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert out.read_text() == SENTINEL
    assert sorted(p.name for p in out.parent.iterdir()) == ["kustomization.yaml"], "temp left"


# --- refusals that need no Docker --------------------------------------------------------------


def test_make_push_images_without_registry_says_how(tmp_path):
    k8s = tmp_path / "k8s"
    out = component_at(k8s / "overlays" / "cpu")
    env = {k: v for k, v in os.environ.items() if k != "REGISTRY"} | {"PATH": PATH}
    proc = subprocess.run(
        ["make", "--no-print-directory", "push-images", f"K8S_DIR={k8s}", "FLAVOR=cpu"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    # make adds its own "*** Error" line; ours is the one before it
    ours = [line for line in proc.stderr.splitlines() if line.startswith("push-images: ")]
    assert ours == [
        "push-images: REGISTRY is not set: "
        "make push-images REGISTRY=host:port (e.g. localhost:5000)"
    ]
    assert out.read_text() == SENTINEL


@pytest.mark.parametrize("registry", ["http://localhost:5000", "Registry.Example.com", "a b"])
def test_a_registry_that_is_not_host_port_is_refused(tmp_path, registry):
    out = component_at(tmp_path)
    proc = push(registry, "--out", str(out))
    assert proc.returncode == 2
    assert_refused(proc, out, f"REGISTRY={registry} is not host[:port][/path]")


def test_an_unreachable_registry_is_named(tmp_path):
    out = component_at(tmp_path)
    port = free_port()  # nothing listens there
    proc = push(f"127.0.0.1:{port}", "--out", str(out))
    assert_refused(
        proc, out, f"registry 127.0.0.1:{port} unreachable", f"http://127.0.0.1:{port}/v2/"
    )


# --- a registry on this machine (docker tests) -------------------------------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of a docker-registry serving from a temporary store, stopped afterwards."""
    binary = shutil.which("docker-registry", path=PATH)
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("docker-registry is not installed (.ci/run installs Debian's package)")
        pytest.skip("no docker-registry (apt-get install docker-registry); CI runs this test")
    home = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = {
        "version": 0.1,
        "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(home / "store")}},
        "http": {"addr": f"127.0.0.1:{port}"},
    }
    (home / "config.yml").write_text(yaml.safe_dump(config))
    log = (home / "log").open("w")
    server = subprocess.Popen(
        [binary, "serve", str(home / "config.yml")], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2)
                break
            except (urllib.error.URLError, OSError):
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"docker-registry did not start: {(home / 'log').read_text()}")
                time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def docker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", *args], env={**os.environ, "PATH": PATH}, capture_output=True, text=True
    )


def import_stand_in(image: str) -> None:
    """A one-file image with its own content (so its own digest) and the build label the
    script checks, made with `docker import`: no base image, no builder, a second."""
    data = f"proactive-rl {image} stand-in\n".encode()
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        info = tarfile.TarInfo("stand-in")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    proc = subprocess.run(
        ["docker", "import", "--change", "LABEL org.proactive-rl.inputs=pushtest", "-"]
        + [f"proactive-rl/{image}:{FLAVOR}"],
        input=archive.getvalue(),
        env={**os.environ, "PATH": PATH},
        capture_output=True,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def pushed(registry: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """`make push-images` into a copy of deploy/k8s (overlay `FLAVOR`: a copy of the cpu one)."""
    k8s = tmp_path_factory.mktemp("push") / "k8s"
    shutil.copytree(ROOT / "deploy" / "k8s", k8s)
    overlay = k8s / "overlays" / FLAVOR
    if not overlay.exists():
        shutil.copytree(k8s / "overlays" / "cpu", overlay)
    if FLAVOR == "pushtest":
        for image in IMAGES:
            import_stand_in(image)
    try:
        start = time.monotonic()
        proc = subprocess.run(
            ["make", "--no-print-directory", "push-images", f"REGISTRY={registry}"]
            + [f"FLAVOR={FLAVOR}", f"K8S_DIR={k8s}"],
            cwd=ROOT,
            env={**os.environ, "PATH": PATH},
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        print(f"make push-images ({FLAVOR}): {time.monotonic() - start:.1f} s")
        out = overlay / "images" / "kustomization.yaml"
        yield {"overlay": overlay, "out": out, "stdout": proc.stdout, "registry": registry}
    finally:
        tags = [f"{registry}/proactive-rl/{image}:{FLAVOR}" for image in IMAGES]
        if FLAVOR == "pushtest":
            tags += [f"proactive-rl/{image}:{FLAVOR}" for image in IMAGES]
        docker("rmi", *tags)  # untags the real images; the stand-ins go


def served_digest(registry: str, image: str) -> str:
    request = urllib.request.Request(
        f"http://{registry}/v2/proactive-rl/{image}/manifests/{FLAVOR}",
        headers={"Accept": MANIFESTS},
        method="HEAD",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["Docker-Content-Digest"]


@pytest.mark.docker
def test_the_component_pins_the_digests_the_registry_serves(pushed):
    registry, text = pushed["registry"], pushed["out"].read_text()
    header = text.split("apiVersion:")[0]
    assert "Written by `make push-images`" in header and f"from registry {registry}" in header
    assert re.search(r"on \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", header)
    component = yaml.safe_load(text)
    assert component["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"
    assert component["kind"] == "Component"
    assert [entry["name"] for entry in component["images"]] == [f"proactive-rl/{i}" for i in IMAGES]
    digests = set()
    for entry, image in zip(component["images"], IMAGES, strict=True):
        assert entry["newName"] == f"{registry}/proactive-rl/{image}"
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", entry["digest"]), entry
        assert "newTag" not in entry, "a digest pins the image; a tag beside it could disagree"
        assert entry["digest"] == served_digest(registry, image), image
        assert f"{registry}/proactive-rl/{image}:{FLAVOR} -> {entry['digest']}" in pushed["stdout"]
        digests.add(entry["digest"])
    assert len(digests) == len(IMAGES), "each image its own digest"
    assert sorted(p.name for p in pushed["out"].parent.iterdir()) == ["kustomization.yaml"]


def kustomize_v5() -> str:
    """kubectl, if its kustomize is v5 (components); else skip as tests/deploy/conftest.py does."""
    kubectl = shutil.which(os.environ.get("KUBECTL", "kubectl"), path=PATH)
    if kubectl is None:
        pytest.skip("no kubectl on PATH (it renders with its built-in kustomize)")
    version = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True)
    found = re.search(r"Kustomize Version: v(\d+)", version.stdout + version.stderr)
    if found is None or int(found.group(1)) < 5:
        pytest.skip("needs kubectl with kustomize v5 (kubectl >= 1.27) to render the overlays")
    return kubectl


def containers(node) -> Iterator[dict]:
    """Every container and init container anywhere in a rendered object."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from value
            else:
                yield from containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from containers(item)


@pytest.mark.docker
def test_the_overlay_renders_every_image_by_digest(pushed):
    kubectl = kustomize_v5()
    rendered = subprocess.run(
        [kubectl, "kustomize", str(pushed["overlay"])], capture_output=True, text=True
    )
    assert rendered.returncode == 0, rendered.stderr
    pins = {
        entry["name"]: f"{entry['newName']}@{entry['digest']}"
        for entry in yaml.safe_load(pushed["out"].read_text())["images"]
    }
    found = [c for doc in yaml.safe_load_all(rendered.stdout) for c in containers(doc)]
    assert len(found) >= 5, "one container per stage at least"
    for container in found:
        image = container["image"]
        match = re.fullmatch(
            rf"{re.escape(pushed['registry'])}/(proactive-rl/[a-z]+)@sha256:\w+", image
        )
        assert match, f"{container['name']}: {image} is not pinned by digest in the registry"
        assert image == pins[match.group(1)], container["name"]


@pytest.mark.docker
def test_images_not_built_name_the_make_target(registry, tmp_path):
    out = component_at(tmp_path)
    proc = push(registry, "--out", str(out), flavor="nosuchflavor")
    assert proc.returncode == 2
    assert_refused(
        proc,
        out,
        "proactive-rl/base:nosuchflavor is not built",
        "make build-images FLAVOR=nosuchflavor",
    )
    tagged = docker("images", "-q", "--filter", f"reference={registry}/proactive-rl/*:nosuchflavor")
    assert tagged.stdout.strip() == "", "nothing tagged before every image was found"
