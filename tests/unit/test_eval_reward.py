"""eval scores a run with the reward it trained with, unless told otherwise."""

from __future__ import annotations

import json

from proactive_rl.shared.config import load_config
from proactive_rl.shared.paths import RunPaths
from proactive_rl.stages.eval.config import EvalConfig
from proactive_rl.stages.eval.main import training_reward


def test_the_runs_reward_is_used_where_eval_sets_none(tmp_path):
    paths = RunPaths(tmp_path)
    paths.config("rollout").parent.mkdir(parents=True)
    trained = {"reward": "ternary", "reward_kwargs": {"beta": 0.7, "grader": "normalised"}}
    paths.config("rollout").write_text(json.dumps({**trained, "seed": 1}))

    config = training_reward(load_config(EvalConfig, None, []), paths)
    assert (config.reward, config.reward_kwargs) == (trained["reward"], trained["reward_kwargs"])
    # a setting given to eval wins, field by field
    told = load_config(EvalConfig, None, ["reward_kwargs.beta=0.3"])
    config = training_reward(told, paths)
    assert config.reward == "ternary" and config.reward_kwargs["beta"] == 0.3
    # a run without a rollout config: eval's own defaults
    assert training_reward(EvalConfig(), RunPaths(tmp_path / "other")) == EvalConfig()
