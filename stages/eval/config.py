"""Typed config of the evaluation stage."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from proactive_rl.rollout.config import SamplingConfig
from proactive_rl.shared.config import StageConfig


class EvalConfig(StageConfig):
    checkpoint: str = Field(
        "final",
        description="What to evaluate: 'final' (newest published policy of this run), 'sft' "
        "(last SFT epoch), 'policy:N' (policy version N), or a local Hugging Face folder.",
    )
    name: str | None = Field(
        None, description="Report folder under <run>/eval/ (default: derived from checkpoint)."
    )
    split: Literal["test", "train"] = Field("test", description="Which RL split to evaluate.")
    n: int = Field(4, ge=1, description="Samples per question.")
    max_questions: int | None = Field(None, ge=1, description="Evaluate only the first N.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    reward: str = Field("proactive", description="Reward reported as mean_reward (see rollout).")
    reward_kwargs: dict[str, Any] = Field(
        default_factory=lambda: {"beta": 0.5}, description="Keyword arguments of the reward."
    )
    generation_batch_prompts: int = Field(8, ge=1, description="Prompts per generate call.")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="As in rollout.")
    seed: int = Field(7, description="Sampling seed.")
