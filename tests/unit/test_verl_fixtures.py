"""A pasted veRL command line is accepted: the users' recipe's overrides and the key sets of
veRL's Qwen3-8B GRPO and SFT examples (tests/fixtures/verl) configure every stage that reads
them with no error, set the mapped fields, and warn exactly about the keys listed here, once
each. tests/stages/test_verl_run.py starts the stages with the same lines."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from proactive_rl.shared.config import load_config
from proactive_rl.stages.eval.config import EvalConfig
from proactive_rl.stages.grpo.config import GrpoConfig
from proactive_rl.stages.rollout.config import RolloutConfig
from proactive_rl.stages.sft.config import SftConfig

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "verl"
CONFIGS = {"sft": SftConfig, "rollout": RolloutConfig, "grpo": GrpoConfig, "eval": EvalConfig}
RL_STAGES = ("rollout", "grpo", "eval")


def fixture_lines(name: str, **fill: str) -> list[str]:
    """The fixture's key=value lines, placeholders (CHECKPOINT, REWARD_FILE, ...) filled."""
    lines = []
    for line in (FIXTURES / name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            for placeholder, value in fill.items():
                line = line.replace(placeholder, value)
            lines.append(line)
    return lines


FILL = {
    "CHECKPOINT": "/models/qwen3-8b-sft",
    "REWARD_FILE": "rewards/proactive.py",
    "BASE_MODEL": "/models/qwen3-8b",
}

# The keys each fixture sets that change nothing trained here (a warning line each, saying why),
# on every stage that reads the fixture; clip_ratio's only where the clip bounds live (grpo).
RECIPE_WARNINGS = {
    "data.filter_overlong_prompts",
    "data.truncation",
    "actor_rollout_ref.model.use_remove_padding",
    "actor_rollout_ref.actor.clip_ratio",  # as in veRL: clip_ratio_low/high are the bounds
    "actor_rollout_ref.actor.fsdp_config.param_offload",
    "actor_rollout_ref.actor.fsdp_config.optimizer_offload",
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu",
    "actor_rollout_ref.ref.fsdp_config.param_offload",
    "trainer.n_gpus_per_node",
    "trainer.nnodes",
    "trainer.save_freq",
    "trainer.test_freq",
}
QWEN3_WARNINGS = RECIPE_WARNINGS - {"actor_rollout_ref.actor.clip_ratio"} | {
    "actor_rollout_ref.actor.ulysses_sequence_parallel_size",
    "actor_rollout_ref.actor.use_torch_compile",
    "actor_rollout_ref.rollout.free_cache_engine",
    "actor_rollout_ref.rollout.val_kwargs.do_sample",
    "actor_rollout_ref.ref.log_prob_use_dynamic_bsz",
    "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu",
    "actor_rollout_ref.ref.ulysses_sequence_parallel_size",
    "trainer.balance_batch",
    "ray_kwargs.ray_init.num_cpus",
}
WARNINGS = {"recipe_grpo.txt": RECIPE_WARNINGS, "qwen3_8b_grpo.txt": QWEN3_WARNINGS}


def _load(stage: str, lines: list[str], caplog: pytest.LogCaptureFixture):
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="proactive_rl.shared.verl"):
        config = load_config(CONFIGS[stage], None, lines, stage=stage)
    warned = [re.match(r"veRL key (\S+) has no effect", r.getMessage()) for r in caplog.records]
    assert all(warned), caplog.text
    return config, [m.group(1) for m in warned]


@pytest.mark.parametrize("stage", RL_STAGES)
@pytest.mark.parametrize("fixture", sorted(WARNINGS))
def test_rl_fixture_configures_every_rl_stage_with_the_listed_warnings(fixture, stage, caplog):
    _, warned = _load(stage, fixture_lines(fixture, **FILL), caplog)
    expected = WARNINGS[fixture] - (
        set() if stage == "grpo" else {"actor_rollout_ref.actor.clip_ratio"}
    )
    assert sorted(warned) == sorted(expected)  # each once


def test_the_recipe_sets_the_recipes_values(caplog):
    lines = fixture_lines("recipe_grpo.txt", **FILL)
    grpo, _ = _load("grpo", lines, caplog)
    assert (grpo.prompts_per_step, grpo.n, grpo.epochs) == (256, 16, 10)
    assert (grpo.mini_batch_prompts, grpo.micro_batch_size, grpo.ppo_epochs) == (64, 4, 1)
    assert (grpo.learning_rate, grpo.min_lr_ratio, grpo.lr_scheduler) == (1e-6, 0.1, "cosine")
    assert (grpo.weight_decay, grpo.grad_clip, grpo.critic_warmup) == (0.0, 1.0, 0)
    assert (grpo.loss.clip_eps_low, grpo.loss.clip_eps_high) == (0.2, 0.2)
    assert (grpo.loss.kl_coef, grpo.loss.kl_type, grpo.loss.entropy_coef) == (
        0.001,
        "low_var_kl",
        0.0,
    )
    assert grpo.loss.scale_advantages == "group_std"
    assert grpo.init_model == FILL["CHECKPOINT"]
    assert grpo.gradient_checkpointing is True
    assert (grpo.log_prob_micro_batch_size, grpo.micro_batch_tokens) == (4, None)
    rollout, _ = _load("rollout", lines, caplog)
    assert rollout.reward == f"{FILL['REWARD_FILE']}:compute_score"
    assert rollout.reward_kwargs["beta"] == 0.5
    assert (rollout.sampling.max_prompt_tokens, rollout.sampling.max_new_tokens) == (1024, 1024)
    assert (rollout.sampling.temperature, rollout.sampling.top_p, rollout.sampling.top_k) == (
        1.0,
        1.0,
        0,
    )
    assert (rollout.backend, rollout.vllm.tensor_parallel_size) == ("vllm", 1)
    assert rollout.vllm.gpu_memory_utilization == 0.4
    evaluation, _ = _load("eval", lines, caplog)
    assert (evaluation.sampling.max_new_tokens, evaluation.backend) == (1024, "vllm")


def test_the_qwen3_example_sets_its_values(caplog):
    lines = fixture_lines("qwen3_8b_grpo.txt", **FILL)
    grpo, _ = _load("grpo", lines, caplog)
    assert (grpo.prompts_per_step, grpo.n, grpo.epochs) == (1024, 5, 15)
    assert (grpo.mini_batch_prompts, grpo.micro_batch_size) == (256, 32)
    # warm-up in RL steps, veRL's constant schedule (warmup_style: the deprecated alias)
    assert (grpo.warmup_steps, grpo.lr_scheduler, grpo.min_lr_ratio) == (10, "constant", 0.0)
    assert (grpo.weight_decay, grpo.grad_clip) == (0.1, 1.0)
    assert grpo.loss.agg == "token-mean"
    # dynamic micro-batches by token budget, for training and for the pi_old pass
    assert (grpo.micro_batch_tokens, grpo.log_prob_micro_batch_tokens) == (24000, 24000)
    assert grpo.log_prob_micro_batch_size == 32
    evaluation, _ = _load("eval", lines, caplog)
    assert evaluation.sampling.temperature == 0  # veRL's greedy validation
    rollout, _ = _load("rollout", lines, caplog)
    assert (rollout.vllm.tensor_parallel_size, rollout.vllm.gpu_memory_utilization) == (2, 0.6)


SFT_LAUNCH = {
    "trainer.default_local_dir",
    "trainer.n_gpus_per_node",
    "trainer.nnodes",
}
SFT_WARNINGS = {
    "recipe_sft.txt": SFT_LAUNCH | {"use_remove_padding", "ulysses_sequence_parallel_size"},
    "qwen3_8b_sft.txt": SFT_LAUNCH
    | {
        "data.use_dynamic_bsz",
        "data.max_token_len_per_gpu",
        "data.pad_mode",
        "model.use_remove_padding",
        "engine.strategy",
        "engine.ulysses_sequence_parallel_size",
        "engine.param_offload",
        "engine.optimizer_offload",
        "trainer.save_freq",
        "trainer.test_freq",
        "checkpoint.save_contents",
    },
}


@pytest.mark.parametrize("fixture", sorted(SFT_WARNINGS))
def test_sft_fixture_configures_sft_with_the_listed_warnings(fixture, caplog):
    _, warned = _load("sft", fixture_lines(fixture, **FILL), caplog)
    assert sorted(warned) == sorted(SFT_WARNINGS[fixture])


def test_the_sft_fixtures_set_their_values(caplog):
    recipe, _ = _load("sft", fixture_lines("recipe_sft.txt", **FILL), caplog)
    assert (recipe.base_model, recipe.epochs, recipe.learning_rate) == ("/models/qwen3-8b", 2, 1e-5)
    assert (recipe.per_device_batch_size, recipe.max_length, recipe.weight_decay) == (4, 2048, 0)
    assert recipe.gradient_checkpointing is True
    qwen3, _ = _load("sft", fixture_lines("qwen3_8b_sft.txt", **FILL), caplog)
    assert (qwen3.train_batch_size, qwen3.per_device_batch_size) == (256, 4)
    assert (qwen3.lr_scheduler, qwen3.warmup_ratio, qwen3.min_lr_ratio) == ("cosine", 0.1, 0.1)
    assert (list(qwen3.betas), qwen3.grad_clip, qwen3.weight_decay) == ([0.9, 0.95], 1.0, 0.1)
    assert qwen3.truncation == "right"
