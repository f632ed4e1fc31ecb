"""Config loading: one pydantic model per stage, a TOML file, and `key=value` overrides.

Every stage uses the same override syntax (`--set key=value`, dotted keys for nested fields),
validated by the stage's model; unknown keys fail with the list of valid ones.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import tomllib
from pydantic import BaseModel, ConfigDict, ValidationError

from proactive_rl.shared.errors import UserError
from proactive_rl.shared.trackers import pipeline_loggers
from proactive_rl.shared.verl import keys_of, translate
from proactive_rl.shared.verl_defaults import default_note

C = TypeVar("C", bound=BaseModel)


class StageConfig(BaseModel):
    """Base settings shared by every stage's config: unknown keys are errors, values are checked
    on assignment too. (A pydantic setting, not a framework: stages subclass it for its config.)"""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def parse_value(raw: str) -> Any:
    """Parse an override value: JSON when it parses (numbers, booleans, lists), else a string.

    >>> parse_value("0.5"), parse_value("true"), parse_value("[1, 2]"), parse_value("abc")
    (0.5, True, [1, 2], 'abc')
    """
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one `a.b.c=value` override to a nested dict in place."""
    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"override {assignment!r} is not of the form key=value")
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"override {assignment!r}: {part!r} is not a section")
        node = child
    node[leaf] = parse_value(raw)


def _seed_dict_default(model: type[BaseModel], data: dict[str, Any], assignment: str) -> None:
    """`--set reward_kwargs.foo=1` edits one key of a dict field, so it starts from the field's
    default (keeping beta) rather than from nothing; `--set reward_kwargs={...}` replaces it."""
    head, dot, _ = assignment.partition("=")[0].strip().partition(".")
    field = model.model_fields.get(head)
    if not dot or head in data or field is None:
        return
    default = field.get_default(call_default_factory=True)
    if isinstance(default, dict):
        data[head] = copy.deepcopy(default)


def _field_names(model: type[BaseModel], prefix: str = "") -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names.extend(_field_names(annotation, f"{prefix}{name}."))
        else:
            names.append(f"{prefix}{name}")
    return names


def recipes_dir() -> Path:
    """Packaged recipes: proactive_rl/stages/recipes (stages/recipes in the repository)."""
    from importlib.resources import files

    return Path(str(files("proactive_rl.stages") / "recipes"))


def recipe_names() -> list[str]:
    return sorted(p.stem for p in recipes_dir().glob("*.toml"))


def read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{path}: not valid TOML: {err}") from err


def recipe_section(recipe: str, stage: str) -> dict[str, Any]:
    """The `[stage]` table of a recipe: a packaged name (`qwen3-8b`) or a TOML file path. A
    recipe is one file for the whole pipeline, so one variable (RECIPE) selects it everywhere."""
    is_file = recipe.endswith(".toml")
    path = Path(recipe) if is_file else recipes_dir() / f"{recipe}.toml"
    if not is_file and not path.is_file():
        raise UserError(
            f"unknown recipe {recipe!r}: give a .toml file or one of {', '.join(recipe_names())}"
        )
    section = read_toml(path).get(stage, {})
    if not isinstance(section, dict):
        raise UserError(f"{path}: [{stage}] must be a table")
    return section


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if both else value
    return out


def load_config(
    model: type[C],
    config_file: Path | None = None,
    overrides: tuple[str, ...] | list[str] = (),
    recipe: str | None = None,
    stage: str = "",
) -> C:
    """Build `model` from, lowest first: the recipe's `[stage]` table, the pipeline's seed
    (PROACTIVE_SEED) and trackers (PROACTIVE_LOGGER), a TOML file, overrides (ours, or veRL's
    dotted keys: shared/verl.py rewrites those to `stage`'s fields)."""
    data: dict[str, Any] = recipe_section(recipe, stage) if recipe else {}
    if "seed" in model.model_fields and (seed := pipeline_seed()) is not None:
        data["seed"] = seed
    if "tracking" in model.model_fields and (loggers := pipeline_loggers()) is not None:
        data = _merge(data, {"tracking": {"logger": loggers}})
    if config_file is not None:
        data = _merge(data, read_toml(config_file))
    for assignment in translate(overrides, stage):
        _seed_dict_default(model, data, assignment)
        apply_override(data, assignment)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            loc = ".".join(str(p) for p in e["loc"])
            if e["type"] == "extra_forbidden":
                lines.append(f"  unknown key {loc!r}")
            else:
                lines.append(f"  {loc}: {e['msg']} (got {e.get('input')!r})")
        valid = ", ".join(_field_names(model))
        source = f" in {config_file}" if config_file else ""
        raise UserError(
            f"invalid {model.__name__}{source}:\n" + "\n".join(lines) + f"\nvalid keys: {valid}"
        ) from err


SEED_ENV = "PROACTIVE_SEED"


def pipeline_seed(environ: Mapping[str, str] = os.environ) -> int | None:
    """The one seed knob of the pipeline (compose and k8s: SEED): when set, the `seed` of every
    stage that has one; unset or empty, each stage keeps its own default.

    >>> pipeline_seed({"PROACTIVE_SEED": "5"}), pipeline_seed({"PROACTIVE_SEED": ""})
    (5, None)
    """
    raw = environ.get(SEED_ENV, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"{SEED_ENV}={raw!r} is not an integer (compose/k8s knob SEED)") from None


def describe(model: type[BaseModel], prefix: str = "", stage: str = "") -> str:
    """One entry per field (`name = default` then its description), nested sections dotted,
    for `--help` epilogs; with `stage`, the veRL keys that set a field and, where our default is
    not veRL's, whose it is and why (docs/verl.md has the table)."""
    keys = keys_of(stage) if stage else {}
    table = "sft" if stage == "sft" else "rl"
    out = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out.append(describe(annotation, f"{prefix}{name}.", stage))
            continue
        default = field.get_default(call_default_factory=True)
        out.append(f"{prefix}{name} = {default!r}\n    {field.description or ''}")
        for key in keys.get(f"{prefix}{name}", []):
            note = default_note(table, key)
            out.append(f"    veRL: {key}" + (f" ({note})" if note else ""))
    return "\n".join(out)
