"""The GRPO learning-rate schedule and critic warm-up, counted in RL steps as veRL 0.9.1 counts
them for its actor: the scheduler steps once after an RL step's last update (every mini-batch
and PPO epoch of RL step k trains at the rate of step k, whatever their number), warm-up and
cosine span the run's RL steps, and an RL step without an actor update does not advance it."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch

from proactive_rl.stages.grpo.config import GrpoConfig

logger = logging.getLogger(__name__)


def warmup_rl_steps(config: GrpoConfig, total_steps: int) -> int:
    """RL steps of linear warm-up: warmup_steps when positive, else the ratio of the run's
    steps, truncated to whole steps (veRL's lr_warmup_steps <= 0 defers to the ratio)."""
    if config.warmup_steps > 0:
        return config.warmup_steps
    return int(config.warmup_ratio * total_steps)


def lr_lambda(config: GrpoConfig, total_steps: int) -> Callable[[int], float]:
    """The factor of learning_rate after `k` actor updates (= RL steps that updated the actor).
    Warm-up rises from 0 (step 0 trains at rate 0 when there is a warm-up, as in veRL)."""
    warmup = warmup_rl_steps(config, total_steps)
    floor = config.min_lr_ratio
    cycles = config.num_cycles

    def constant(k: int) -> float:
        return k / max(1, warmup) if k < warmup else 1.0

    def cosine(k: int) -> float:
        if k < warmup:
            return k / max(1, warmup)
        progress = (k - warmup) / max(1, total_steps - warmup)
        wave = math.cos(math.pi * cycles * 2.0 * progress)
        # the wave swings between floor and 1; past one half-cycle it never dips below floor
        return max(floor, wave * (1 - floor) * 0.5 + (1 + floor) * 0.5)

    return constant if config.lr_scheduler == "constant" else cosine


def updates_actor(config: GrpoConfig, step: int) -> bool:
    """Whether 0-based RL step `step` updates the actor. veRL skips the update while
    trainer.critic_warmup > its 1-based global step, so critic_warmup=N leaves the first N-1
    RL steps without one (0 and 1: none)."""
    return step + 1 >= config.critic_warmup


def actor_updates_before(config: GrpoConfig, step: int) -> int:
    """Actor updates (= scheduler steps) made by RL steps 0..step-1."""
    return max(0, step - max(0, config.critic_warmup - 1))


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: GrpoConfig, total_steps: int, updates: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule placed after `updates` actor updates, at the peak rate config.learning_rate
    (a state loaded into the optimizer may carry another one)."""
    for group in optimizer.param_groups:
        group["initial_lr"] = config.learning_rate
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(config, total_steps), last_epoch=updates - 1
    )


def resume_scheduler(
    optimizer: torch.optim.Optimizer,
    loaded: torch.optim.lr_scheduler.LambdaLR,
    config: GrpoConfig,
    total_steps: int,
    start_step: int,
) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule at RL step `start_step`. The rate is a function of the step alone, so it is
    set from the step rather than trusted from the state file: exact after a resume with or
    without an optimizer state, and for a state saved when the schedule counted mini-batches."""
    updates = actor_updates_before(config, start_step)
    if loaded.last_epoch not in (0, updates):
        logger.warning(
            "the optimizer state's learning-rate schedule was at update %d, not at %d (the "
            "actor updates before RL step %d): a state from before the schedule counted RL "
            "steps; the rate follows RL step %d",
            loaded.last_epoch,
            updates,
            start_step,
            start_step,
        )
    return build_scheduler(optimizer, config, total_steps, updates)


def describe_schedule(config: GrpoConfig, total_steps: int) -> str:
    """One log line: the schedule as it will run, with what would surprise a veRL user."""
    warmup = warmup_rl_steps(config, total_steps)
    skipped = min(total_steps, max(0, config.critic_warmup - 1))
    text = (
        f"learning rate: {config.lr_scheduler}, peak {config.learning_rate:g}, warm-up {warmup} "
        f"of {total_steps} RL steps"
    )
    if config.lr_scheduler == "cosine":
        text += f", floor {config.min_lr_ratio:g} x peak, {config.num_cycles:g} cycles"
    if skipped:
        text += f"; critic_warmup={config.critic_warmup}: RL steps 1-{skipped} do not update"
    if warmup >= total_steps - skipped > 0:
        text += " (warm-up outlasts the run: the peak rate is never reached)"
    if skipped >= total_steps:
        text += " (no RL step updates the actor)"
    return text
