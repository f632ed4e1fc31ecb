"""The sweep's settings: which runs (grids of settings), how to launch them, where they go.

A grid maps an axis to its values; a run is one combination. Several grids are a union (the
recipe's three experiments are three one-axis grids around one common run). An axis is a stage
field (`rollout.reward_kwargs.beta`, `grpo.n`, `prep.num_sft_samples`), a veRL key (given to
rollout, grpo and eval, each taking its own), or a short name from AXES, or `sft`: true runs the
warm-up, false starts RL from the base model (the recipe's "without SFT" baseline).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from proactive_rl.shared.config import StageConfig

STAGES = ("prep", "sft", "rollout", "grpo", "eval")
RL_STAGES = ("rollout", "grpo", "eval")
VERL_SECTIONS = ("data", "actor_rollout_ref", "custom_reward_function", "trainer", "algorithm")

# Short axis names -> the fields they set. beta goes to eval too: a run is scored with the
# reward it was trained on.
AXES: dict[str, tuple[str, ...]] = {
    "sft_samples": ("prep.num_sft_samples",),
    "sft_epochs": ("sft.epochs",),
    "beta": ("rollout.reward_kwargs.beta", "eval.reward_kwargs.beta"),
    "n": ("grpo.n",),
    "reward": ("rollout.reward", "eval.reward"),
    # ternary's value of a hedge (reward_kwargs.abstain), training's and eval's
    "abstain": ("rollout.reward_kwargs.abstain", "eval.reward_kwargs.abstain"),
    "rl_epochs": ("grpo.epochs",),
    # every stage that draws random numbers: one value, each stage deriving its draws from it
    "seed": ("prep.seed", "sft.seed", "rollout.seed", "grpo.seed", "eval.seed"),
}
# How a run's name spells an axis (veRL's `sft50_rl_beta0.5_n16`), in this order.
NAME_PARTS: tuple[tuple[str, str], ...] = (
    ("sft_samples", "sft"),
    ("sft_epochs", "ep"),
    ("beta", "beta"),
    ("n", "n"),
    ("reward", ""),
    ("abstain", "abstain"),
    ("rl_epochs", "rlep"),
    ("seed", "seed"),
)

# The recipe's experiments (docs/seed-pipeline.md): SFT sample count, with vs without SFT, beta,
# each varied around the recipe's run (50 samples, beta 0.5). `recipe` runs all three.
RECIPE_RUN = {"sft_samples": 50, "beta": 0.5}
EXPERIMENTS: dict[str, dict[str, list[Any]]] = {
    "sft_samples": {"sft_samples": [25, 50, 100]},
    "with_without_sft": {"sft": [True, False]},
    "beta": {"beta": [0.3, 0.5, 0.7]},
}
PRESETS: dict[str, dict[str, Any]] = {
    **{name: {"defaults": RECIPE_RUN, "grids": [grid]} for name, grid in EXPERIMENTS.items()},
    "recipe": {"defaults": RECIPE_RUN, "grids": list(EXPERIMENTS.values())},
}


NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class SweepConfig(StageConfig):
    name: str = Field(
        "sweep",
        pattern=NAME.pattern,
        description="The sweep's folder: <checkpoints>/sweeps/<name> (runs, shared SFT, report).",
    )
    preset: Literal["sft_samples", "with_without_sft", "beta", "recipe"] | None = Field(
        None,
        description="A ready grid: the recipe's experiments (sft_samples 25/50/100, "
        "with_without_sft, beta 0.3/0.5/0.7) or all three (recipe). Its grids and defaults come "
        "first; `grids` and `defaults` add to them.",
    )
    grids: list[dict[str, list[Any]]] = Field(
        default_factory=list,
        description="Grids of axis -> values; the runs are the union of their products.",
    )
    defaults: dict[str, Any] = Field(
        default_factory=dict,
        description="Axis values of every run unless a grid varies them (they also name runs).",
    )
    base_model: str = Field(
        "builtin:tiny",
        description="The model every run starts from: SFT's base_model, and the RL start of the "
        "runs without SFT (builtin:tiny, builtin:smollm2 or a local folder).",
    )
    settings: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Fixed `key=value` settings per stage (prep, sft, rollout, grpo, eval) for "
        "every run, e.g. {grpo = ['max_steps=4'], rollout = ['sampling.max_new_tokens=32']}; "
        "`rl` goes to rollout, grpo and eval (veRL keys welcome).",
    )
    launcher: Literal["host", "compose"] = Field(
        "host",
        description="host: the `proactive` command here; compose: `docker compose run` of each "
        "stage's image (the folders must then be under ./data and ./checkpoints).",
    )
    jobs: int = Field(1, ge=1, description="Runs at the same time (each is a rollout + grpo pair).")
    data_dir: Path = Field(Path("data"), description="Data volume holding the inputs (sample/).")
    checkpoints_dir: Path = Field(Path("checkpoints"), description="Checkpoints volume.")

    eval_checkpoints: list[str] = Field(
        default_factory=lambda: ["final"],
        description="What each run's eval compares (eval's checkpoint specs): the final policy "
        "alone, or e.g. [base, sft, final] for the learning goals and the reward-optimum "
        "yardstick's base accuracy in every run's report (sft and base then name the shared "
        "SFT epoch the run started from and its base model).",
    )
    eval_sets: dict[str, Path] = Field(
        default_factory=dict,
        description="Question sets of another kind every run is also evaluated on, never "
        "trained on: name -> an RL questions file (the users' JSONL or a SimpleQA CSV), e.g. "
        "{nq-open = '../shared/data/nq-open/nq_open_eval_1000.jsonl'}. Each is prepared once "
        "(<data>/sweeps/<name>/set-<set>), graded whole into each run's eval/<set>/ with the "
        "same checkpoints, and reported beside the held-out split.",
    )
    only: list[str] = Field(
        default_factory=list,
        description="Run just these runs of the plan (names as --dry-run lists them), for a "
        "sweep too long for one sitting: the others are left as they are, and the report "
        "compares the runs given. Empty: every run.",
    )
    eval_set_rows: int | None = Field(
        None, ge=1, description="Only the first N questions of each eval set (null: all)."
    )

    @field_validator("eval_sets")
    @classmethod
    def _set_names(cls, value: dict[str, Path]) -> dict[str, Path]:
        for name, path in value.items():
            if not NAME.match(name) or name == "report":
                raise ValueError(
                    f"eval set name {name!r}: letters, digits, '_', '.', '-' (not 'report', the "
                    "held-out split's report)"
                )
            if not Path(path).expanduser().is_file():
                raise ValueError(f"eval set {name!r}: {path} is not a file")
        return value

    @field_validator("settings")
    @classmethod
    def _known_stages(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        unknown = set(value) - set(STAGES) - {"rl"}
        if unknown:
            raise ValueError(f"unknown stage(s) {sorted(unknown)}; use {', '.join(STAGES)} or rl")
        return value
