"""The GRPO schedule in RL steps (stages/grpo/schedule.py): how the warm-up resolves, which
steps veRL's critic warm-up leaves without an update, and a resume placing the rate by the RL
step whatever the state file says. Parity with veRL's own scheduler: tests/verl."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from pydantic import ValidationError

from proactive_rl.stages.grpo.config import GrpoConfig
from proactive_rl.stages.grpo.schedule import (
    actor_updates_before,
    build_scheduler,
    describe_schedule,
    lr_lambda,
    resume_scheduler,
    updates_actor,
    warmup_rl_steps,
)


@pytest.mark.parametrize(
    ("fields", "total", "expected"),
    [
        ({}, 100, 0),  # veRL's defaults: -1 steps, ratio 0
        ({"warmup_steps": 10, "warmup_ratio": 0.5}, 100, 10),  # steps win
        ({"warmup_steps": 0, "warmup_ratio": 0.1}, 55, 5),  # 0 defers to the ratio
        ({"warmup_ratio": 0.29}, 100, 28),  # int(28.999999999999996): truncated, as veRL
    ],
)
def test_the_warmup_resolves_to_whole_rl_steps(fields, total, expected):
    assert warmup_rl_steps(GrpoConfig(**fields), total) == expected


def test_warmup_rises_from_zero_then_cosine_falls_to_the_floor():
    factor = lr_lambda(GrpoConfig(warmup_steps=4, min_lr_ratio=0.1), 14)
    assert [factor(k) for k in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert factor(9) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert factor(14) == pytest.approx(0.1)
    constant = lr_lambda(GrpoConfig(lr_scheduler="constant", warmup_steps=2), 14)
    assert [constant(k) for k in (0, 1, 2, 13)] == [0.0, 0.5, 1.0, 1.0]


@pytest.mark.parametrize(
    ("critic_warmup", "updates", "before"),
    [
        (0, [True] * 5, [0, 1, 2, 3, 4, 5]),
        (1, [True] * 5, [0, 1, 2, 3, 4, 5]),
        # veRL counts steps from 1 and updates once critic_warmup <= step: 2 steps skipped
        (3, [False, False, True, True, True], [0, 0, 0, 1, 2, 3]),
    ],
)
def test_critic_warmup_skips_the_first_n_minus_1_rl_steps(critic_warmup, updates, before):
    config = GrpoConfig(critic_warmup=critic_warmup)
    assert [updates_actor(config, step) for step in range(5)] == updates
    assert [actor_updates_before(config, step) for step in range(6)] == before


def trained(config: GrpoConfig, total: int, rl_steps: int, per_step: int):
    """An optimizer and its schedule after `rl_steps` RL steps of `per_step` updates each."""
    optimizer = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=config.learning_rate)
    scheduler = build_scheduler(optimizer, config, total)
    for step in range(rl_steps):
        for _ in range(per_step if updates_actor(config, step) else 0):
            optimizer.step()
        if updates_actor(config, step):
            scheduler.step()
    return optimizer, scheduler


@pytest.mark.parametrize("critic_warmup", [0, 3])
def test_a_resume_trains_on_at_the_rate_of_the_uninterrupted_run(critic_warmup, caplog):
    config = GrpoConfig(learning_rate=1e-3, warmup_steps=3, critic_warmup=critic_warmup)
    straight, straight_sched = trained(config, 12, 7, per_step=4)
    optimizer, loaded = trained(config, 12, 0, per_step=4)
    optimizer.load_state_dict(straight.state_dict())
    loaded.load_state_dict(straight_sched.state_dict())
    with caplog.at_level(logging.WARNING):
        resumed = resume_scheduler(optimizer, loaded, config, 12, 7)
    assert not caplog.records
    assert resumed.last_epoch == straight_sched.last_epoch
    assert resumed.get_last_lr() == straight_sched.get_last_lr()
    assert optimizer.param_groups[0]["lr"] == straight.param_groups[0]["lr"]
    for _ in range(3):  # and it goes on alike
        optimizer.step()
        straight.step()
        straight_sched.step()
        resumed.step()
        assert resumed.get_last_lr() == straight_sched.get_last_lr()


def test_a_resume_without_state_or_from_a_mini_batch_count_follows_the_rl_step(caplog):
    config = GrpoConfig(learning_rate=1e-3, warmup_steps=3)
    _, straight = trained(config, 12, 5, per_step=4)
    optimizer, fresh = trained(config, 12, 0, per_step=4)  # no state file: a fresh optimizer
    assert resume_scheduler(optimizer, fresh, config, 12, 5).get_last_lr() == (
        straight.get_last_lr()
    )
    assert not caplog.records
    # a state saved when the schedule stepped per mini-batch: 5 RL steps x 4 updates
    optimizer, old = trained(config, 12, 0, per_step=4)
    old.last_epoch = 20
    with caplog.at_level(logging.WARNING):
        resumed = resume_scheduler(optimizer, old, config, 12, 5)
    assert resumed.get_last_lr() == straight.get_last_lr()
    assert optimizer.param_groups[0]["lr"] == straight.get_last_lr()[0]
    assert "was at update 20, not at 5" in caplog.text


@pytest.mark.parametrize(
    "fields",
    [
        {"warmup_steps": -2},
        {"warmup_ratio": 1.5},
        {"min_lr_ratio": 1.5},
        {"min_lr_ratio": -0.1},
        {"num_cycles": -1.0},
        {"lr_scheduler": "linear"},  # veRL's FSDP actor has constant and cosine only
        {"critic_warmup": -1},
        {"min_learning_rate": 1e-7},  # replaced by min_lr_ratio: refused, not ignored
    ],
)
def test_out_of_range_schedule_settings_are_refused(fields):
    with pytest.raises(ValidationError):
        GrpoConfig(**fields)


def test_the_log_line_says_what_would_surprise():
    line = describe_schedule(GrpoConfig(warmup_steps=10, critic_warmup=3), 8)
    assert "warm-up 10 of 8 RL steps" in line
    assert "RL steps 1-2 do not update" in line
    assert "the peak rate is never reached" in line
    assert "no RL step" in describe_schedule(GrpoConfig(critic_warmup=9), 8)
