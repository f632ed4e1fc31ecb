"""Where a GRPO run starts: the starting model (policy version 0), a fresh plan for the run's
settings, and the policies an earlier run published under its plan (what --resume continues
from). `Start` is rank 0's decision, which every process follows."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from proactive_rl.engine.model_checks import check_model_folder
from proactive_rl.engine.models import resolve_base_model
from proactive_rl.shared.errors import UserError
from proactive_rl.shared.paths import EPOCH_RE, RunPaths, numbered_children
from proactive_rl.shared.publish import VERIFIED, is_stable, published, read_marker, verify
from proactive_rl.shared.schedule import Plan
from proactive_rl.stages.grpo.config import GrpoConfig


@dataclass(frozen=True)
class Start:
    """Where the run starts, as rank 0 decided it for every process."""

    init_dir: Path  # the starting model: policy version 0, the KL reference, LoRA's base
    plan: Plan
    step: int  # the first RL step to train: 0, or on --resume the newest policy's version
    folder: Path  # the weights that step trains from: init_dir, or that newest policy


def resolve_init_model(spec: str, paths: RunPaths) -> Path:
    """The starting model's folder: the newest published SFT epoch (checked) for "sft", else
    the base model `spec` names (a built-in one is built under the run directory, once)."""
    if spec == "sft":
        epochs = [f for _, f in published(paths.sft, EPOCH_RE)]
        if not epochs:
            raise UserError(
                f"init_model='sft' but {paths.sft} holds no published epoch: run `proactive sft` "
                "first, or set init_model to a model folder (or builtin:tiny) to skip SFT"
            )
        verify(
            epochs[-1],
            "Run `proactive sft --clean` to publish the SFT epochs again",
            cache=VERIFIED,
        )
        check_model_folder(epochs[-1], "run `proactive sft --clean` to publish them again")
        return epochs[-1]
    return resolve_base_model(spec, paths.base_models)


def versions_of(paths: RunPaths, plan: Plan) -> list[int]:
    """The policy versions published under `plan`."""
    return [
        v
        for v, f in numbered_children(paths.policies)
        if is_stable(f) and read_marker(f).get("plan_id") == plan.plan_id
    ]


def new_plan(config: GrpoConfig, train_rows: int, train_sha: str) -> Plan:
    """A fresh plan for this run's settings over the train split, checked to be followable."""
    plan = Plan(
        plan_id=uuid.uuid4().hex[:12],
        train_rows=train_rows,
        train_sha256=train_sha,
        prompts_per_step=config.prompts_per_step,
        n=config.n,
        epochs=config.epochs,
        seed=config.seed,
        max_staleness=config.max_staleness,
        max_steps=config.max_steps,
        max_prompts=config.max_prompts,
        rollout_workers=config.rollout_workers,
    )
    if plan.total_steps == 0:
        raise UserError("the plan has no steps: the train split is empty")
    if plan.rollout_workers > plan.batch:
        raise UserError(
            f"rollout_workers={plan.rollout_workers} is more than the {plan.batch} prompts of a "
            "step: every rollout worker needs at least one prompt a step; use fewer workers or "
            "a larger prompts_per_step"
        )
    return plan
