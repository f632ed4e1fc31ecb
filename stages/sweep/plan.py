"""From a SweepConfig to the runs and the steps they share (pure: no processes, no files).

Runs that share a prefix share its work: one prep per distinct prep settings (its own data
folder), one SFT per distinct (data, SFT settings) (its own run folder, evaluated once against
the base model), and per run an RL folder whose policy 0 starts from that SFT's last epoch (or
from the base model when the run has sft=false).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proactive_rl.shared.errors import UserError
from proactive_rl.stages.sweep.config import (
    AXES,
    NAME_PARTS,
    PRESETS,
    RL_STAGES,
    STAGES,
    VERL_SECTIONS,
    SweepConfig,
)


@dataclass(frozen=True)
class Prefix:
    """A shared step: a prep (data folder) or an SFT (run folder) several runs may use."""

    key: str
    folder: Path
    overrides: tuple[str, ...]


@dataclass
class Run:
    name: str
    axes: dict[str, Any]
    data: Prefix
    sft: Prefix | None  # None: RL starts from the base model
    folder: Path
    overrides: dict[str, tuple[str, ...]] = field(default_factory=dict)  # rollout, grpo, eval


def _points(config: SweepConfig) -> list[dict[str, Any]]:
    """Every run's axis values: each grid's product over the defaults, in order, deduplicated."""
    preset = PRESETS[config.preset] if config.preset else {"defaults": {}, "grids": []}
    defaults = {**preset["defaults"], **config.defaults}
    grids = [*preset["grids"], *config.grids] or [{}]
    points: list[dict[str, Any]] = []
    for grid in grids:
        for combo in itertools.product(*grid.values()):
            point = {**defaults, **dict(zip(grid, combo, strict=True))}
            if point.get("sft") is True:  # the default: the same run as one without the axis
                del point["sft"]
            if point not in points:
                points.append(point)
    return points


def _targets(axis: str) -> list[str]:
    """The `stage.key` fields an axis sets."""
    if axis in AXES:
        return list(AXES[axis])
    stage, dot, _ = axis.partition(".")
    if dot and stage in STAGES:
        return [axis]
    if axis.split(".", 1)[0] in VERL_SECTIONS:  # each RL stage takes the veRL keys it has
        return [f"{s}.{axis}" for s in RL_STAGES]
    raise UserError(
        f"unknown sweep axis {axis!r}: use one of {', '.join([*AXES, 'sft'])}, a stage field "
        "(e.g. grpo.max_steps, rollout.reward_kwargs.beta) or a veRL key"
    )


def _value(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def stage_overrides(config: SweepConfig, point: dict[str, Any]) -> dict[str, list[str]]:
    """Per stage, the sweep's fixed settings then this run's axis values."""
    out = {stage: list(config.settings.get(stage, [])) for stage in STAGES}
    for stage in RL_STAGES:
        out[stage] += config.settings.get("rl", [])
    for axis, value in point.items():
        if axis == "sft":
            continue
        for target in _targets(axis):
            stage, _, key = target.partition(".")
            out[stage].append(f"{key}={_value(value)}")
    return out


def run_name(point: dict[str, Any]) -> str:
    """veRL's style: `sft50_rl_beta0.5_n16`, `nosft_rl_beta0.5`; other axes as key+value.

    >>> run_name({"sft_samples": 50, "beta": 0.5, "n": 16})
    'sft50_rl_beta0.5_n16'
    >>> run_name({"sft": False, "sft_samples": 50, "beta": 0.3, "grpo.max_steps": 4})
    'nosft_rl_beta0.3_max_steps4'
    """
    named = dict(NAME_PARTS)
    head = "nosft" if point.get("sft") is False else f"sft{point.get('sft_samples', '')}"
    parts = [head, "rl"]
    for axis, prefix in NAME_PARTS:
        if axis in point and axis != "sft_samples":
            parts.append(f"{prefix}{point[axis]}")
    for axis, value in point.items():
        if axis not in named and axis != "sft":
            parts.append(f"{axis.rsplit('.', 1)[-1]}{value}")
    name = "_".join(parts)
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in name)


def sweep_root(config: SweepConfig) -> Path:
    """The sweep's folder: its ledger, logs, shared SFTs, one folder per run, the report."""
    return config.checkpoints_dir / "sweeps" / config.name


def sweep_data_root(config: SweepConfig) -> Path:
    """The sweep's data folders: one per prep variant and per eval set."""
    return config.data_dir / "sweeps" / config.name


def sample_cache(config: SweepConfig) -> Path:
    """Where the runs' evaluations keep their sampled responses: the base model and a shared
    SFT epoch are sampled once for every run (EvalConfig.sample_cache)."""
    return sweep_root(config) / "eval-samples"


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:8]


def plan(config: SweepConfig) -> list[Run]:
    """The runs, with their shared prep and SFT prefixes."""
    root = sweep_root(config)
    data_root = sweep_data_root(config)
    sample = config.data_dir / "sample"
    runs: list[Run] = []
    names: set[str] = set()
    for point in _points(config):
        overrides = stage_overrides(config, point)
        prep = overrides["prep"]
        # the users' files stay where they are; each prep variant writes its own data folder
        if not any(o.startswith("sft_source=") for o in prep):
            prep.insert(0, f"sft_source={sample / 'sft.jsonl'}")
        if not any(o.startswith(("rl_source=", "rl_source.")) for o in prep):
            prep.insert(0, f"rl_source={sample / 'rl.jsonl'}")
        data_key = _key(prep)
        data = Prefix(data_key, data_root / f"prep-{data_key}", tuple(prep))
        sft = None
        if point.get("sft", True) is not False:
            sft_overrides = [f"base_model={config.base_model}", *overrides["sft"]]
            sft_key = _key(data_key, sft_overrides)
            sft = Prefix(sft_key, root / f"sft-{sft_key}", tuple(sft_overrides))
        name = run_name(point)
        if name in names:  # two points spelled alike: keep both, told apart by their settings
            name = f"{name}_{_key(point)}"
        names.add(name)
        rl = {stage: tuple(overrides[stage]) for stage in RL_STAGES}
        runs.append(Run(name, point, data, sft, root / name, rl))
    return runs


def select(runs: list[Run], only: list[str]) -> list[Run]:
    """The runs named in `only` (all when empty), in the plan's order."""
    unknown = sorted(set(only) - {r.name for r in runs})
    if unknown:
        raise UserError(
            f"sweep only={unknown}: no such run; the plan's runs are "
            + ", ".join(r.name for r in runs)
        )
    return [r for r in runs if not only or r.name in only]


# prep settings an eval set keeps from the sweep's: the prompt the policies were trained with
PROMPT_SETTINGS = ("system_prompt=", "data_source=")


def eval_sets(config: SweepConfig) -> dict[str, Prefix]:
    """Each eval set as a prep of its questions file into a data folder of its own, graded
    whole (one test row, split=all) with the training prompt."""
    data_root = sweep_data_root(config)
    sample = config.data_dir / "sample"
    kept = [o for o in config.settings.get("prep", []) if o.startswith(PROMPT_SETTINGS)]
    limit = [f"rl_source_limits=[{config.eval_set_rows}]"] if config.eval_set_rows else []
    out: dict[str, Prefix] = {}
    for name, path in config.eval_sets.items():
        overrides = (
            f"rl_source={path}",
            f"sft_source={sample / 'sft.jsonl'}",
            "test_rows=1",
            *limit,
            *kept,
        )
        out[name] = Prefix(name, data_root / f"set-{name}", overrides)
    return out
