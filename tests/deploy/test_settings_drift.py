"""One owner per setting (deploy/settings_drift.py): every copy of a default agrees with its
owner, the stage's config class, and the override files override. Each perturbation below edits
one copy in a temporary tree and the check must name that file and key."""

from __future__ import annotations

import doctest
import shutil
from pathlib import Path

import pytest
import settings_drift
import stage_table
from settings_drift import Drift, check, inputs
from stage_table import CONFIGS, KNOB_FIELDS, KNOBS, SAME_NAME, env_value, field_default

from proactive_rl.stages.sweep.config import AXES, SweepConfig
from proactive_rl.stages.sweep.plan import stage_overrides

from .conftest import ROOT


def copy_inputs(tmp_path: Path) -> Path:
    for name in inputs():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path}: {old!r} not found (update this test)"
    path.write_text(text.replace(old, new, 1))


def test_no_copy_disagrees_with_its_owner():
    found = check()
    assert not found, "settings drift:\n" + "\n".join(map(str, found))


# (file, old text, new text, the key the report must name, a word of its detail)
PERTURBATIONS = [
    ("compose.yaml", "${RL_BETA:-0.5}", "${RL_BETA:-0.7}", "RL_BETA", "owner"),
    ("compose.gpu.yaml", "${TRAIN_GPUS:-0,1}", "${TRAIN_GPUS:-0}", "TRAIN_GPUS", "owner"),
    (".env.example", "RL_ROLLOUTS=16", "RL_ROLLOUTS=8", "RL_ROLLOUTS", "default"),
    (".env.example", "RL_EPOCHS=10\n", "", "RL_EPOCHS", "missing"),
    ("deploy/k8s/base/knobs.env", "RL_EPOCHS=10", "RL_EPOCHS=5", "RL_EPOCHS", "k8s-render"),
    ("scripts/smoke.env", "RL_EPOCHS=1\n", "RL_EPOCHS=1\nRL_BETA=0.5\n", "RL_BETA", "restates"),
    ("scripts/smoke.env", "# pinned: the smoke", "# the smoke", "BASE_MODEL_PATH", "restates"),
    (
        "scripts/smoke.env",
        "--set mini_batch_prompts=8",
        "--set mini_batch_prompts=8 --set loss.is_correction=none",
        "GRPO_ARGS loss.is_correction",
        "restates",
    ),
    ("scripts/smoke.env", "--set n=2", "--set nn=2", "EVAL_ARGS nn", "not a setting"),
    (
        "scripts/smoke.env",
        "--set prompts_per_step=8",
        "--set data.train_batch_size=256",
        "GRPO_ARGS prompts_per_step",  # veRL's key, read as the field it sets
        "restates",
    ),
    (
        "deploy/k8s/overlays/cpu/knobs.env",
        "NUM_SFT_SAMPLES=96",
        "NUM_SFT_SAMPLES=40",
        "NUM_SFT_SAMPLES",
        "demo.env",
    ),
    (
        "deploy/k8s/overlays/gpu/knobs.env",
        "RUN_MODE=\n",
        "RUN_MODE=\nRL_ROLLOUTS=16\n",
        "RL_ROLLOUTS",
        "restates",
    ),
    (
        "stages/recipes/qwen3-8b.toml",
        "[eval]\n",
        "[rollout.reward_kwargs]\nbeta = 0.5\n\n[eval]\n",
        "[rollout] reward_kwargs.beta",
        "restates",
    ),
    (
        "stages/recipes/qwen3-8b.toml",
        "max_staleness = 1",
        "max_staleness = 0",
        "[grpo] max_staleness",
        "restates",
    ),
    (
        "README.md",
        "| GRPO group size `n` | 16 |",
        "| GRPO group size `n` | 8 |",
        "RL_ROLLOUTS",
        "says",
    ),
    ("docs/grpo.md", "| `max_staleness` | 0 |", "| `max_staleness` | 1 |", "max_staleness", "says"),
    (
        "docs/data.md",
        "`known_threshold` | none, 0.5 |",
        "`known_threshold` | none, 0.25 |",
        "known_threshold",
        "says",
    ),
    ("docs/data.md", "| `shuffle_rl` |", "| `shuffle_rll` |", "shuffle_rll", "not a setting"),
]


@pytest.mark.parametrize(
    ("name", "old", "new", "key", "word"),
    PERTURBATIONS,
    ids=[f"{p[0]}:{p[3]}" for p in PERTURBATIONS],
)
def test_a_perturbed_copy_is_reported_with_its_file_and_key(tmp_path, name, old, new, key, word):
    root = copy_inputs(tmp_path)
    assert check(root) == [], "the copied tree starts clean"
    edit(root / name, old, new)
    found = check(root)
    assert [(d.path, d.key) for d in found] == [(name, key)], found
    assert word in found[0].detail and str(found[0]).startswith(f"{name}: {key}: ")


def test_the_report_is_one_line_per_drift(capsys, monkeypatch):
    monkeypatch.setattr(settings_drift, "check", lambda: [Drift("a.env", "K", "why")])
    assert settings_drift.main() == 1
    assert capsys.readouterr().err == "settings drift: a.env: K: why\n"


def test_the_knobs_take_their_defaults_from_the_config_classes():
    assert set(KNOB_FIELDS) == {
        "NUM_SFT_SAMPLES",
        "SFT_EPOCHS",
        "BASE_MODEL_PATH",
        "RL_BETA",
        "RL_ROLLOUTS",
        "RL_EPOCHS",
        "ROLLOUT_WORKERS",
    }
    for knob, (stage, key) in KNOB_FIELDS.items():
        assert KNOBS[knob] == env_value(field_default(stage, key)), knob
    assert KNOB_FIELDS["RL_ROLLOUTS"] == ("grpo", "n")


def test_the_sweep_seed_axis_sets_every_stage_that_has_a_seed():
    seeded = {stage for stage, model in CONFIGS.items() if "seed" in model.model_fields}
    assert seeded == {"prep", "sft", "rollout", "grpo", "eval"}
    assert sorted(AXES["seed"]) == sorted(f"{stage}.seed" for stage in seeded)
    overrides = stage_overrides(SweepConfig(), {"seed": 3})
    assert all("seed=3" in overrides[stage] for stage in seeded)


def test_the_default_seeds_do_not_move():
    # A default run's outputs depend on them: they are pinned here on purpose.
    seeds = {stage: field_default(stage, "seed") for stage in CONFIGS}
    assert seeds == {"prep": 42, "sft": 42, "rollout": 1234, "grpo": 42, "eval": 7}


def test_evals_n_is_not_the_group_size_wherever_it_is_described():
    description = CONFIGS["eval"].model_fields["n"].description
    for text in (description, SAME_NAME["eval.n"]):
        assert "val_kwargs.n" in text and "not the group size" in text, text
    assert "group size" in CONFIGS["grpo"].model_fields["n"].description
    for doc in ("docs/eval.md", ".env.example", "scripts/smoke.env"):
        assert "not the group size" in (ROOT / doc).read_text().replace("\n", " "), doc


def test_examples():
    assert doctest.testmod(settings_drift).failed == 0
    assert doctest.testmod(stage_table).failed == 0


def test_python_copies_are_reported_too(monkeypatch):
    # eval's reward and the sweep's RECIPE_RUN copy owners they may not import (no stage imports
    # another): the check compares them with the owners' defaults.
    monkeypatch.setattr(settings_drift, "RECIPE_RUN", {"sft_samples": 50, "beta": 0.7})
    owner = settings_drift.field_default

    def eval_drifted(stage: str, key: str):
        return {"beta": 0.6} if (stage, key) == ("eval", "reward_kwargs") else owner(stage, key)

    monkeypatch.setattr(settings_drift, "field_default", eval_drifted)
    found = {(d.path, d.key) for d in settings_drift.owner_copies_drift()}
    assert found == {
        ("stages/eval/config.py", "reward_kwargs"),
        ("stages/sweep/config.py", "RECIPE_RUN beta"),
    }
