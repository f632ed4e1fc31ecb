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


class VllmConfig(StageConfig):
    gpu_memory_utilization: float = Field(
        0.85,
        gt=0.0,
        le=1.0,
        description="Share of each GPU vLLM may take (weights + KV cache). The seed pipeline used "
        "0.4 because rollout shared its GPUs with training; here they have their own.",
    )
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one vLLM engine spans.")
    enforce_eager: bool = Field(
        False, description="Skip CUDA graph capture (faster start, slower decoding)."
    )
    enable_prefix_caching: bool = Field(
        True, description="Share the KV cache of the prompt across a group's n samples."
    )
    max_model_len: int | None = Field(
        None,
        ge=16,
        description="Context vLLM reserves per sequence (None = max_prompt_tokens + "
        "max_new_tokens).",
    )


class RolloutConfig(StageConfig):
    backend: Literal["auto", "transformers", "vllm"] = Field(
        "auto",
        description="Generation engine: 'vllm' (CUDA images), 'transformers' (`generate`, CPU or "
        "GPU) or 'auto' = vllm when it is installed and a GPU is visible, else transformers.",
    )
    vllm: VllmConfig = Field(default_factory=VllmConfig)
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
