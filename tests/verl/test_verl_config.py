"""Our record of veRL's defaults (shared/verl_defaults.py) is what the pinned veRL release ships:
each value is read from the installed package's own trainer configs, not from our reading of
its docs. tests/unit/test_verl_defaults.py then checks our defaults against this record."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import verl
from omegaconf import MissingMandatoryValue, OmegaConf

from proactive_rl.shared.verl_defaults import REQUIRED, SFT_VERL_DEFAULTS, VERL_DEFAULTS

CONFIG_DIR = Path(verl.__file__).parent / "trainer" / "config"


@functools.cache
def _ppo_config() -> Any:
    # veRL's RL trainer config, flattened by veRL itself (scripts/generate_trainer_config.sh)
    return OmegaConf.load(CONFIG_DIR / "_generated_ppo_trainer.yaml")


@functools.cache
def _sft_config() -> Any:
    """sft_trainer_engine.yaml composed with its Hydra defaults list (`folder@field: name`
    loads folder/name.yaml under field; `_self_` last, so the file's own values win)."""
    main = OmegaConf.load(CONFIG_DIR / "sft_trainer_engine.yaml")
    composed = OmegaConf.create({})
    for entry in main.pop("defaults"):
        if entry == "_self_":
            continue
        ((spec, name),) = entry.items()
        folder, _, field = spec.partition("@")
        part = OmegaConf.load(CONFIG_DIR / folder / f"{name}.yaml")
        part.pop("defaults", None)
        composed = OmegaConf.merge(composed, {field or folder: part})
    return OmegaConf.merge(composed, main)


def _sft_group_choices() -> dict[str, str]:
    """`engine`, `optim`: which config of the group the defaults list picks (a choice, not a
    value of the composed config)."""
    main = OmegaConf.load(CONFIG_DIR / "sft_trainer_engine.yaml")
    choices = {}
    for entry in main.defaults:
        if entry != "_self_":
            ((spec, name),) = entry.items()
            choices[spec.partition("@")[2] or spec] = name
    return choices


def _verl_value(config: Any, key: str) -> Any:
    try:
        node = OmegaConf.select(config, key, default=KeyError, throw_on_missing=True)
    except MissingMandatoryValue:  # "???": veRL makes the user give it
        return REQUIRED
    assert node is not KeyError, f"veRL's config has no {key}"
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


@pytest.mark.parametrize(("key", "recorded"), sorted(VERL_DEFAULTS.items()))
def test_recorded_rl_default_is_the_installed_releases(key, recorded):
    assert _verl_value(_ppo_config(), key) == recorded, key


@pytest.mark.parametrize(("key", "recorded"), sorted(SFT_VERL_DEFAULTS.items()))
def test_recorded_sft_default_is_the_installed_releases(key, recorded):
    if "." not in key:
        assert _sft_group_choices()[key] == recorded, key
    else:
        assert _verl_value(_sft_config(), key) == recorded, key


def test_the_pinned_release_is_the_one_recorded():
    assert verl.__version__ == "0.9.1"
