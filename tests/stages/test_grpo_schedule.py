"""train_step on the real tiny model follows the schedule in RL steps, as veRL's actor does:
every update of RL step k trains at step k's rate whatever the mini-batch and PPO-epoch count
(a 10-step warm-up is 10 RL steps), and a critic warm-up step updates nothing and holds the
schedule. The rates themselves are compared with veRL's scheduler in tests/verl."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from proactive_rl.stages.grpo.config import GrpoConfig, LossConfig
from proactive_rl.stages.grpo.schedule import build_scheduler, updates_actor
from proactive_rl.stages.grpo.update import train_step
from tests.stages.test_grpo_parallel import N, rollout_rows

CPU = torch.device("cpu")
PEAK = 1e-3
GROUPS = 4


def settings(**fields) -> GrpoConfig:
    loss = LossConfig(kl_coef=0.0, is_correction="none")
    return GrpoConfig(n=N, micro_batch_size=8, learning_rate=PEAK, loss=loss, **fields)


def run_steps(tiny_model, config: GrpoConfig, steps: int):
    """Train `steps` RL steps on the same rollouts; per step: the rate of each optimizer update,
    the step's stats, and whether any weight changed."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    scheduler = build_scheduler(optimizer, config, steps)
    rates: list[list[float]] = []
    optimizer.register_step_pre_hook(lambda opt, *_: rates[-1].append(opt.param_groups[0]["lr"]))
    rows = rollout_rows(model.config.vocab_size, groups=GROUPS)
    record = []
    for step in range(steps):
        rates.append([])
        before = [p.detach().clone() for p in model.parameters()]
        stats = train_step(
            model, None, optimizer, scheduler, rows, config, 1.0, 8, CPU, N,
            update_actor=updates_actor(config, step),
        )  # fmt: skip
        moved = any(not torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
        record.append((rates[-1], stats, moved))
    return record, optimizer


def test_a_warmup_of_10_rl_steps_is_10_rl_steps_at_any_mini_batch_count(tiny_model):
    steps = 12
    one, _ = run_steps(tiny_model, settings(mini_batch_prompts=GROUPS, warmup_steps=10), steps)
    # 4 mini-batches of one group, 2 PPO epochs: 8 optimizer updates per RL step
    eight, _ = run_steps(
        tiny_model, settings(mini_batch_prompts=1, ppo_epochs=2, warmup_steps=10), steps
    )
    assert [len(r) for r, _, _ in one] == [1] * steps
    assert [len(r) for r, _, _ in eight] == [8] * steps
    per_step = [r[0] for r, _, _ in one]
    assert [r for r, _, _ in eight] == [[rate] * 8 for rate in per_step]
    assert [s["opt/lr"] for _, s, _ in one] == per_step  # logged: the rate the step used
    warmup = [k / 10 * PEAK for k in range(10)]  # from 0, as veRL: step 0 trains at rate 0
    assert per_step[:10] == pytest.approx(warmup, rel=1e-12, abs=1e-18)
    floor = 0.1  # the default min_lr_ratio, cosine over the 2 RL steps after the warm-up
    assert per_step[10:] == pytest.approx(
        [PEAK, PEAK * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * 0.5)))], rel=1e-12
    )


def test_critic_warmup_steps_update_nothing_and_hold_the_schedule(tiny_model):
    config = settings(mini_batch_prompts=2, critic_warmup=3)
    record, _ = run_steps(tiny_model, config, 5)
    moved = [m for _, _, m in record]
    assert moved == [False, False, True, True, True]  # veRL: steps 1 and 2 of critic_warmup=3
    assert [s["opt/updates"] for _, s, _ in record] == [0, 0, 2, 2, 2]
    assert [len(r) for r, _, _ in record] == [0, 0, 2, 2, 2]  # no optimizer step at all
    assert all(math.isnan(s["opt/grad_norm"]) for _, s, _ in record[:2])
    assert all(s["reward/mean"] == record[2][1]["reward/mean"] for _, s, _ in record[:2])
    # the first update trains at the schedule's first rate (cosine over 5 RL steps, no warm-up)
    rates = [r[0] for r, _, _ in record[2:]]
    factors = [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / 5)) for k in range(3)]
    assert rates == pytest.approx([PEAK * f for f in factors], rel=1e-12)
