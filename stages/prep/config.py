"""Typed config of the prep stage."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from proactive_rl.shared.config import StageConfig

SYSTEM_PROMPT = "You are a helpful proactive assistant."


class PrepConfig(StageConfig):
    sft_source: Path | None = Field(
        None,
        description="SFT conversations in the users' JSONL format ({messages, id, sub_category}). "
        "Default: <data-dir>/sample/sft.jsonl.",
    )
    rl_source: Path | None = Field(
        None,
        description="RL questions: the users' JSONL ({id, messages: [user, assistant], ...}) or a "
        "SimpleQA CSV (columns question/true_answer or problem/answer). "
        "Default: <data-dir>/sample/rl.jsonl.",
    )
    num_sft_samples: int = Field(
        50, ge=1, description="SFT conversations sampled (NUM_SFT_SAMPLES); all if fewer exist."
    )
    seed: int = Field(42, description="Seed of the SFT sample.")
    test_fraction: float = Field(
        0.05, ge=0.0, lt=1.0, description="Tail of the RL questions (file order) held out as test."
    )
    min_test_rows: int = Field(
        4, ge=1, description="If the test split is empty, this many train rows are used as test."
    )
    max_rl_rows: int | None = Field(
        None, ge=1, description="Keep only the first N RL questions (quick runs)."
    )
    system_prompt: str = Field(SYSTEM_PROMPT, description="System turn of every RL prompt.")
    data_source: str = Field("sampleQA", description="`data_source` column of the RL parquet.")
