"""Typed config of the rollout worker. The schedule (steps, prompts per step, n) is not here:
it comes from the plan the GRPO worker publishes, so the two sides cannot disagree."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from proactive_rl.engine.generation import SamplingConfig, VllmConfig
from proactive_rl.shared.config import StageConfig
from proactive_rl.shared.peers import peer_quiet_timeout_field, peer_start_timeout_field
from proactive_rl.shared.rewards import PIPELINE_BETA
from proactive_rl.shared.trackers import TrackingConfig


class RolloutConfig(StageConfig):
    backend: Literal["auto", "transformers", "vllm"] = Field(
        "auto",
        description="Generation engine: 'vllm' (vLLM on a GPU, or its CPU build in the CPU "
        "flavour), 'transformers' (`generate`, CPU or GPU) or 'auto' = vllm where it is "
        "installed (the faster on both: docs/benchmarks.md), else transformers.",
    )
    vllm: VllmConfig = Field(default_factory=VllmConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    reward: str = Field(
        "proactive",
        description="Group reward: a built-in name (proactive, adaptive_difficulty, "
        "relative_quality, best_of_n, pass_at_k, correctness, proactive_strict, ternary) or "
        "path/to/file.py:function.",
    )
    reward_kwargs: dict[str, Any] = Field(
        default_factory=lambda: {"beta": PIPELINE_BETA},
        description="Keyword arguments passed to the reward function (RL_BETA sets beta).",
    )
    generation_batch_prompts: int = Field(
        8, ge=1, description="Prompts per generate call (each expands to n sequences)."
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto = bf16 on a CUDA GPU with bf16 support, else fp32."
    )
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    seed: int = Field(
        1234,
        description="Sampling seed (combined with the step number). The sweep's `seed` axis sets "
        "it with every other stage's seed, as does "
        "the pipeline's SEED knob (env PROACTIVE_SEED).",
    )
    wait_timeout: float = Field(
        3600.0, gt=0, description="Seconds to wait for a policy version before failing."
    )
    peer_quiet_timeout: float = peer_quiet_timeout_field()
    peer_start_timeout: float = peer_start_timeout_field()
    num_examine: int = Field(5, ge=0, description="Groups printed to the log per step.")
    worker: int = Field(
        0,
        ge=0,
        description="This process's index among the plan's rollout_workers (a grpo setting): "
        "it samples the prompts at positions p % rollout_workers == worker of each step and "
        "publishes them as its part (docs/contract.md). Must be below rollout_workers.",
    )

    @field_validator("sampling")
    @classmethod
    def _sampled(cls, sampling: SamplingConfig) -> SamplingConfig:
        # greedy decoding gives a group n identical responses: zero advantages, nothing learned
        if sampling.temperature == 0:
            raise ValueError("temperature 0 (greedy) is for evaluation; GRPO needs sampling")
        return sampling
