"""A run driven by veRL's own keys, as a user's launch script writes them: grpo and rollout take
the mapped values (visible in their saved configs and in what they produce), each leaving the
other's keys alone, so one VERL_ARGS line can go to both."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from proactive_rl.shared.paths import RunPaths
from proactive_rl.shared.schemas import ROLLOUTS, read_table
from tests.conftest import proactive, start

REWARD = """
def score(prompt_str, responses, ground_truths, data_sources, extra_infos, scale=1.0, **_):
    return [scale * len(r) / 100.0 for r in responses]
"""


@pytest.mark.slow
def test_grpo_and_rollout_take_verl_keys(workdir, tiny_model):
    proactive("prep", "--set", "max_rl_rows=8", "--set", "test_fraction=0.25", cwd=workdir)
    (workdir / "reward.py").write_text(REWARD)
    run_dir = workdir / "checkpoints" / "verl"
    verl = [
        f"actor_rollout_ref.model.path={tiny_model}",
        "actor_rollout_ref.rollout.n=3",
        "data.train_batch_size=2",
        "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        "trainer.total_training_steps=1",
        "actor_rollout_ref.actor.optim.lr=2e-4",
        "actor_rollout_ref.actor.kl_loss_type=mse",
        "custom_reward_function.path=reward.py",
        "custom_reward_function.name=score",
        "custom_reward_function.reward_kwargs.scale=3",
        "data.max_response_length=10",
        "trainer.logger=['console','tensorboard']",
    ]
    args = [a for key in verl for a in ("--set", key)]
    common = ("--run-dir", str(run_dir))
    grpo = start("grpo", *common, *args, cwd=workdir)
    rollout = start("rollout", *common, *args, cwd=workdir)
    with ThreadPoolExecutor(2) as pool:
        out_g, out_r = pool.map(lambda p: p.communicate(timeout=600)[0], (grpo, rollout))
    assert grpo.returncode == 0, out_g
    assert rollout.returncode == 0, out_r

    paths = RunPaths(run_dir)
    saved_grpo = json.loads(paths.config("grpo").read_text())
    assert (saved_grpo["n"], saved_grpo["prompts_per_step"], saved_grpo["max_steps"]) == (3, 2, 1)
    assert (saved_grpo["learning_rate"], saved_grpo["loss"]["kl_type"]) == (2e-4, "k2")
    assert saved_grpo["init_model"] == str(tiny_model)
    saved_rollout = json.loads(paths.config("rollout").read_text())
    assert saved_rollout["reward"] == "reward.py:score"
    assert saved_rollout["reward_kwargs"]["scale"] == 3
    assert saved_rollout["sampling"]["max_new_tokens"] == 10
    # what they produced follows: groups of 3, rewards of the user's function at scale 3
    table = read_table(paths.rollout_file(0), ROLLOUTS)
    rows = table.to_pylist()
    assert len(rows) == 2 * 3
    for row in rows:
        assert row["reward"] == pytest.approx(3 * len(row["response_text"]) / 100.0)
    assert "has no effect here" in out_g  # trainer.logger: a warning, not an error
