"""Our GRPO learning rate per RL step equals veRL's own actor schedule: the scheduler that veRL's
FSDP engine builds from its optimizer config (FSDPEngine._build_lr_scheduler, called as it is,
warm-up resolution included), stepped once per RL step as veRL's actor worker steps it (after a
step's last mini-batch), against ours (proactive_rl.stages.grpo.schedule). That train_step steps
ours once per RL step at any mini-batch count is tests/stages/test_grpo_schedule.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from verl.workers.config import FSDPOptimizerConfig
from verl.workers.engine.fsdp.transformer_impl import FSDPEngine

from proactive_rl.stages.grpo.config import GrpoConfig
from proactive_rl.stages.grpo.schedule import build_scheduler, resume_scheduler

LR = 1e-6

# (our GrpoConfig fields, veRL's actor_rollout_ref.actor.optim keys, total RL steps)
CASES = [
    ({"lr_scheduler": "constant"}, {"lr_scheduler_type": "constant"}, 20),
    ({"lr_scheduler": "constant", "warmup_steps": 10}, {"lr_warmup_steps": 10}, 25),
    # int(0.29 * 100) = 28: both truncate the same float
    ({"lr_scheduler": "constant", "warmup_ratio": 0.29}, {"lr_warmup_steps_ratio": 0.29}, 100),
    (
        {"lr_scheduler": "cosine", "warmup_steps": 10, "min_lr_ratio": 0.1},
        {"lr_scheduler_type": "cosine", "lr_warmup_steps": 10, "min_lr_ratio": 0.1},
        40,
    ),
    (
        {"lr_scheduler": "cosine", "warmup_ratio": 0.1, "min_lr_ratio": 0.0},
        {"warmup_style": "cosine", "lr_warmup_steps_ratio": 0.1, "min_lr_ratio": 0.0},
        57,
    ),
    # a whole cycle: down to the floor and up again
    (
        {"lr_scheduler": "cosine", "num_cycles": 1.0, "min_lr_ratio": 0.2},
        {"lr_scheduler_type": "cosine", "num_cycles": 1.0, "min_lr_ratio": 0.2},
        31,
    ),
    # warm-up steps win over the ratio; 0 steps defer to the ratio
    (
        {"lr_scheduler": "cosine", "warmup_steps": 3, "warmup_ratio": 0.5, "min_lr_ratio": 0.1},
        {
            "lr_scheduler_type": "cosine",
            "lr_warmup_steps": 3,
            "lr_warmup_steps_ratio": 0.5,
            "min_lr_ratio": 0.1,
        },
        16,
    ),
    (
        {"lr_scheduler": "cosine", "warmup_steps": 0, "warmup_ratio": 0.2, "min_lr_ratio": 0.0},
        {"lr_scheduler_type": "cosine", "lr_warmup_steps": 0, "lr_warmup_steps_ratio": 0.2},
        33,
    ),
    # a warm-up longer than the run
    (
        {"lr_scheduler": "cosine", "warmup_steps": 12, "min_lr_ratio": 0.3},
        {"lr_scheduler_type": "cosine", "lr_warmup_steps": 12, "min_lr_ratio": 0.3},
        8,
    ),
]


def one_weight_optimizer() -> torch.optim.Optimizer:
    weight = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    return torch.optim.AdamW([weight], lr=LR)


def rates_per_rl_step(optimizer, scheduler, steps: int) -> list[float]:
    """The rate every update of RL step k uses, k = 0..steps-1, stepping once per RL step."""
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def verl_rates(optim: dict, total: int) -> list[float]:
    config = FSDPOptimizerConfig(lr=LR, total_training_steps=total, **optim)
    optimizer = one_weight_optimizer()
    engine = SimpleNamespace(optimizer_config=config, rank=1)  # rank 1: veRL prints on rank 0
    scheduler = FSDPEngine._build_lr_scheduler(engine, optimizer)
    return rates_per_rl_step(optimizer, scheduler, total)


def our_rates(fields: dict, total: int) -> list[float]:
    optimizer = one_weight_optimizer()
    scheduler = build_scheduler(optimizer, GrpoConfig(learning_rate=LR, **fields), total)
    return rates_per_rl_step(optimizer, scheduler, total)


@pytest.mark.parametrize(("ours", "verl", "total"), CASES)
def test_the_rate_of_every_rl_step_is_verls(ours, verl, total):
    theirs = verl_rates(verl, total)
    assert len(set(theirs)) > 1 or verl == {"lr_scheduler_type": "constant"}  # a real schedule
    assert our_rates(ours, total) == pytest.approx(theirs, rel=1e-12, abs=1e-12 * LR)


@pytest.mark.parametrize(("ours", "verl", "total"), CASES[3:6])
def test_a_resumed_run_trains_at_verls_rate_of_that_step(ours, verl, total):
    """veRL restores its scheduler from the checkpoint; ours is placed by the RL step."""
    theirs = verl_rates(verl, total)
    config = GrpoConfig(learning_rate=LR, **ours)
    for step in (1, total // 2, total - 1):
        optimizer = one_weight_optimizer()
        fresh = build_scheduler(optimizer, config, total)
        resumed = resume_scheduler(optimizer, fresh, config, total, step)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(theirs[step], rel=1e-12)
        assert resumed.get_last_lr()[0] == optimizer.param_groups[0]["lr"]


def test_defaults_are_verls_but_the_recipes_floor():
    """Warm-up and cycles are veRL's defaults; the schedule and its floor are the recipe's
    (min lr 1e-7 under lr 1e-6), a documented difference: veRL's default is constant."""
    theirs, ours = FSDPOptimizerConfig(lr=LR), GrpoConfig()
    assert (ours.warmup_steps, ours.warmup_ratio, ours.num_cycles) == (
        theirs.lr_warmup_steps,
        theirs.lr_warmup_steps_ratio,
        theirs.num_cycles,
    )
    assert (theirs.lr_scheduler_type, theirs.min_lr_ratio) == ("constant", None)
    assert (ours.lr_scheduler, ours.min_lr_ratio) == ("cosine", 0.1)
    assert theirs.zero_indexed_step  # the only step indexing ours has
