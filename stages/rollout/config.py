"""Typed config of the rollout worker. The schedule (steps, prompts per step, n) is not here:
it comes from the plan the GRPO worker publishes, so the two sides cannot disagree."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from proactive_rl.shared.config import StageConfig


class SamplingConfig(StageConfig):
    temperature: float = Field(1.0, gt=0.0, le=10.0, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass (1 = off).")
    top_k: int = Field(0, ge=0, description="Top-k sampling (0 = off).")
    max_new_tokens: int = Field(1024, ge=1, description="Max response tokens (longer: cut).")
    max_prompt_tokens: int = Field(
        1024, ge=1, description="Prompts longer than this are dropped from the step (logged)."
    )


class RolloutConfig(StageConfig):
    backend: Literal["transformers"] = Field(
        "transformers", description="Generation engine (transformers `generate` on CPU or GPU)."
    )
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    reward: str = Field(
        "proactive",
        description="Group reward: a built-in name (proactive, adaptive_difficulty, "
        "relative_quality, best_of_n, pass_at_k, correctness) or path/to/file.py:function.",
    )
    reward_kwargs: dict[str, Any] = Field(
        default_factory=lambda: {"beta": 0.5},
        description="Keyword arguments passed to the reward function (RL_BETA sets beta).",
    )
    generation_batch_prompts: int = Field(
        8, ge=1, description="Prompts per generate call (each expands to n sequences)."
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto = bf16 on a CUDA GPU with bf16 support, else fp32."
    )
    seed: int = Field(1234, description="Sampling seed (combined with the step number).")
    wait_timeout: float = Field(
        3600.0, gt=0, description="Seconds to wait for a policy version before failing."
    )
    num_examine: int = Field(5, ge=0, description="Groups printed to the log per step.")
