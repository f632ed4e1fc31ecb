"""Typed config of the prep stage (docs/data.md explains every option with examples)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from proactive_rl.shared.config import StageConfig

SYSTEM_PROMPT = "You are a helpful proactive assistant."

# Only meaningful when prep builds the SFT conversations itself (sft_source="build").
BUILD_ONLY = ("known_categories", "known_from", "known_checkpoint", "known_threshold")


class PrepConfig(StageConfig):
    sft_source: Literal["build"] | Path | None = Field(
        None,
        description="SFT conversations in the users' JSONL format ({messages, id, sub_category}), "
        "or 'build' to write warm-up conversations from the RL train questions (think, proactive "
        "when the model is unlikely to know, plain answer; see known_*). "
        "Default: <data-dir>/sample/sft.jsonl.",
    )
    rl_source: Path | list[Path] | None = Field(
        None,
        description="RL questions: one file or a list of files, concatenated in the given order. "
        "Each is the users' JSONL ({id, messages: [user, assistant], sub_category}) or a SimpleQA "
        "CSV, optionally .csv.gz (columns question/true_answer or problem/answer; sub_category "
        "'simpleQA'). Default: <data-dir>/sample/rl.jsonl.",
    )
    rl_source_limits: list[int | None] | None = Field(
        None,
        description="One entry per rl_source: keep only the first N questions of that file "
        "(null = all of it), e.g. [null, 300].",
    )
    shuffle_rl: bool = Field(
        False,
        description="Shuffle the mixed RL questions (seeded by `seed`) before the train/test "
        "split. Off: the test split is the tail in file order, as in the recipe; turn it on "
        "with several sources so both splits hold every kind of question.",
    )
    num_sft_samples: int = Field(
        50, ge=1, description="SFT conversations sampled (NUM_SFT_SAMPLES); all if fewer exist."
    )
    seed: int = Field(
        42,
        description="Seed of the SFT sample, the RL shuffle and the warm-up text. The sweep's "
        "`seed` axis sets it with every other stage's seed, as does "
        "the pipeline's SEED knob (env PROACTIVE_SEED).",
    )
    proactive_fraction: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Target fraction of sampled SFT conversations with a <proactive> block "
        "(seeded); null samples as it falls.",
    )
    known_categories: list[str] = Field(
        default_factory=lambda: ["arithmetic", "general"],
        description="sft_source=build: sub_categories the model is assumed to know (plain "
        "answer); every other one (simpleQA too) gets a proactive reply. known_from overrides "
        "this for the questions it measured.",
    )
    known_from: Path | None = Field(
        None,
        description="sft_source=build: samples.jsonl written by `proactive eval --set "
        "split=train` (rows with question_index, correct): a question is known when its measured "
        "accuracy is >= known_threshold.",
    )
    known_checkpoint: str | None = Field(
        None,
        description="sft_source=build: which checkpoint's rows of known_from to use when it "
        "holds several (its 'checkpoint' key); null = the first one in the file.",
    )
    known_threshold: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="sft_source=build: measured accuracy at or above which a question is known.",
    )
    rl_known_fraction: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="Order the RL train split so that every prefix of it holds this fraction of "
        "questions known by known_from's measurement (known_threshold), seeded: grpo's pool "
        "(max_prompts, the first rows) then teaches both when to answer and when to hedge, "
        "instead of mostly questions the model never gets right. null = the split's own order. "
        "Needs known_from; the test split is unchanged.",
    )
    rl_known_within_kinds: bool = Field(
        False,
        description="With rl_known_fraction: balance every sub_category on its own. The kinds "
        "holding both known and unknown questions lead the order, each at rl_known_fraction "
        "known, so that grpo's pool cannot tell known from unknown by kind and must learn it per "
        "question. false = one balance over the whole split (kinds the model mostly knows then "
        "make most of the pool's known questions).",
    )
    test_fraction: float = Field(
        0.05,
        ge=0.0,
        lt=1.0,
        description="Tail of the RL questions (file order, or the shuffled order with "
        "shuffle_rl) held out as test.",
    )
    test_rows: int | None = Field(
        None,
        ge=1,
        description="Hold out exactly this many questions (the tail) as the test split instead "
        "of test_fraction, e.g. 200 for evaluation with intervals of about +-5 points.",
    )
    min_test_rows: int = Field(
        4, ge=1, description="If the test split is empty, this many train rows are used as test."
    )
    max_rl_rows: int | None = Field(
        None,
        ge=1,
        description="Keep only the first N RL questions of the mix, after shuffle_rl (quick runs).",
    )
    system_prompt: str = Field(SYSTEM_PROMPT, description="System turn of every RL prompt.")
    data_source: str = Field("sampleQA", description="`data_source` column of the RL parquet.")

    @field_validator("sft_source", "rl_source", "known_from")
    @classmethod
    def _recorded_absolute(cls, value: object) -> object:
        # recorded in data/processed/STABLE.json, read later from other working folders
        if isinstance(value, list):
            return [Path(os.path.abspath(path)) for path in value]
        return Path(os.path.abspath(value)) if isinstance(value, Path) else value

    @model_validator(mode="after")
    def _consistent(self) -> PrepConfig:
        self._check_rl_sources()
        misplaced = [name for name in BUILD_ONLY if name in self.model_fields_set]
        if self.sft_source != "build" and misplaced:
            raise ValueError(
                f"{', '.join(misplaced)}: used only with sft_source=build (set it, or drop them)"
            )
        for name in ("known_checkpoint", "rl_known_fraction"):
            if getattr(self, name) is not None and self.known_from is None:
                raise ValueError(f"{name} needs known_from")
        if self.rl_known_within_kinds and self.rl_known_fraction is None:
            raise ValueError("rl_known_within_kinds needs rl_known_fraction")
        return self

    def _check_rl_sources(self) -> None:
        """At least one RL file, and one limit (>= 1 or null) per file when limits are given."""
        if isinstance(self.rl_source, list) and not self.rl_source:
            raise ValueError("rl_source is an empty list; give at least one file")
        n_sources = len(self.rl_source) if isinstance(self.rl_source, list) else 1
        if self.rl_source_limits is None:
            return
        if len(self.rl_source_limits) != n_sources:
            raise ValueError(
                f"rl_source_limits has {len(self.rl_source_limits)} entries for "
                f"{n_sources} rl_source file(s); give one limit (or null) per file"
            )
        if any(limit is not None and limit < 1 for limit in self.rl_source_limits):
            raise ValueError("rl_source_limits entries must be >= 1 or null")

    def rl_paths(self, default: Path) -> list[Path]:
        """The RL source files in mix order."""
        if self.rl_source is None:
            return [default]
        return list(self.rl_source) if isinstance(self.rl_source, list) else [self.rl_source]
