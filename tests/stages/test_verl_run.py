"""A run driven by veRL's own keys, as a user pastes them: the users' recipe's whole override list
(tests/fixtures/verl/recipe_grpo.txt) goes to grpo, rollout and eval, followed by a few keys that
shrink it to the tiny model (veRL keys too: later overrides win, as in Hydra). Every stage starts
with no error, the saved configs show the mapped values, and what the stages produce follows:
the user's reward file and its kwargs, groups of n."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from proactive_rl.shared.paths import RunPaths
from proactive_rl.shared.schemas import ROLLOUTS, read_table
from tests.conftest import proactive, start
from tests.unit.test_verl_fixtures import fixture_lines

# veRL's reward signature (custom_reward_function.name defaults to compute_score)
REWARD = """
def compute_score(prompt_str, responses, ground_truths, data_sources, extra_infos, beta=0.8, **_):
    return [beta * len(r) / 100.0 for r in responses]
"""

SMALL = [
    "actor_rollout_ref.rollout.n=3",
    "data.train_batch_size=2",
    "actor_rollout_ref.actor.ppo_mini_batch_size=2",
    "trainer.total_training_steps=1",
    "actor_rollout_ref.actor.optim.lr=2e-4",
    "actor_rollout_ref.actor.kl_loss_type=mse",
    "actor_rollout_ref.model.enable_gradient_checkpointing=False",
    "actor_rollout_ref.rollout.name=hf",
    "data.max_response_length=10",
    "custom_reward_function.reward_kwargs.beta=3",
]


@pytest.mark.slow
def test_the_recipes_verl_keys_run_every_rl_stage(workdir, tiny_model):
    proactive("prep", "--set", "max_rl_rows=8", "--set", "test_fraction=0.25", cwd=workdir)
    (workdir / "reward.py").write_text(REWARD)
    run_dir = workdir / "checkpoints" / "verl"
    lines = fixture_lines("recipe_grpo.txt", CHECKPOINT=str(tiny_model), REWARD_FILE="reward.py")
    args = [a for key in lines + SMALL for a in ("--set", key)]
    common = ("--run-dir", str(run_dir))
    grpo = start("grpo", *common, *args, cwd=workdir)
    rollout = start("rollout", *common, *args, cwd=workdir)
    with ThreadPoolExecutor(2) as pool:
        out_g, out_r = pool.map(lambda p: p.communicate(timeout=600)[0], (grpo, rollout))
    assert grpo.returncode == 0, out_g
    assert rollout.returncode == 0, out_r
    evaluation = proactive(
        "eval", *common, *args, "--set", "checkpoints=final", "--set", "n=2", cwd=workdir
    )

    paths = RunPaths(run_dir)
    saved_grpo = json.loads(paths.config("grpo").read_text())
    assert (saved_grpo["n"], saved_grpo["prompts_per_step"], saved_grpo["max_steps"]) == (3, 2, 1)
    assert (saved_grpo["learning_rate"], saved_grpo["loss"]["kl_type"]) == (2e-4, "mse")
    assert (saved_grpo["min_lr_ratio"], saved_grpo["lr_scheduler"]) == (0.1, "cosine")
    assert (saved_grpo["micro_batch_size"], saved_grpo["epochs"]) == (4, 10)
    assert saved_grpo["init_model"] == str(tiny_model)
    saved_rollout = json.loads(paths.config("rollout").read_text())
    assert saved_rollout["reward"] == "reward.py:compute_score"
    assert saved_rollout["reward_kwargs"]["beta"] == 3
    assert saved_rollout["sampling"]["max_new_tokens"] == 10
    assert saved_rollout["backend"] == "transformers"
    saved_eval = json.loads(paths.config("eval").read_text())
    assert (saved_eval["reward"], saved_eval["backend"]) == (
        "reward.py:compute_score",
        "transformers",
    )
    # what they produced follows: groups of 3, rewards of the user's function at beta 3
    rows = read_table(paths.rollout_file(0), ROLLOUTS).to_pylist()
    assert len(rows) == 2 * 3
    for row in rows:
        assert row["reward"] == pytest.approx(3 * len(row["response_text"]) / 100.0)
    # the recipe's trackers (trainer.logger) are every RL stage's
    for saved in (saved_grpo, saved_rollout, saved_eval):
        assert saved["tracking"]["logger"] == ["console", "tensorboard"]
    # keys about mechanisms we do not have: a warning each, not an error
    for out in (out_g, out_r, evaluation.stdout + evaluation.stderr):
        assert "veRL key trainer.n_gpus_per_node has no effect here" in out
        assert "veRL key actor_rollout_ref.actor.fsdp_config.param_offload has no effect" in out


# each SFT key set's trainer.logger (W&B runs offline: no network)
LOGGERS = {"recipe_sft.txt": ["console", "tensorboard"], "qwen3_8b_sft.txt": ["console", "wandb"]}


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["recipe_sft.txt", "qwen3_8b_sft.txt"])
def test_the_sft_examples_verl_keys_run_sft(workdir, tiny_model, fixture):
    """The SFT key sets (tests/fixtures/verl) start sft and train, shrunk by veRL keys."""
    proactive("prep", "--set", "num_sft_samples=8", cwd=workdir)
    small = [
        "trainer.total_epochs=1",
        "data.max_length=96",
        "data.train_batch_size=4",
        "data.micro_batch_size_per_gpu=2",
        "model.enable_gradient_checkpointing=False",
    ]
    lines = fixture_lines(fixture, BASE_MODEL=str(tiny_model)) + small
    run_dir = workdir / "checkpoints" / "sft-verl"
    out = proactive(
        "sft", "--run-dir", str(run_dir), *[a for k in lines for a in ("--set", k)], cwd=workdir
    )
    paths = RunPaths(run_dir)
    saved = json.loads(paths.config("sft").read_text())
    assert (saved["base_model"], saved["learning_rate"], saved["epochs"]) == (
        str(tiny_model),
        1e-5,
        1,
    )
    assert (saved["train_batch_size"], saved["per_device_batch_size"]) == (4, 2)
    assert paths.sft_epoch(1).is_dir()
    assert saved["tracking"]["logger"] == LOGGERS[fixture]  # trainer.logger: sft's trackers
    assert "veRL key trainer.n_gpus_per_node has no effect here" in out.stdout + out.stderr
