"""The pipeline's stages as one table: what compose.yaml runs and what deploy/k8s runs.

One source of truth for each stage's command and knobs. `deploy/k8s_gen.py` (run by
`make k8s-render`) writes the Kubernetes base from it (deploy/k8s/base/jobset.yaml, knobs.env,
deploy/k8s/components/counts); tests/deploy/test_k8s.py fails when compose.yaml, the committed
base or the rendered manifests say anything else. Change a stage here first, then compose.yaml,
then `make k8s-render`.

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
RUN_KNOBS: dict[str, str] = {"RUN_NAME": "default", "RUN_MODE": "", "RECIPE": "", "SEED": ""}
ARGS_KNOBS: dict[str, str] = {
    "VERL_ARGS": "",
    "PREP_ARGS": "",
    "SFT_ARGS": "",
    "ROLLOUT_ARGS": "",
    "GRPO_ARGS": "",
    "EVAL_ARGS": "",
}

# Knobs only Kubernetes has: how many nodes grpo trains on (one torchrun agent per pod) and how
# many GPUs each pod asks for (the gpu overlay). compose's TRAIN_GPUS/ROLLOUT_GPUS are device
# lists of one host; these are counts per pod.
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
}

# Environment the stages read, set from a knob (compose: `environment:` of the x-stage anchor).
# SEED is the pipeline's one seed: set, it is every stage's `seed` (shared/config.py
# pipeline_seed); empty, each stage keeps its own default.
ENV_FROM_KNOBS: dict[str, str] = {"PROACTIVE_RECIPE": "RECIPE", "PROACTIVE_SEED": "SEED"}

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

    @property
    def image(self) -> str:
        return f"proactive-rl/{self.name}"


RUN_DIR = ("--run-dir", "checkpoints/${RUN_NAME}")

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
    ),
    Stage(
        "eval",
        ("--data-dir", "data", *RUN_DIR),
        extra=("RUN_MODE", "VERL_ARGS", "EVAL_ARGS"),
        needs=("rollout", "grpo"),
        gpus="rollout",
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
