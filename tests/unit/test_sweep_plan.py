"""The sweep's plan: which runs a grid makes, what they share, how they are named, and what
each stage is told."""

from __future__ import annotations

import doctest

import pytest

from proactive_rl.shared.config import load_config
from proactive_rl.shared.errors import UserError
from proactive_rl.stages.sweep import plan as plan_module
from proactive_rl.stages.sweep.config import SweepConfig
from proactive_rl.stages.sweep.main import check_launcher
from proactive_rl.stages.sweep.plan import plan, select


def test_doctests() -> None:
    result = doctest.testmod(plan_module, verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_the_recipe_preset_is_six_runs_over_three_preps_and_three_sfts() -> None:
    runs = plan(SweepConfig(preset="recipe"))
    assert [r.name for r in runs] == [
        "sft25_rl_beta0.5",
        "sft50_rl_beta0.5",  # the common run of the three experiments, once
        "sft100_rl_beta0.5",
        "nosft_rl_beta0.5",
        "sft50_rl_beta0.3",
        "sft50_rl_beta0.7",
    ]
    assert len({r.data.key for r in runs}) == 3  # 25, 50, 100 SFT samples
    assert len({r.sft.key for r in runs if r.sft}) == 3
    by_name = {r.name: r for r in runs}
    assert by_name["nosft_rl_beta0.5"].sft is None
    # beta runs share the 50-sample data and SFT with the common run
    common = by_name["sft50_rl_beta0.5"]
    for name in ("sft50_rl_beta0.3", "sft50_rl_beta0.7", "nosft_rl_beta0.5"):
        assert by_name[name].data == common.data
    assert by_name["sft50_rl_beta0.3"].sft == common.sft
    assert "num_sft_samples=25" in by_name["sft25_rl_beta0.5"].data.overrides
    # beta reaches the reward of training and of evaluation
    assert "reward_kwargs.beta=0.3" in by_name["sft50_rl_beta0.3"].overrides["rollout"]
    assert "reward_kwargs.beta=0.3" in by_name["sft50_rl_beta0.3"].overrides["eval"]


def test_settings_axes_and_verl_keys_reach_their_stages() -> None:
    config = load_config(
        SweepConfig,
        None,
        [
            'grids=[{"n": [4, 8], "actor_rollout_ref.actor.optim.lr": [1e-5]}]',
            'settings={"grpo": ["max_steps=2"], "rl": ["seed=3"], "prep": ["max_rl_rows=9"]}',
        ],
        stage="sweep",
    )
    runs = plan(config)
    assert [r.name for r in runs] == ["sft_rl_n4_lr1e-05", "sft_rl_n8_lr1e-05"]
    grpo = runs[1].overrides["grpo"]
    assert grpo[:2] == ("max_steps=2", "seed=3") and "n=8" in grpo
    for stage in ("rollout", "grpo", "eval"):  # each takes the veRL keys it has
        assert "actor_rollout_ref.actor.optim.lr=1e-05" in runs[0].overrides[stage]
    assert runs[0].data.overrides[-1] == "max_rl_rows=9"
    # the users' files are read where they are; each prep variant writes its own folder
    assert "sft_source=data/sample/sft.jsonl" in runs[0].data.overrides
    assert runs[0].data.folder.parts[:3] == ("data", "sweeps", "sweep")


def test_the_five_rewards_grid_names_its_runs_and_scores_each_with_its_own_reward() -> None:
    """Issue 23's head-to-head: proactive at two betas, proactive_strict, ternary, and ternary
    with a positive abstention value, as a union of grids over one SFT."""
    grids = [
        {"reward": ["proactive"], "beta": [0.3, 0.5]},
        {"reward": ["proactive_strict"], "beta": [0.3]},
        {"reward": ["ternary"]},
        {"reward": ["ternary"], "abstain": [0.1]},
    ]
    runs = plan(SweepConfig(grids=grids))
    assert [r.name for r in runs] == [
        "sft_rl_beta0.3_proactive",
        "sft_rl_beta0.5_proactive",
        "sft_rl_beta0.3_proactive_strict",
        "sft_rl_ternary",
        "sft_rl_ternary_abstain0.1",
    ]
    assert len({r.sft.key for r in runs if r.sft}) == 1  # one SFT for all five
    last = runs[-1].overrides
    for stage in ("rollout", "eval"):  # trained and scored with the same reward
        assert "reward=ternary" in last[stage] and "reward_kwargs.abstain=0.1" in last[stage]
    assert not any("abstain" in o for o in runs[-1].overrides["grpo"])


def test_only_runs_the_runs_it_names_in_the_plans_order() -> None:
    """A sweep in pieces (make bench-rewards is hours on 2 cores): `only` keeps the named runs,
    whatever order they are given in, and refuses a name the plan does not have."""
    config = load_config(
        SweepConfig,
        None,
        ['grids=[{"beta": [0.3, 0.5, 0.7]}]', 'only=["sft_rl_beta0.7", "sft_rl_beta0.3"]'],
        stage="sweep",
    )
    runs = plan(config)
    assert [r.name for r in select(runs, config.only)] == ["sft_rl_beta0.3", "sft_rl_beta0.7"]
    assert select(runs, []) == runs
    with pytest.raises(UserError, match=r"no such run; the plan's runs are sft_rl_beta0.3, "):
        select(runs, ["sft_rl_beta0.4"])


def test_unknown_axes_stages_and_compose_folders_are_refused() -> None:
    with pytest.raises(UserError, match="unknown sweep axis 'bta'"):
        plan(SweepConfig(grids=[{"bta": [0.1]}]))
    with pytest.raises(UserError, match="unknown stage"):
        load_config(SweepConfig, None, ['settings={"grop": ["n=4"]}'], stage="sweep")
    with pytest.raises(UserError, match="checkpoints_dir must be ./checkpoints"):
        check_launcher(SweepConfig(launcher="compose", checkpoints_dir="/tmp/elsewhere"))
