"""The JobSet's containers as Docker containers: what scripts/rehearse_two_hosts.py starts.

A container is rendered from deploy/k8s_gen.py's JobSet for a knob set (the overlay's shape frozen
from those knobs) and started as the kubelet would start it: command and args with `$(VAR)`
expanded as the kubelet expands them (`expand`) from the knobs ConfigMap, the container's `env`
and the pod's downward-API fields (JOB_COMPLETION_INDEX, the coordinator annotation, the JobSet
uid label); the pod's user, a read-only root file system, /tmp as a fresh emptyDir and /dev/shm
at its size, the workspace volume at its mount path, tini as PID 1 (shareProcessNamespace).
Hostnames follow the JobSet's (<jobset>-<job>-0-<index>, aliased <...>.<jobset>), so the
COORDINATOR a trainer gets resolves on the Docker network as it does on a cluster. Not applied:
resource requests and limits (this machine could not hold them) and the node placement.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "deploy"))
import k8s_gen  # noqa: E402  (deploy/ is not a package)

COORDINATOR_KEY = "jobset.sigs.k8s.io/coordinator"  # JobSet v0.12's annotation and label keys
LAUNCH_LABEL = "jobset.sigs.k8s.io/jobset-uid"
DOCKER = shutil.which("docker", path=f"/usr/bin:{os.environ.get('PATH', '')}") or "docker"
JOBSET = "proactive-rl"  # the JobSet's name: its pods' hostnames and subdomain


class RehearsalError(RuntimeError):
    """The rehearsal could not be set up or a container did not do what it should."""


# ---------------------------------------------------------------- the kubelet's expansion


def expand(text: str, env: dict[str, str]) -> str:
    """`$(NAME)` replaced by env[NAME] as the kubelet does (k8s third_party/forked/golang/
    expansion): `$$` is a literal `$`, an unknown name or an unclosed `$(` stays as written,
    any other `$x` is left alone (so bash's `$@`, `$VAR` and `${VAR}` pass through)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] != "$" or i + 1 == len(text):
            out.append(text[i])
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            close = text.find(")", i + 2)
            if close < 0:
                out.append("$(")
                i += 2
            else:
                name = text[i + 2 : close]
                out.append(env[name] if name in env else f"$({name})")
                i = close + 1
        else:
            out.append("$" + nxt)
            i += 2
    return "".join(out)


# ---------------------------------------------------------------- a pod of the JobSet


@dataclass(frozen=True)
class Pod:
    """Where one pod of a replicatedJob runs: its index, hostname and the fields the downward
    API gives it."""

    job: str
    index: int
    launch_id: str

    @property
    def hostname(self) -> str:
        return f"{JOBSET}-{self.job}-0-{self.index}"

    @property
    def fqdn(self) -> str:  # the pod's DNS name with the JobSet's network.enableDNSHostnames
        return f"{self.hostname}.{JOBSET}"


def rendered_jobset(knobs: dict[str, str]) -> dict:
    """The JobSet as deploy/k8s_gen.py renders it for these knobs (the cpu flavour): the
    overlay's shape, frozen from the knobs, applied."""
    import inspect

    if not inspect.signature(k8s_gen.jobset).parameters:
        return k8s_gen.jobset()
    from k8s_shape import Shape

    return k8s_gen.jobset(Shape(knobs=dict(knobs)))


def coordinator(jobset: dict) -> str:
    """The JobSet's coordinator annotation: the fqdn of pod 0 of job 0 of the coordinator job."""
    spec = jobset["spec"]["coordinator"]
    return Pod(spec["replicatedJob"], spec["podIndex"], "").fqdn


def field_value(path: str, pod: Pod, jobset: dict) -> str:
    """A downward-API fieldRef of the pods the JobSet makes; an unknown one is an error (the
    rehearsal must not quietly start a container with a variable its pod would have)."""
    if path == f"metadata.annotations['{COORDINATOR_KEY}']":
        return coordinator(jobset)
    if path == f"metadata.labels['{LAUNCH_LABEL}']":
        return pod.launch_id
    if path == "metadata.annotations['batch.kubernetes.io/job-completion-index']":
        return str(pod.index)
    if path in ("metadata.name", "spec.nodeName"):
        return pod.hostname
    raise RehearsalError(f"the rehearsal does not know the pod field {path!r}: add it")


def container_env(container: dict, knobs: dict[str, str], pod: Pod, jobset: dict) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom (the knobs ConfigMap; an
    optional Secret that does not exist adds nothing) first, then `env` in order, each value
    expanded against what is defined before it; the Job controller's JOB_COMPLETION_INDEX for
    Indexed Jobs."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if source.get("secretRef", {}).get("optional"):
            continue  # the tracker credentials' Secret: the rehearsal has none, as an unset one
        if "configMapRef" not in source:
            raise RehearsalError(f"the rehearsal reads only configMapRef envFrom, not {source}")
        env.update({source.get("prefix", "") + k: v for k, v in knobs.items()})
    env["JOB_COMPLETION_INDEX"] = str(pod.index)
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = expand(var["value"], env)
        elif "fieldRef" in var.get("valueFrom", {}):
            path = var["valueFrom"]["fieldRef"]["fieldPath"]
            env[var["name"]] = field_value(path, pod, jobset)
        elif "configMapKeyRef" in var.get("valueFrom", {}):
            env[var["name"]] = knobs.get(var["valueFrom"]["configMapKeyRef"]["key"], "")
        elif "resourceFieldRef" in var.get("valueFrom", {}):
            continue  # a limit of the pod's resources: none are set on these containers
        else:
            raise RehearsalError(f"the rehearsal cannot resolve env {var}")
    return env


def replicated_job(jobset: dict, name: str) -> dict:
    jobs = jobset["spec"]["replicatedJobs"]
    found = [job for job in jobs if job["name"] == name]
    if not found:
        raise RehearsalError(f"the JobSet has no replicatedJob {name!r}")
    return found[0]


def job_names(knobs: dict[str, str]) -> list[str]:
    return [job["name"] for job in rendered_jobset(knobs)["spec"]["replicatedJobs"]]


@dataclass
class Spec:
    """One container to start: what `docker run` needs."""

    name: str
    hostname: str
    aliases: list[str]
    image: str
    entrypoint: str
    argv: list[str]
    env: dict[str, str]
    user: str
    workdir: str
    workspace: str  # the workspace volume's mount path
    scratch: list[str] = field(default_factory=list)  # emptyDir mount paths (not memory)
    shm: str | None = None  # the memory emptyDir at /dev/shm, its size limit
    read_only: bool = False


def render(job: str, index: int, knobs: dict[str, str], launch_id: str, prefix: str) -> Spec:
    """The container of pod `index` of replicatedJob `job`, as the kubelet would start it."""
    jobset = rendered_jobset(knobs)
    pod_spec = replicated_job(jobset, job)["template"]["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    pod = Pod(job, index, launch_id)
    env = container_env(container, knobs, pod, jobset)
    command = [expand(word, env) for word in container.get("command", [])]
    args = [expand(word, env) for word in container.get("args", [])]
    if not command:
        raise RehearsalError(f"{job}: the rehearsal needs the container's command")
    image = container["image"]
    if ":" not in image.rsplit("/", 1)[-1] and "@" not in image:
        image += f":{os.environ.get('FLAVOR', 'cpu')}"  # the overlay's tag
    security = {**pod_spec.get("securityContext", {}), **container.get("securityContext", {})}
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    spec = Spec(
        name=f"{prefix}-{job}-{index}",
        hostname=pod.hostname,
        aliases=[pod.fqdn],
        image=image,
        entrypoint=command[0],
        argv=command[1:] + args,
        env=env,
        user=f"{security.get('runAsUser', 1000)}:{security.get('runAsGroup', 1000)}",
        workdir=container.get("workingDir", "/workspace"),
        workspace="",
        read_only=bool(security.get("readOnlyRootFilesystem")),
    )
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "persistentVolumeClaim" in volume:
            spec.workspace = mount["mountPath"]
        elif volume.get("emptyDir", {}).get("medium") == "Memory":
            spec.shm = volume["emptyDir"].get("sizeLimit", "64Mi")
        elif "emptyDir" in volume:
            spec.scratch.append(mount["mountPath"])
    if not spec.workspace:
        raise RehearsalError(f"{job}: no workspace volume mounted")
    return spec


# ---------------------------------------------------------------- Docker


def docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    proc = subprocess.run(
        [DOCKER, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise RehearsalError(f"docker {' '.join(args[:3])} ...: {proc.stderr.strip()}")
    return proc.stdout.strip()


def docker_size(limit: str) -> str:
    """A Kubernetes quantity (1Gi, 512Mi) as docker writes sizes (1g, 512m)."""
    match = re.fullmatch(r"(\d+)([KMGT])i?", limit)
    return f"{match[1]}{match[2].lower()}" if match else limit


@dataclass
class Host:
    """The machine the containers run on: a temporary workspace and one Docker network."""

    root: Path
    prefix: str
    network: str = ""
    started: list[str] = field(default_factory=list)  # every container, for the clean-up

    @property
    def workspace(self) -> Path:
        return self.root / "workspace"

    def run_dir(self, run_name: str) -> Path:
        return self.workspace / "checkpoints" / run_name

    def start(self, spec: Spec, extra_env: dict[str, str] | None = None) -> str:
        """`docker run -d` the container; returns its name."""
        pod_dir = self.root / "pods" / spec.name
        args = ["run", "-d", "--name", spec.name, "--hostname", spec.hostname]
        args += ["--network", self.network, "--label", f"rehearsal={self.prefix}"]
        for alias in spec.aliases:
            args += ["--network-alias", alias]
        args += ["--user", spec.user, "--workdir", spec.workdir, "--init"]
        args += ["--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
        args += ["-v", f"{self.workspace}:{spec.workspace}"]
        for path in spec.scratch:  # emptyDir: new with every pod, on the node's disk
            host = pod_dir / path.strip("/").replace("/", "_")
            host.mkdir(parents=True, exist_ok=True)
            chown_tree(host, int(spec.user.split(":")[0]))
            args += ["-v", f"{host}:{path}"]
        if spec.shm:
            args += ["--shm-size", docker_size(spec.shm)]
        if spec.read_only:
            args.append("--read-only")
        for key, value in {**spec.env, **(extra_env or {})}.items():
            args += ["-e", f"{key}={value}"]
        args += ["--entrypoint", spec.entrypoint, spec.image, *spec.argv]
        self.started.append(spec.name)
        docker(*args)
        return spec.name

    def wait(self, name: str, timeout: float) -> int:
        """The container's exit code once it has exited."""
        try:
            return int(docker("wait", name, timeout=timeout))
        except subprocess.TimeoutExpired:
            raise RehearsalError(
                f"{name} still runs after {timeout:.0f} s:\n{logs(name)}"
            ) from None

    def close(self) -> None:
        for name in self.started:
            docker("rm", "-f", name, check=False)
        if self.network:
            docker("network", "rm", self.network, check=False)


def logs(name: str, tail: int = 60) -> str:
    proc = subprocess.run(
        [DOCKER, "logs", "--tail", str(tail), name], capture_output=True, text=True
    )
    return proc.stdout + proc.stderr


def state(name: str) -> dict[str, Any]:
    return json.loads(docker("inspect", "-f", "{{json .State}}", name))


def docker_time(stamp: str) -> float:
    """A time Docker reports (RFC 3339, nanoseconds, UTC) in epoch seconds."""
    day, _, frac = stamp.rstrip("Z").partition(".")
    whole = datetime.fromisoformat(day + "+00:00").timestamp()
    return whole + float(f"0.{frac or 0}")


@contextmanager
def host(keep: bool = False) -> Iterator[Host]:
    """A workspace (the sample data; writable by the images' user) and a network, removed
    afterwards with every container started on it (kept with keep=True, for inspection)."""
    root = Path(tempfile.mkdtemp(prefix="rehearsal-"))
    h = Host(root, f"rehearsal-{uuid.uuid4().hex[:8]}")
    (h.workspace / "checkpoints").mkdir(parents=True)
    shutil.copytree(REPO / "data" / "sample", h.workspace / "data" / "sample")
    chown_tree(h.workspace)
    docker("network", "create", f"{h.prefix}-net")
    h.network = f"{h.prefix}-net"
    try:
        yield h
    finally:
        if keep:
            print(f"rehearsal: kept {root} and the containers labelled rehearsal={h.prefix}")
        else:
            h.close()
            shutil.rmtree(root, ignore_errors=True)


def chown_tree(path: Path, uid: int = 1000) -> None:
    """The images run as uid 1000 (fsGroup on a cluster); a root host hands them the files."""
    if os.geteuid() != 0:
        os.chmod(path, 0o777)  # another user: at least the folders must be writable
        for sub in path.rglob("*"):
            if sub.is_dir():
                os.chmod(sub, 0o777)
        return
    for sub in [path, *path.rglob("*")]:
        os.chown(sub, uid, uid, follow_symlinks=False)
