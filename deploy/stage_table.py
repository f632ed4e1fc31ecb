"""The pipeline's stages as one table: what compose.yaml runs and what deploy/k8s runs.

One source of truth for each stage's command and knobs, the preflight that checks them all
first, and each stage's CPU and memory on Kubernetes. `deploy/k8s_gen.py` (run by
`make k8s-render`) writes the Kubernetes base from it (deploy/k8s/base/jobset.yaml, knobs.env)
and each overlay's frozen shape (deploy/k8s_shape.py: deploy/k8s/overlays/*/shape);
tests/deploy fails when compose.yaml, the committed files or the rendered manifests say
anything else. Change a stage here first, then compose.yaml, then `make k8s-render`.

A knob that sets a stage field (`--set n=${RL_ROLLOUTS}`) has no default of its own: it is that
field's, read from the stage's config class, the one owner of every default.
`deploy/settings_drift.py` (tests/deploy/test_settings_drift.py) fails when a copy of a default
(compose, .env.example, the env files, the k8s knobs, the recipe preset, the docs tables)
disagrees with its owner, or when an env file restates a default instead of overriding it.

An argument is a literal or holds `${KNOB}`: compose writes it `${KNOB:-default}`, Kubernetes
`$(KNOB)` (expanded by the kubelet from the knobs ConfigMap, one argument, never split). The
free-form knobs of `extra` (`RUN_MODE`, `VERL_ARGS`, `<STAGE>_ARGS`) are split on spaces, as
compose splits them, and go last, in this order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from proactive_rl.stages.eval.config import EvalConfig
from proactive_rl.stages.grpo.config import GrpoConfig
from proactive_rl.stages.prep.config import PrepConfig
from proactive_rl.stages.rollout.config import RolloutConfig
from proactive_rl.stages.sft.config import SftConfig

# Each stage's settings: the owners of the defaults (config modules are light: no torch).
CONFIGS: dict[str, type[BaseModel]] = {
    "prep": PrepConfig,
    "sft": SftConfig,
    "rollout": RolloutConfig,
    "grpo": GrpoConfig,
    "eval": EvalConfig,
}

# The users' knobs with no stage field behind them, and their defaults (compose.yaml's and
# .env.example's, one ConfigMap on Kubernetes). Values are strings, as in an env file. The knobs
# that set a field (KNOB_FIELDS, below the stages) join them in KNOBS with that field's default.
RUN_KNOBS: dict[str, str] = {
    "RUN_NAME": "default",
    "RUN_MODE": "",
    "RECIPE": "",
    "SEED": "",
    "LOGGER": "",
}
ARGS_KNOBS: dict[str, str] = {
    "VERL_ARGS": "",
    "PREP_ARGS": "",
    "SFT_ARGS": "",
    "ROLLOUT_ARGS": "",
    "GRPO_ARGS": "",
    "EVAL_ARGS": "",
}

# Knobs only Kubernetes has: how many nodes grpo trains on (one torchrun agent per pod) and how
# many GPUs each pod asks for (the gpu overlay; also grpo's processes per pod and vLLM's tensor
# parallel size). compose's TRAIN_GPUS/ROLLOUT_GPUS are device lists of one host; these are
# counts per pod, frozen into the JobSet per overlay (deploy/k8s_shape.py).
K8S_KNOBS: dict[str, str] = {
    "GRPO_NODES": "1",
    "TRAIN_GPUS_PER_POD": "2",
    "ROLLOUT_GPUS_PER_POD": "2",
}

# compose's own variables, and what stands for them on Kubernetes: the image tag is the overlay's
# (cpu, cuda), the user is the images' uid 1000 (securityContext); the per-host GPU lists and
# compose's extra rollout services (rollout-2, ...) are ROLLOUT_WORKERS pods of one Indexed Job.
COMPOSE_ONLY: dict[str, str] = {
    "FLAVOR": "cpu",
    "PROACTIVE_UID": str(1000),
    "PROACTIVE_GID": str(1000),
    "TRAIN_GPUS": "0,1",
    "ROLLOUT_GPUS": "2,3",
    # The launch a restart continues (shared/claims.py): Kubernetes sets it to the JobSet's uid;
    # under compose a rehearsal of a restart sets any string, unset = no launch.
    "PROACTIVE_LAUNCH_ID": "",
}

# Environment the stages read, set from a knob (compose: `environment:` of the x-stage anchor).
# SEED is the pipeline's one seed: set, it is every stage's `seed` (shared/config.py
# pipeline_seed); empty, each stage keeps its own default.
# LOGGER, likewise, is every stage's trackers (shared/trackers.py pipeline_loggers).
ENV_FROM_KNOBS: dict[str, str] = {
    "PROACTIVE_RECIPE": "RECIPE",
    "PROACTIVE_SEED": "SEED",
    "PROACTIVE_LOGGER": "LOGGER",
}
# Tracker servers and credentials reach the stages only through the environment: compose passes
# these through from the shell, Kubernetes from an optional Secret (never the knobs ConfigMap).
TRACKER_ENV = (
    "WANDB_API_KEY",
    "WANDB_BASE_URL",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
)
TRACKER_SECRET = "proactive-rl-trackers"

# Where every stage sees the shared volume (compose: ./data and ./checkpoints mounted there).
WORKDIR = "/workspace"
MOUNTS = ("data", "checkpoints")
UID = 1000  # the images' user (images/base/Dockerfile)


@dataclass(frozen=True)
class Stage:
    name: str
    args: tuple[str, ...]  # fixed arguments, `${KNOB}` references allowed
    extra: tuple[str, ...]  # free-form knobs appended last, split on spaces
    needs: tuple[str, ...] = ()  # stages that must have completed successfully first
    gpus: str | None = None  # "train" or "rollout": whose GPU count (gpu overlay) it gets
    # Indexed pods: the knob that counts them (rollout workers; grpo's nodes, one torchrun agent
    # each). With index_field, each pod gets `--set <index_field>=<its index>`.
    count: str | None = None
    index_field: str | None = None
    # The trainer's side of several rollout workers (compose may not pass it yet: then the
    # stage's default of one worker holds, and the drift test accepts its absence there).
    worker_args: tuple[str, ...] = ()
    # Arguments only Kubernetes adds, from values frozen per overlay (deploy/k8s_shape.py):
    # vLLM spans the GPUs of its pod (compose's recipe: tensor_parallel_size = 2 ROLLOUT_GPUS).
    k8s_args: tuple[str, ...] = ()
    # Limits equal to requests (Guaranteed QoS: evicted last under node memory pressure) for the
    # long-running pair whose loss kills the other; the rest may burst.
    guaranteed: bool = False

    @property
    def image(self) -> str:
        return f"proactive-rl/{self.name}"


RUN_DIR = ("--run-dir", "checkpoints/${RUN_NAME}")
# VLLM_TP: the GPUs of a rollout/eval pod (at least 1), frozen into the JobSet per overlay.
TP_ARGS = ("--set", "vllm.tensor_parallel_size=${VLLM_TP}")

STAGES: tuple[Stage, ...] = (
    Stage(
        "prep",
        ("--data-dir", "data", "--set", "num_sft_samples=${NUM_SFT_SAMPLES}"),
        extra=("PREP_ARGS",),
    ),
    Stage(
        "sft",
        ("--data-dir", "data", *RUN_DIR, "--set", "epochs=${SFT_EPOCHS}")
        + ("--set", "base_model=${BASE_MODEL_PATH}"),
        extra=("RUN_MODE", "SFT_ARGS"),
        needs=("prep",),
        gpus="train",
    ),
    # rollout and grpo run side by side and talk through the run directory.
    Stage(
        "rollout",
        ("--data-dir", "data", *RUN_DIR, "--set", "reward_kwargs.beta=${RL_BETA}"),
        extra=("RUN_MODE", "VERL_ARGS", "ROLLOUT_ARGS"),
        needs=("sft",),
        gpus="rollout",
        count="ROLLOUT_WORKERS",
        index_field="worker",
        k8s_args=TP_ARGS,
        guaranteed=True,
    ),
    # grpo's n is the group size (veRL rollout.n); eval's n is another setting: see SAME_NAME.
    Stage(
        "grpo",
        ("--data-dir", "data", *RUN_DIR, "--set", "n=${RL_ROLLOUTS}")
        + ("--set", "epochs=${RL_EPOCHS}"),
        extra=("RUN_MODE", "VERL_ARGS", "GRPO_ARGS"),
        needs=("sft",),
        gpus="train",
        count="GRPO_NODES",
        worker_args=("--set", "rollout_workers=${ROLLOUT_WORKERS}"),
        guaranteed=True,
    ),
    Stage(
        "eval",
        ("--data-dir", "data", *RUN_DIR),
        extra=("RUN_MODE", "VERL_ARGS", "EVAL_ARGS"),
        needs=("rollout", "grpo"),
        gpus="rollout",
        k8s_args=TP_ARGS,
    ),
)

KNOB_REF = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")
SET_FROM_KNOB = re.compile(r"^([a-z_][a-z0-9_.]*)=\$\{([A-Z_][A-Z0-9_]*)\}$")

# One name, two settings: what each `n` is, for the help texts, the docs and this table.
SAME_NAME: dict[str, str] = {
    "grpo.n": "responses per prompt, the group size (RL_ROLLOUTS; veRL rollout.n)",
    "eval.n": "samples per question (veRL val_kwargs.n), not the group size; no knob sets it "
    "(EVAL_ARGS=--set n=8)",
}


def field_default(stage: str, key: str) -> Any:
    """A stage's default for a dotted key, through nested sections and dict fields alike: the
    value its config class gives when nothing sets it. KeyError when there is no such field.

    >>> field_default("grpo", "n"), field_default("rollout", "reward_kwargs.beta")
    (16, 0.5)
    """
    node: Any = CONFIGS[stage]()
    for part in key.split("."):
        if isinstance(node, BaseModel) and part in type(node).model_fields:
            node = getattr(node, part)
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(f"{stage} has no setting {key!r}")
    return node


def env_value(value: Any) -> str:
    """A default as an env file writes it (`--set` reads it back as JSON, else as a string).

    >>> env_value(0.5), env_value(True), env_value("builtin:tiny"), env_value(None)
    ('0.5', 'true', 'builtin:tiny', '')
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def knob_fields() -> dict[str, tuple[str, str]]:
    """knob -> (stage, field) for every `--set field=${KNOB}` in the table, in table order.

    >>> knob_fields()["RL_ROLLOUTS"]
    ('grpo', 'n')
    """
    fields: dict[str, tuple[str, str]] = {}
    for stage in STAGES:
        for arg in (*stage.args, *stage.worker_args):
            match = SET_FROM_KNOB.match(arg)
            if match:
                fields[match[2]] = (stage.name, match[1])
    return fields


# The knobs that set a stage field, and every knob with its default, in the order of
# compose.yaml's comment, .env.example and the ConfigMap.
KNOB_FIELDS: dict[str, tuple[str, str]] = knob_fields()
KNOBS: dict[str, str] = {
    **RUN_KNOBS,
    **{knob: env_value(field_default(*owner)) for knob, owner in KNOB_FIELDS.items()},
    **ARGS_KNOBS,
}


def compose_form(arg: str) -> str:
    """An argument as compose.yaml writes it: `${KNOB:-default}`.

    >>> compose_form("checkpoints/${RUN_NAME}")
    'checkpoints/${RUN_NAME:-default}'
    """
    return KNOB_REF.sub(lambda m: f"${{{m[1]}:-{KNOBS[m[1]]}}}", arg)


def k8s_form(arg: str) -> str:
    """An argument as the JobSet writes it: `$(KNOB)`, expanded by the kubelet.

    >>> k8s_form("n=${RL_ROLLOUTS}")
    'n=$(RL_ROLLOUTS)'
    """
    return KNOB_REF.sub(lambda m: f"$({m[1]})", arg)


def by_name(name: str) -> Stage:
    return next(stage for stage in STAGES if stage.name == name)


# The preflight (`proactive preflight`, stages/preflight): every stage's settings checked before
# any work, with exactly the arguments each stage's container gets, segments split by `:::`.
# compose: the `preflight` service that prep waits for; Kubernetes: the first replicatedJob.
PREFLIGHT = "preflight"
PREFLIGHT_IMAGE = "proactive-rl/base"
SEGMENT = ":::"


def preflight_segments() -> list[list[str]]:
    """Per stage: its name, its fixed arguments (`${KNOB}` forms) and its extras as `${KNOB}`.
    No worker index: worker 0's settings stand for every worker's."""
    return [
        [stage.name, *stage.args, *stage.worker_args, *(f"${{{k}}}" for k in stage.extra)]
        for stage in STAGES
    ]


# --- Kubernetes sizes: CPU and memory per pod, per stage, per flavour (deploy/k8s_shape.py) ---
# The Kubernetes knobs that change the shape of the JobSet (pods, GPUs per pod): frozen into it
# per overlay by deploy/k8s_shape.py, and checked against the knobs ConfigMap by the preflight.
SHAPE_KNOBS = ("ROLLOUT_WORKERS", "GRPO_NODES", "TRAIN_GPUS_PER_POD", "ROLLOUT_GPUS_PER_POD")

# Per cluster, not per run (deploy/k8s/overlays/<flavour>/cluster.env; read by k8s_gen only, never
# by a pod): the defaults here are the cpu overlay's, a cluster with no special placement.
CLUSTER_KNOBS: dict[str, str] = {
    "FLAVOR": "cpu",  # cpu | cuda: the sizes below, and whether pods request nvidia.com/gpu
    "STORAGE_CLASS": "",  # the claim's storageClassName (RWX); empty = the cluster's default
    "RUNTIME_CLASS": "",  # GPU pods' runtimeClassName (GPU operator: nvidia); empty = default
    "GPU_NODE_LABEL": "",  # GPU pods need a node with this label ...
    "GPU_NODE_VALUE": "",  # ... set to this value (nodeAffinity, operator In)
    "GPU_TAINT": "",  # GPU pods tolerate this taint key (operator Exists, any effect)
    "NCCL_SOCKET_IFNAME": "",  # grpo and sft pods: NCCL's interface (e.g. eth1, ^lo,docker)
    "NCCL_IB_HCA": "",  # grpo and sft pods: NCCL's InfiniBand HCAs (e.g. mlx5)
    "RDMA_RESOURCE": "",  # grpo pods request one of this device-plugin resource (RDMA)
}


@dataclass(frozen=True)
class Size:
    """What one pod of a stage asks for, as a function of its GPUs and of the pods it spans."""

    cpu: float  # cores, fixed part
    memory_gi: float  # host RAM, fixed part
    cpu_per_gpu: float = 0
    memory_per_gpu_gi: float = 0
    # Host RAM the stage's pods share out (ZeRO-3 partitions the offloaded optimizer state).
    shared_gi: float = 0


# /dev/shm (an in-memory emptyDir, charged to the pod's memory: added to its request): NCCL's
# intra-node buffers and vLLM's tensor-parallel message queue live there; 1 Gi for CPU runs
# (compose: shm_size 1gb).
SHM_GI_PER_GPU = 4
SHM_MIN_GI = 1

# The demo (cpu overlay, SmolLM2-135M, scripts/demo.env): a few cores. fp32 weights 0.5 GB, Adam
# state 1.6 GB, activations at 384 tokens: 4 Gi per training pod; vLLM's CPU build reserves its
# 1 GiB KV cache (engine/generation.py) beside the weights and its engine process: 6 Gi.
DEMO_SIZES: dict[str, Size] = {
    PREFLIGHT: Size(cpu=0.5, memory_gi=1),
    "prep": Size(cpu=1, memory_gi=1),
    "sft": Size(cpu=2, memory_gi=4),
    "rollout": Size(cpu=2, memory_gi=6),
    "grpo": Size(cpu=2, memory_gi=4),
    "eval": Size(cpu=2, memory_gi=6),
    "workspace": Size(cpu=0.25, memory_gi=1),
}

# The Qwen3-8B recipe (gpu overlay), 8.2e9 parameters, ZeRO-3, sized so that `cpu_offload=true`
# fits: the offloaded optimizer state is fp32 master weights + Adam m and v = 12 B x 8.2e9 =
# 98 GB, partitioned over every rank of every pod (shared_gi / GRPO_NODES per pod). Each rank
# loads the bf16 weights on the CPU before ZeRO-3 partitions them (16.4 GB: 16 Gi per GPU), and
# grpo's rank 0 gathers a full bf16 copy to publish each policy (+16 Gi fixed). With 2 GPUs per
# pod: sft 8 + 2x16 + 98 = 138 Gi, grpo 24 + 2x16 + 98 = 154 Gi (+ /dev/shm 8 Gi each). vLLM
# (rollout, eval) keeps the weights on the GPU; host RAM holds its swap space (4 GiB per GPU),
# a process per tensor-parallel rank and the page cache of each new policy (16 GB read per
# version): 8 + 12 per GPU = 32 Gi (+ 8 Gi /dev/shm). DeepSpeed's CPU Adam and the tokenizers
# want cores: 4 per training GPU.
QWEN3_8B_SIZES: dict[str, Size] = {
    PREFLIGHT: Size(cpu=1, memory_gi=4),  # imports torch, reads the model's config
    "prep": Size(cpu=2, memory_gi=4),
    "sft": Size(cpu=2, memory_gi=8, cpu_per_gpu=4, memory_per_gpu_gi=16, shared_gi=98),
    "rollout": Size(cpu=2, memory_gi=8, cpu_per_gpu=2, memory_per_gpu_gi=12),
    "grpo": Size(cpu=2, memory_gi=24, cpu_per_gpu=4, memory_per_gpu_gi=16, shared_gi=98),
    "eval": Size(cpu=2, memory_gi=8, cpu_per_gpu=2, memory_per_gpu_gi=12),
    "workspace": Size(cpu=0.5, memory_gi=2),  # tensorboard over every run's logs
}

SIZES: dict[str, dict[str, Size]] = {"cpu": DEMO_SIZES, "cuda": QWEN3_8B_SIZES}
