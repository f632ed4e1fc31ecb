"""Typed config of the evaluation stage.

proactive eval --run-dir checkpoints/default --set checkpoints=base,sft,rl:epochs --set n=4
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from proactive_rl.engine.generation import SamplingConfig, VllmConfig
from proactive_rl.shared.config import StageConfig
from proactive_rl.shared.rewards import PIPELINE_BETA
from proactive_rl.shared.trackers import TrackingConfig


class EvalConfig(StageConfig):
    checkpoints: list[str] | None = Field(
        None,
        min_length=1,
        description="What to compare, in report order: 'base' (the run's base model), 'sft' "
        "(last SFT epoch), 'sft:N', 'sft:all' (every epoch), 'final' (newest policy), "
        "'policy:N', 'rl:epochs' (the policy at the end of every RL epoch), 'policies:all', "
        "'builtin:tiny' or a model folder. A JSON list or comma-separated. Unset: base, sft, "
        "final, skipping those this run does not have; a named one that is missing is an error.",
    )
    checkpoint: str | None = Field(
        None, description="Deprecated: one checkpoint, the same as checkpoints=[it]."
    )
    name: str = Field(
        "report",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Report folder: <run>/eval/<name>/ (report.json, report.md, samples.jsonl, "
        "PNG plots).",
    )
    split: Literal["test", "train", "all"] = Field(
        "test",
        description="Which RL questions to evaluate: the held-out test split, the train split, "
        "or all (e.g. all of SimpleQA, prepared in a data folder of its own).",
    )
    n: int = Field(
        4,
        ge=1,
        le=256,
        description="Samples per question (veRL val_kwargs.n), not the group size (grpo's n): "
        "the resolution of each question's measured accuracy.",
    )
    max_questions: int | None = Field(None, ge=1, description="Evaluate only the first N.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    reward: str = Field("proactive", description="Reward reported as mean_reward (see rollout).")
    reward_kwargs: dict[str, Any] = Field(
        default_factory=lambda: {"beta": PIPELINE_BETA},
        description="Keyword arguments of the reward.",
    )
    generation_batch_prompts: int = Field(8, ge=1, description="Prompts per generate call.")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="As in rollout.")
    backend: Literal["auto", "transformers", "vllm"] = Field(
        "auto", description="Generation engine, as in rollout (one engine serves every checkpoint)."
    )
    vllm: VllmConfig = Field(default_factory=VllmConfig)
    sample_cache: str | None = Field(
        None,
        description="A folder where sampled responses are kept for other evaluations: a "
        "checkpoint sampled there before with the same model files, questions, sampling "
        "settings, seed and engine is graded again with this eval's reward instead of sampled "
        "again (a sweep's runs share their base and SFT samples so). Unset: always sample.",
    )
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    seed: int = Field(
        7,
        description="Sampling seed; every checkpoint sees the same seeds (paired comparison). "
        "The sweep's `seed` axis sets it with every other stage's seed, as does "
        "the pipeline's SEED knob (env PROACTIVE_SEED).",
    )
    curve_window: int = Field(
        5, ge=1, description="RL steps averaged at the start and end of the training curve."
    )
    plots: bool = Field(True, description="Write the PNG plots (matplotlib).")
    judge: str | None = Field(
        None,
        description="An LLM judge: a local chat model folder that grades every answer with "
        "SimpleQA's rubric, reported beside the rule-based graders with its agreement with the "
        "normalised one (a large judge wants a GPU).",
    )
    judge_max_new_tokens: int = Field(8, ge=1, description="Tokens the judge may reply with.")
    bootstrap_resamples: int = Field(
        2000,
        ge=100,
        description="Bootstrap resamples (of questions) behind every rate's 95% interval.",
    )

    @field_validator("checkpoints", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        # `--set checkpoints=base,sft,final` is easier to pass through compose than JSON.
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _one_way_to_name_checkpoints(self) -> EvalConfig:
        if self.checkpoint is not None and self.checkpoints is not None:
            raise ValueError("set checkpoints (a list) or the deprecated checkpoint, not both")
        return self

    def checkpoint_specs(self) -> list[str] | None:
        """The specs the user named, or None for the default (base, sft, final if present)."""
        if self.checkpoint is not None:
            return [self.checkpoint]
        return self.checkpoints
