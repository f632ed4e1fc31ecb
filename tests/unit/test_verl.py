"""veRL's dotted overrides: every key in the tables lands on a real field of its stage, values
are converted where veRL's meaning differs, and unsupported keys fail naming the nearest one."""

from __future__ import annotations

import importlib.util
import logging
import re
from pathlib import Path

import pytest

from proactive_rl.shared.config import _field_names, load_config
from proactive_rl.shared.errors import UserError
from proactive_rl.shared.verl import CONVERT, IGNORED, RL_KEYS, SFT_IGNORED, SFT_KEYS, translate
from proactive_rl.stages.eval.config import EvalConfig
from proactive_rl.stages.grpo.config import GrpoConfig
from proactive_rl.stages.rollout.config import RolloutConfig
from proactive_rl.stages.sft.config import SftConfig

STAGE_MODELS = {"rollout": RolloutConfig, "grpo": GrpoConfig, "eval": EvalConfig, "sft": SftConfig}

CONFIGS = {"sft": SftConfig, "rollout": RolloutConfig, "grpo": GrpoConfig, "eval": EvalConfig}


def _targets(table):
    for key, per_stage in table.items():
        for stage, fields in per_stage.items():
            for field in (fields,) if isinstance(fields, str) else fields:
                yield key, stage, field


@pytest.mark.parametrize("table", [RL_KEYS, SFT_KEYS], ids=["rl", "sft"])
def test_every_target_is_a_field_of_its_stage(table):
    for key, stage, field in _targets(table):
        assert field in _field_names(CONFIGS[stage]), (key, stage, field)


def test_the_users_keys_set_the_mapped_fields():
    grpo = load_config(
        GrpoConfig,
        None,
        [
            "actor_rollout_ref.rollout.n=8",
            "trainer.total_epochs=20",
            "actor_rollout_ref.actor.optim.lr=3e-6",
            "actor_rollout_ref.actor.clip_ratio_high=0.28",
            "actor_rollout_ref.actor.kl_loss_type=low_var_kl",
            "actor_rollout_ref.actor.kl_loss_coef=0.01",
            "actor_rollout_ref.model.path=checkpoints/x/sft/epoch_000002",
            "data.train_batch_size=64",
            "custom_reward_function.reward_kwargs.beta=0.7",  # a rollout setting: left to it
        ],
        stage="grpo",
    )
    assert (grpo.n, grpo.epochs, grpo.learning_rate, grpo.prompts_per_step) == (8, 20, 3e-6, 64)
    assert (grpo.loss.clip_eps_low, grpo.loss.clip_eps_high) == (0.2, 0.28)
    assert (grpo.loss.kl_type, grpo.loss.kl_coef) == ("low_var_kl", 0.01)
    assert grpo.init_model == "checkpoints/x/sft/epoch_000002"

    rollout = load_config(
        RolloutConfig,
        None,
        [
            "custom_reward_function.reward_kwargs.beta=0.7",
            "actor_rollout_ref.rollout.temperature=0.8",
            "actor_rollout_ref.rollout.top_k=-1",
            "data.max_response_length=512",
            "actor_rollout_ref.rollout.n=8",  # grpo's: the plan carries it to the rollout
        ],
        stage="rollout",
    )
    assert rollout.reward_kwargs["beta"] == 0.7
    assert rollout.reward_kwargs == {**RolloutConfig().reward_kwargs, "beta": 0.7}
    assert (rollout.sampling.temperature, rollout.sampling.top_k) == (0.8, 0)
    assert rollout.sampling.max_new_tokens == 512

    sft = load_config(SftConfig, None, ["trainer.total_epochs=3", "optim.lr=2e-5"], stage="sft")
    assert (sft.epochs, sft.learning_rate) == (3, 2e-5)


@pytest.mark.parametrize(
    ("key", "raw", "expected"),
    [
        ("actor_rollout_ref.rollout.name", "hf", "transformers"),
        ("actor_rollout_ref.rollout.name", "vllm", "vllm"),
        ("algorithm.norm_adv_by_std_in_grpo", False, "none"),
        ("algorithm.norm_adv_by_std_in_grpo", True, "group_std"),
        ("actor_rollout_ref.rollout.top_k", -1, 0),
    ],
)
def test_values_with_another_meaning_are_converted(key, raw, expected):
    assert CONVERT[key](raw) == expected


def test_use_kl_loss_false_turns_the_kl_term_off_whatever_the_order():
    for overrides in (
        ["actor_rollout_ref.actor.use_kl_loss=False", "actor_rollout_ref.actor.kl_loss_coef=0.1"],
        ["actor_rollout_ref.actor.kl_loss_coef=0.1", "actor_rollout_ref.actor.use_kl_loss=false"],
    ):
        assert load_config(GrpoConfig, None, overrides, stage="grpo").loss.kl_coef == 0
    on = ["actor_rollout_ref.actor.use_kl_loss=True", "actor_rollout_ref.actor.kl_loss_coef=0.1"]
    assert load_config(GrpoConfig, None, on, stage="grpo").loss.kl_coef == 0.1


def test_a_reward_file_is_path_and_function_name():
    assert translate(
        ["custom_reward_function.path=rewards/mine.py", "custom_reward_function.name=score"],
        "rollout",
    ) == ['reward="rewards/mine.py:score"']
    # veRL's default function name
    assert translate(["custom_reward_function.path=r.py"], "eval") == [
        'reward="r.py:compute_score"'
    ]
    with pytest.raises(UserError, match="needs custom_reward_function.path"):
        translate(["custom_reward_function.name=score"], "rollout")


def test_an_unsupported_key_names_the_nearest_supported_one():
    with pytest.raises(UserError, match="'actor_rollout_ref.rollout.temperature'"):
        load_config(
            RolloutConfig, None, ["actor_rollout_ref.rollout.temprature=1"], stage="rollout"
        )
    with pytest.raises(UserError, match="not supported"):
        translate(["data.train_files=train.parquet"], "grpo")


def test_unsupported_values_are_refused():
    with pytest.raises(UserError, match="adv_estimator='gae' is not supported"):
        translate(["algorithm.adv_estimator=gae"], "grpo")
    with pytest.raises(UserError, match="use_kl_in_reward"):
        translate(["algorithm.use_kl_in_reward=True"], "grpo")
    assert translate(["algorithm.adv_estimator=grpo"], "grpo") == []


def test_launch_script_keys_without_a_meaning_here_are_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        assert translate(["trainer.nnodes=2"], "grpo") == []
    assert IGNORED["trainer.nnodes"] in caplog.text


def test_logger_keys_set_the_trackers_of_every_rl_stage():
    for stage in ("rollout", "grpo", "eval"):
        config = load_config(
            STAGE_MODELS[stage],
            overrides=[
                "trainer.logger=['console','wandb','mlflow']",
                "trainer.project_name=p",
                "trainer.experiment_name=e",
            ],
            stage=stage,
        )
        assert config.tracking.logger == ["console", "wandb", "mlflow"]
        assert (config.tracking.project, config.tracking.experiment) == ("p", "e")
    sft = load_config(STAGE_MODELS["sft"], overrides=["trainer.logger=[console]"], stage="sft")
    assert sft.tracking.logger == ["console"]


def test_our_own_keys_pass_through_untouched():
    ours = ["n=4", "loss.kl_coef=0.2", "reward_kwargs.beta=0.3"]
    assert translate(ours, "grpo") == ours
    # prep has no veRL table: a veRL-looking key stays and fails as an unknown field
    assert translate(["data.train_batch_size=4"], "prep") == ["data.train_batch_size=4"]


def test_docs_page_is_generated_from_the_tables():
    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("verl_doc", root / "scripts" / "verl_doc.py")
    verl_doc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(verl_doc)
    text = (root / "docs" / "verl.md").read_text()
    assert text == verl_doc.render(), "docs/verl.md is stale: run scripts/verl_doc.py"
    listed = set(re.findall(r"^\| `([a-z_.*]+)` \|", text, flags=re.MULTILINE))
    assert listed == set(RL_KEYS) | set(SFT_KEYS) | set(IGNORED) | set(SFT_IGNORED)


def _grpo(*overrides: str) -> GrpoConfig:
    return load_config(GrpoConfig, None, list(overrides), stage="grpo")


def test_clip_bounds_resolve_as_in_verls_vanilla_loss(caplog):
    a = "actor_rollout_ref.actor."
    # clip_ratio after an asymmetric bound does not undo it (veRL: low/high win)
    asym = _grpo(f"{a}clip_ratio_high=0.28", f"{a}clip_ratio=0.2")
    assert (asym.loss.clip_eps_low, asym.loss.clip_eps_high) == (0.2, 0.28)
    # clip_ratio alone changes nothing, as in veRL, and says so
    with caplog.at_level(logging.WARNING):
        alone = _grpo(f"{a}clip_ratio=0.3")
    assert (alone.loss.clip_eps_low, alone.loss.clip_eps_high) == (0.2, 0.2)
    assert "clip_ratio has no effect" in caplog.text
    # ... but fills a bound set to null
    filled = _grpo(f"{a}clip_ratio_low=null", f"{a}clip_ratio=0.3")
    assert (filled.loss.clip_eps_low, filled.loss.clip_eps_high) == (0.3, 0.2)


def test_hydra_add_prefixes_read_as_plain_keys():
    assert translate(["+custom_reward_function.reward_kwargs.beta=0.7"], "rollout") == [
        "reward_kwargs.beta=0.7"
    ]
    assert translate(["++actor_rollout_ref.rollout.n=8"], "grpo") == ["n=8"]


def test_keys_of_mechanisms_we_lack_warn_once_each_with_the_reason(caplog):
    keys = [
        "actor_rollout_ref.actor.fsdp_config.param_offload=True",
        "actor_rollout_ref.actor.fsdp_config.wrap_policy.min_num_params=0",
        "ray_kwargs.ray_init.num_cpus=8",
        "actor_rollout_ref.actor.use_torch_compile=True",
        "actor_rollout_ref.rollout.free_cache_engine=True",
    ]
    with caplog.at_level(logging.WARNING):
        assert translate(keys, "grpo") == []
    assert len(caplog.records) == len(keys)
    assert all("has no effect here: " in r.getMessage() for r in caplog.records)


def test_greedy_validation_at_temperature_zero():
    key = "actor_rollout_ref.rollout.val_kwargs.temperature=0"
    assert load_config(EvalConfig, None, [key], stage="eval").sampling.temperature == 0
    with pytest.raises(UserError, match="greedy"):
        load_config(
            RolloutConfig, None, ["actor_rollout_ref.rollout.temperature=0"], stage="rollout"
        )


def test_rollout_correction_and_critic_warmup_map_to_our_fields():
    c = "algorithm.rollout_correction."
    on = _grpo(f"{c}rollout_is=token", f"{c}rollout_is_threshold=3.0", "trainer.critic_warmup=3")
    assert (on.loss.is_correction, on.loss.is_threshold, on.critic_warmup) == ("token", 3.0, 3)
    assert _grpo(f"{c}rollout_is=null").loss.is_correction == "none"
    with pytest.raises(UserError, match="rejection sampling"):
        translate([f"{c}rollout_rs=token"], "grpo")
    with pytest.raises(UserError, match="only 'vanilla'"):
        translate(["actor_rollout_ref.actor.policy_loss.loss_mode=gspo"], "grpo")


def test_verl_091s_reward_section_and_our_reward_field_do_not_collide():
    assert translate(
        [
            "reward.custom_reward_function.path=r.py",
            "+reward.custom_reward_function.reward_kwargs.beta=0.7",
        ],
        "rollout",
    ) == ["reward_kwargs.beta=0.7", 'reward="r.py:compute_score"']
    assert translate(["reward=proactive_strict"], "rollout") == ["reward=proactive_strict"]
    # veRL's default name without a path: the built-in reward, nothing to set
    assert translate(["reward.custom_reward_function.name=compute_score"], "eval") == []


def test_dynamic_micro_batches_resolve_as_verl_reads_them(caplog):
    a, r = "actor_rollout_ref.actor.", "actor_rollout_ref.rollout."
    # the budget only under use_dynamic_bsz; 16384 unless set; the pi_old pass follows
    on = _grpo(f"{a}use_dynamic_bsz=true")
    assert (on.micro_batch_tokens, on.log_prob_micro_batch_tokens) == (16384, 16384)
    both = _grpo(f"{a}ppo_max_token_len_per_gpu=4096", f"{a}use_dynamic_bsz=True")
    assert (both.micro_batch_tokens, both.log_prob_micro_batch_tokens) == (4096, 4096)
    own = _grpo(f"{a}use_dynamic_bsz=true", f"{r}log_prob_use_dynamic_bsz=false")
    assert (own.micro_batch_tokens, own.log_prob_micro_batch_tokens) == (16384, None)
    with caplog.at_level(logging.WARNING):
        alone = _grpo(f"{a}ppo_max_token_len_per_gpu=4096")
    assert alone.micro_batch_tokens is None
    assert "ppo_max_token_len_per_gpu has no effect here, as in veRL" in caplog.text
