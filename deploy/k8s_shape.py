"""The values of a JobSet that must agree with each other, computed once per overlay.

Pods per stage (parallelism, completions), torchrun's nodes and processes per node, vLLM's
tensor parallel size, the GPUs a pod requests (nvidia.com/gpu) and says it has
(PROACTIVE_GPUS), CPU and memory, /dev/shm and the cluster's placement: all derived here from
one overlay's knobs (its knobs.env over those of the overlays and base it builds on) and its
cluster.env, then frozen into the JobSet as literal values by a generated kustomize Component,
`<overlay>/shape/kustomization.yaml` (`python deploy/k8s_gen.py`; `--overlay DIR` for your own).
Nothing a pod reads at run time can move them apart: each container's `env` carries the frozen
counts, and `env` wins over the knobs ConfigMap's `envFrom`. If the ConfigMap's counts differ
from the frozen ones (an overlay that changed a knob without regenerating its shape), the
preflight stops the run in its first minute, naming the knob.

Every patch replaces a whole field (env, resources, volumes, ...), so an overlay over an overlay
applies its own shape over the one below, whatever that one set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from stage_table import (
    CLUSTER_KNOBS,
    ENV_FROM_KNOBS,
    K8S_KNOBS,
    KNOB_REF,
    KNOBS,
    PREFLIGHT,
    SHAPE_KNOBS,
    SHM_GI_PER_GPU,
    SHM_MIN_GI,
    SIZES,
    STAGES,
    WORKDIR,
    Stage,
)

BASE = Path(__file__).resolve().parent / "k8s/base"
NAME = "proactive-rl"
KNOBS_CONFIGMAP = f"{NAME}-knobs"
CLAIM = f"{NAME}-workspace"
COORDINATOR_KEY = "jobset.sigs.k8s.io/coordinator"  # JobSet v0.12 api: CoordinatorKey
JOBSET_UID_KEY = "jobset.sigs.k8s.io/jobset-uid"  # JobSet v0.12 api: JobSetUIDKey
# The ConfigMap's value of each shape knob, beside the frozen one, for the preflight's check.
CONFIGMAP_COPY = "KNOBS_"
TRAINING = ("sft", "grpo")  # the stages that talk NCCL across GPUs (and nodes)


class ShapeError(ValueError):
    """A knob that cannot shape a JobSet (not a count, an unknown flavour)."""


def read_env(path: Path) -> dict[str, str]:
    """KEY=VALUE lines, as kustomize's configMapGenerator reads an env file."""
    env = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value
    return env


def parents(overlay: Path) -> list[Path]:
    """The directories an overlay builds on (its `resources:` that are kustomizations)."""
    doc = yaml.safe_load((overlay / "kustomization.yaml").read_text()) or {}
    found = [(overlay / r).resolve() for r in doc.get("resources", [])]
    return [p for p in found if (p / "kustomization.yaml").exists()]


def layered(overlay: Path, name: str) -> dict[str, str]:
    """An env file of an overlay over the same file of everything it builds on."""
    merged: dict[str, str] = {}
    for parent in parents(overlay):
        merged |= layered(parent, name)
    return merged | read_env(overlay / name)


def count(knobs: dict[str, str], knob: str, least: int) -> int:
    value = knobs[knob]
    if not value.isdigit() or int(value) < least:
        raise ShapeError(f"{knob}={value!r}: a whole number of at least {least} is expected")
    return int(value)


@dataclass(frozen=True)
class Shape:
    """One overlay's knobs (knobs.env, layered) and cluster settings (cluster.env, layered)."""

    knobs: dict[str, str] = field(default_factory=lambda: {**KNOBS, **K8S_KNOBS})
    cluster: dict[str, str] = field(default_factory=lambda: dict(CLUSTER_KNOBS))

    @classmethod
    def of(cls, overlay: Path) -> Shape:
        shape = cls(
            {**KNOBS, **K8S_KNOBS, **layered(overlay, "knobs.env")},
            {**CLUSTER_KNOBS, **layered(overlay, "cluster.env")},
        )
        shape.check()
        return shape

    def check(self) -> None:
        unknown = set(self.cluster) - set(CLUSTER_KNOBS)
        if unknown:
            raise ShapeError(f"cluster.env: unknown {sorted(unknown)}; known: {[*CLUSTER_KNOBS]}")
        if self.flavor not in SIZES:
            raise ShapeError(f"FLAVOR={self.flavor!r}: one of {sorted(SIZES)}")
        for knob in SHAPE_KNOBS:
            count(self.knobs, knob, 0 if knob.endswith("_PER_POD") else 1)

    @property
    def flavor(self) -> str:
        return self.cluster["FLAVOR"]

    def pods(self, stage: Stage) -> int:
        return count(self.knobs, stage.count, 1) if stage.count else 1

    def gpus(self, stage: Stage | None) -> int:
        """GPUs one pod of the stage requests: only cuda pods of a GPU stage have any."""
        if stage is None or not stage.gpus or self.flavor != "cuda":
            return 0
        return count(self.knobs, f"{stage.gpus.upper()}_GPUS_PER_POD", 0)

    def frozen(self) -> dict[str, str]:
        """Every frozen value a container may read, by env name."""
        tp = max(1, self.gpus(next(s for s in STAGES if s.k8s_args)))
        trainer = next(s for s in STAGES if s.count and not s.index_field)
        # As the ConfigMap writes them: the preflight compares the two as strings.
        values = {knob: self.knobs[knob] for knob in SHAPE_KNOBS}
        return values | {"VLLM_TP": str(tp), "PROCS_PER_POD": str(max(1, self.gpus(trainer)))}


def frozen_names(stage: Stage) -> list[str]:
    """The frozen values a stage's container reads (its args and launch script)."""
    names = [knob for arg in stage.worker_args for knob in KNOB_REF.findall(arg)]
    if stage.count and not stage.index_field:
        names += [stage.count, "PROCS_PER_POD"]
    if stage.k8s_args:
        names.append("VLLM_TP")
    return names


def knob_env() -> list[dict]:
    return [{"name": name, "value": f"$({knob})"} for name, knob in ENV_FROM_KNOBS.items()]


def field_env(name: str, path: str) -> dict:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def launch_env() -> dict:
    # The launch: one per JobSet, the same across its restarts (shared/claims.py resumes it).
    return field_env("PROACTIVE_LAUNCH_ID", f"metadata.labels['{JOBSET_UID_KEY}']")


def stage_env(stage: Stage, shape: Shape) -> list[dict]:
    env = [*knob_env(), launch_env(), {"name": "PROACTIVE_GPUS", "value": str(shape.gpus(stage))}]
    frozen = shape.frozen()
    env += [{"name": name, "value": frozen[name]} for name in frozen_names(stage)]
    if stage.count and not stage.index_field:
        env.append(field_env("COORDINATOR", f"metadata.annotations['{COORDINATOR_KEY}']"))
    if stage.name in TRAINING:
        env += [
            {"name": knob, "value": shape.cluster[knob]}
            for knob in ("NCCL_SOCKET_IFNAME", "NCCL_IB_HCA")
            if shape.cluster[knob]
        ]
    return env


def preflight_env(shape: Shape) -> list[dict]:
    """The preflight pod has no GPU, every frozen value (for the stages' arguments) and the
    ConfigMap's copy of each shape knob (KNOBS_<knob>), which it checks against the frozen."""
    env = [*knob_env(), launch_env(), {"name": "PROACTIVE_GPUS", "value": "0"}]
    env += [{"name": name, "value": value} for name, value in shape.frozen().items()]
    for knob in SHAPE_KNOBS:
        ref = {"configMapKeyRef": {"name": KNOBS_CONFIGMAP, "key": knob}}
        env.append({"name": f"{CONFIGMAP_COPY}{knob}", "valueFrom": ref})
    return env


def quantity_cpu(cores: float) -> str:
    return str(int(cores)) if cores == int(cores) else f"{round(cores * 1000)}m"


def shm_gi(gpus: int) -> int:
    return max(SHM_MIN_GI, SHM_GI_PER_GPU * gpus)


def resources(name: str, shape: Shape, stage: Stage | None = None) -> dict:
    """Requests from the flavour's sizes (deploy/stage_table.py); /dev/shm is charged to the
    pod's memory, so it is in the request. Limits equal requests where the stage says so."""
    size = SIZES[shape.flavor][name]
    gpus = shape.gpus(stage)
    pods = shape.pods(stage) if stage else 1
    memory = size.memory_gi + size.memory_per_gpu_gi * gpus + size.shared_gi / pods
    requests = {
        "cpu": quantity_cpu(size.cpu + size.cpu_per_gpu * gpus),
        "memory": f"{math.ceil(memory + shm_gi(gpus))}Gi",
    }
    limits = dict(requests) if stage and stage.guaranteed else {}
    if gpus:
        limits["nvidia.com/gpu"] = gpus
    if stage and stage.count and not stage.index_field and shape.cluster["RDMA_RESOURCE"]:
        limits[shape.cluster["RDMA_RESOURCE"]] = 1
    return {"requests": requests, "limits": limits} if limits else {"requests": requests}


def volumes(gpus: int) -> tuple[list[dict], list[dict]]:
    """The run's volume at /workspace (data/ and checkpoints/ in it, as compose mounts them),
    /tmp for HOME and caches, and /dev/shm for torch's, NCCL's and vLLM's shared memory."""
    shm = {"medium": "Memory", "sizeLimit": f"{shm_gi(gpus)}Gi"}
    vols = [
        {"name": "workspace", "persistentVolumeClaim": {"claimName": CLAIM}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "dshm", "emptyDir": shm},
    ]
    mounts = [
        {"name": "workspace", "mountPath": WORKDIR},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    return vols, mounts


def placement(shape: Shape, stage: Stage) -> dict:
    """Pod fields that put a GPU pod on a GPU node: runtime class, node label, taint."""
    if not shape.gpus(stage):
        return {}
    knob = shape.cluster
    spec: dict = {}
    if knob["RUNTIME_CLASS"]:
        spec["runtimeClassName"] = knob["RUNTIME_CLASS"]
    if knob["GPU_NODE_LABEL"]:
        term = {"key": knob["GPU_NODE_LABEL"], "operator": "In", "values": [knob["GPU_NODE_VALUE"]]}
        terms = {"nodeSelectorTerms": [{"matchExpressions": [term]}]}
        spec["affinity"] = {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": terms}
        }
    if knob["GPU_TAINT"]:
        spec["tolerations"] = [{"key": knob["GPU_TAINT"], "operator": "Exists"}]
    return spec


def ops_for_job(index: int, stage: Stage | None, shape: Shape) -> list[dict]:
    """JSON patch operations that set every frozen field of one replicatedJob."""
    job = f"/spec/replicatedJobs/{index}/template/spec"
    pod = f"{job}/template/spec"
    name = stage.name if stage else PREFLIGHT
    # A JobSet whose jobs are not where this shape expects them fails to render, loudly.
    ops = [{"op": "test", "path": f"/spec/replicatedJobs/{index}/name", "value": name}]
    if stage and stage.count:
        for key in ("parallelism", "completions"):
            ops.append({"op": "replace", "path": f"{job}/{key}", "value": shape.pods(stage)})
    env = stage_env(stage, shape) if stage else preflight_env(shape)
    ops.append({"op": "add", "path": f"{pod}/containers/0/env", "value": env})
    ops.append(
        {
            "op": "add",
            "path": f"{pod}/containers/0/resources",
            "value": resources(name, shape, stage),
        }
    )
    ops.append({"op": "add", "path": f"{pod}/volumes", "value": volumes(shape.gpus(stage))[0]})
    for key, value in (placement(shape, stage) if stage else {}).items():
        ops.append({"op": "add", "path": f"{pod}/{key}", "value": value})
    return ops


def patch(kind: str, name: str, ops: list[dict]) -> dict:
    text = yaml.safe_dump(ops, sort_keys=False, width=1000)
    return {"target": {"kind": kind, "name": name}, "patch": text}


def patches(shape: Shape) -> list[dict]:
    jobs = [None, *STAGES]  # the JobSet's replicatedJobs: the preflight, then the stages
    ops = [op for i, stage in enumerate(jobs) for op in ops_for_job(i, stage, shape)]
    found = [patch("JobSet", NAME, ops)]
    workspace = {"op": "add", "path": "/spec/containers/0/resources"}
    found.append(patch("Pod", CLAIM, [{**workspace, "value": resources("workspace", shape)}]))
    if shape.cluster["STORAGE_CLASS"]:
        op = {
            "op": "add",
            "path": "/spec/storageClassName",
            "value": shape.cluster["STORAGE_CLASS"],
        }
        found.append(patch("PersistentVolumeClaim", CLAIM, [op]))
    return found


def component(shape: Shape) -> dict:
    return {
        "apiVersion": "kustomize.config.k8s.io/v1alpha1",
        "kind": "Component",
        "patches": patches(shape),
    }
