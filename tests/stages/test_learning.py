"""GRPO learns: the real rollout and trainer workers, on the tiny model, on a toy reward the
model can learn (digits in the answer), raise the mean reward clearly, on-policy and one step
off-policy."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import REPO, proactive, start

DIGIT_REWARD = """
def digit_reward(prompt_str, responses, ground_truths, data_sources, extra_infos):
    return [sum(c.isdigit() for c in r) / 8.0 for r in responses]
"""


@pytest.mark.slow
@pytest.mark.parametrize("max_staleness", [0, 1])
def test_mean_reward_rises(tmp_path, tiny_model, max_staleness):
    shutil.copytree(REPO / "data" / "sample", tmp_path / "data" / "sample")
    (tmp_path / "reward.py").write_text(DIGIT_REWARD)
    proactive("prep", "--set", "max_rl_rows=64", "--set", "test_fraction=0.1", cwd=tmp_path)
    run = ["--run-dir", "run"]
    grpo = start(
        "grpo", *run, "--set", f"init_model={tiny_model}", "--set", "epochs=2",
        "--set", "prompts_per_step=4", "--set", "n=8", "--set", "mini_batch_prompts=4",
        "--set", "micro_batch_size=32", "--set", "learning_rate=1e-2",
        "--set", "lr_scheduler=constant", "--set", f"max_staleness={max_staleness}",
        "--set", "loss.is_correction=token",
        cwd=tmp_path,
    )  # fmt: skip
    rollout = start(
        "rollout", *run, "--set", "reward=reward.py:digit_reward", "--set", "reward_kwargs={}",
        "--set", "sampling.max_new_tokens=8", "--set", "num_examine=0", cwd=tmp_path,
    )  # fmt: skip
    out_r, _ = rollout.communicate(timeout=900)
    out_g, _ = grpo.communicate(timeout=900)
    assert rollout.returncode == 0, out_r
    assert grpo.returncode == 0, out_g

    metrics = [
        json.loads(line)
        for line in (tmp_path / "run/logs/grpo/metrics.jsonl").read_text().splitlines()
    ]
    rewards = [m["reward/mean"] for m in metrics]
    assert len(rewards) == 28  # 57 train rows // 4 prompts = 14 steps per epoch, 2 epochs
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 0.15, rewards
    lags = [m["rollout/policy_lag"] for m in metrics]
    assert max(lags) <= max_staleness
    if max_staleness == 1:
        # overlap happened: some steps trained on rollouts of the previous policy, and the
        # importance weights saw a sampler that differs from the policy being updated
        assert max(lags) == 1
        assert any(m["is/weight_min"] < 0.999 or m["is/weight_max"] > 1.001 for m in metrics)
