"""One rule for defaults: each veRL key we map defaults here to veRL's value (as recorded in
shared/verl_defaults.py, which tests/verl checks against the installed veRL release), or to the
users' recipe's, or differs for a reason written down. A default changed without saying so, a
recipe value we no longer follow, or a stale deviation fails here."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proactive_rl.shared.config import load_config
from proactive_rl.shared.errors import UserError
from proactive_rl.shared.verl import RL_KEYS, SFT_KEYS, translate
from proactive_rl.shared.verl_defaults import (
    DEVIATIONS,
    RECIPE,
    REQUIRED,
    SFT_ALIASES,
    SFT_DEVIATIONS,
    SFT_RECIPE,
    SFT_VERL_DEFAULTS,
    VERL_DEFAULTS,
)
from proactive_rl.stages.eval.config import EvalConfig
from proactive_rl.stages.grpo.config import GrpoConfig
from proactive_rl.stages.rollout.config import RolloutConfig
from proactive_rl.stages.sft.config import SftConfig

CONFIGS = {"sft": SftConfig, "rollout": RolloutConfig, "grpo": GrpoConfig, "eval": EvalConfig}
TABLES = {
    "rl": (RL_KEYS, VERL_DEFAULTS, RECIPE, DEVIATIONS, ("rollout", "grpo", "eval")),
    "sft": (SFT_KEYS, SFT_VERL_DEFAULTS, SFT_RECIPE, SFT_DEVIATIONS, ("sft",)),
}


def _get(config: Any, field: str) -> Any:
    for part in field.split("."):
        config = getattr(config, part)
    return list(config) if isinstance(config, tuple) else config


def _as_set(stage: str, key: str, value: Any, field: str) -> Any:
    """Our field after `--set key=<value>` on the stage (veRL's spelling, translated)."""
    config = load_config(CONFIGS[stage], None, [f"{key}={json.dumps(value)}"], stage=stage)
    return _get(config, field)


REFUSED = object()


def _as_set_or_refused(stage: str, key: str, value: Any, field: str) -> Any:
    """As _as_set; veRL's value may be one we refuse (n=1: a group of one learns nothing)."""
    try:
        return _as_set(stage, key, value, field)
    except UserError:
        return REFUSED


def _cases():
    for name, (table, *_) in TABLES.items():
        for key in table:
            if key.endswith(".*") or (name == "sft" and key in SFT_ALIASES):
                continue  # a dict of kwargs (reward_kwargs), or an old name: tested below
            yield pytest.param(name, key, id=f"{name}:{key}")


@pytest.mark.parametrize(("table", "key"), list(_cases()))
def test_our_default_is_verls_or_the_recipes_or_a_written_deviation(table, key):
    keys, verl, recipe, deviations, stages = TABLES[table]
    assert key in verl, f"{key}: record veRL's default in shared/verl_defaults.py"
    assert not (key in recipe and key in deviations), key
    targets = keys[key]
    if not targets:  # a value we check only: veRL's or the recipe's must be accepted
        translate([f"{key}={json.dumps(recipe.get(key, verl[key]))}"], stages[0])
        return
    for stage, fields in targets.items():
        for field in (fields,) if isinstance(fields, str) else fields:
            ours = _get(CONFIGS[stage](), field)
            if verl[key] == REQUIRED:
                as_verl = REFUSED
            elif key in deviations or key in recipe:
                as_verl = _as_set_or_refused(stage, key, verl[key], field)
            else:
                as_verl = _as_set(stage, key, verl[key], field)
            if key in deviations:
                assert as_verl != ours, f"{key}: no longer differs, drop the deviation"
            elif key in recipe:
                assert ours == _as_set(stage, key, recipe[key], field), (key, stage, field)
                assert as_verl != ours, f"{key}: veRL's default now, drop it from RECIPE"
            else:
                assert ours == as_verl, (
                    f"{stage}.{field} defaults to {ours!r}, veRL's {key} to {verl[key]!r}: "
                    "follow veRL or write the deviation in shared/verl_defaults.py"
                )


@pytest.mark.parametrize("table", list(TABLES))
def test_every_recorded_key_is_mapped(table):
    keys, verl, recipe, deviations, _ = TABLES[table]
    aliases = set(SFT_ALIASES) if table == "sft" else set()
    mapped = {key for key in keys if not key.endswith(".*")} - aliases
    assert mapped == set(verl), "record veRL's default of each key in shared/verl_defaults.py"
    assert set(recipe) | set(deviations) <= set(verl)


def test_old_sft_names_set_what_their_successors_set():
    for old, new in SFT_ALIASES.items():
        assert SFT_KEYS[old] == SFT_KEYS[new], (old, new)
