"""One owner per setting: every copy of a default agrees with it, and an override overrides.

    .venv/bin/python deploy/settings_drift.py     # exit 1, one line per disagreement: file, key

The owner of a default is its stage's config class (stages/<stage>/config.py), read through
deploy/stage_table.py (`field_default`, and `KNOBS`, whose field knobs take their defaults from
it). Checked against it here (tests/deploy/test_settings_drift.py runs this):

- copies, which must equal the owner: compose's `${KNOB:-default}`, .env.example, the generated
  k8s base knobs, the knob table of README.md and the config tables of the docs, eval's reward
  (a copy of rollout's: stages do not import each other) and the sweep's RECIPE_RUN;
- overrides, which must change what they set: the env files of `make smoke` / `make demo`,
  .env.gpu.example, the k8s overlays and the recipe presets. A line there equal to the default
  is a second owner that would silently keep the old value when the default changes. Deployment
  knobs (RUN_MODE, the GPU lists, the pod counts) may be listed at their defaults, as places to
  edit, and a line under a comment that starts with `# pinned:` holds a default on purpose
  (smoke.env keeps the tiny model whatever .env says) and says why.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

from proactive_rl.shared.config import parse_value
from proactive_rl.shared.verl import translate
from proactive_rl.stages.sweep.config import AXES, RECIPE_RUN

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stage_table import (  # noqa: E402  (deploy/ is not a package: run as a script and from tests)
    COMPOSE_ONLY,
    K8S_KNOBS,
    KNOB_FIELDS,
    KNOBS,
    STAGES,
    field_default,
)

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILES = ("compose.yaml", "compose.gpu.yaml")
ENV_EXAMPLE = ".env.example"
K8S_BASE = "deploy/k8s/base/knobs.env"
OVERRIDE_FILES = (
    "scripts/smoke.env",
    "scripts/demo.env",
    ".env.gpu.example",
    "deploy/k8s/overlays/cpu/knobs.env",
    "deploy/k8s/overlays/gpu/knobs.env",
)
# The cpu overlay runs the demo: where both set a knob, the same value.
SAME_SETTINGS = (("deploy/k8s/overlays/cpu/knobs.env", "scripts/demo.env"),)
RECIPES = "stages/recipes"
KNOB_TABLES = ("README.md",)  # | `KNOB` | meaning | default |
CONFIG_TABLES = {"docs/data.md": "prep", "docs/grpo.md": "grpo"}  # | what | config | default |

COMPOSE_DEFAULT = re.compile(r"\$\{([A-Z_][A-Z0-9_]*):-([^}]*)\}")
TICKED = re.compile(r"`([^`]+)`")
PINNED = "# pinned:"
# Each stage's free-form knob (`--set key=value ...` for that stage alone).
ARGS_STAGE = {f"{s.name.upper()}_ARGS": s.name for s in STAGES}
# Knobs that count pods or workers: the shape of a deployment, listed where it is edited.
SHAPE_KNOBS = {s.count for s in STAGES if s.count}


def inputs() -> list[str]:
    """The files `check` reads under its root (the tests copy them to perturb one)."""
    files = [*COMPOSE_FILES, ENV_EXAMPLE, K8S_BASE, *OVERRIDE_FILES, *KNOB_TABLES, *CONFIG_TABLES]
    files += [source for _, source in SAME_SETTINGS]
    files += [str(p.relative_to(ROOT)) for p in sorted((ROOT / RECIPES).glob("*.toml"))]
    return sorted(set(files))


@dataclass(frozen=True)
class Drift:
    path: str  # relative to the repository root
    key: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path}: {self.key}: {self.detail}"


def read_env(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as compose's .env and scripts/smoke.sh read them (no quotes, no $)."""
    env = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value
    return env


def pinned(path: Path) -> set[str]:
    """The keys of the lines right under a `# pinned: why` comment."""
    lines = path.read_text().splitlines()
    return {
        line.partition("=")[0].strip()
        for above, line in zip(lines, lines[1:], strict=False)
        if above.startswith(PINNED) and not line.startswith("#")
    }


def same(value: Any, default: Any) -> bool:
    """Equal as settings: 1 == 1.0, a tuple default equals the list a file writes, True is not 1.

    >>> same(1, 1.0), same([0.9, 0.999], (0.9, 0.999)), same(1, True)
    (True, True, False)
    """
    if isinstance(default, tuple):
        default = list(default)
    if isinstance(value, bool) or isinstance(default, bool):
        return value is default
    return value == default


def knob_defaults() -> dict[str, str]:
    """Every knob compose knows, with its default."""
    return {**KNOBS, **COMPOSE_ONLY}


def compose_drift(root: Path) -> Iterator[Drift]:
    for name in COMPOSE_FILES:
        for knob, value in COMPOSE_DEFAULT.findall((root / name).read_text()):
            want = knob_defaults().get(knob)
            if want is None:
                yield Drift(name, knob, "not a knob of deploy/stage_table.py")
            elif value != want:
                yield Drift(name, knob, f"default {value!r}, its owner says {want!r}")


def env_example_drift(root: Path) -> Iterator[Drift]:
    """.env.example shows every knob of compose.yaml at its default ("Unset = the default
    shown"); compose.gpu.yaml's GPU lists are .env.gpu.example's."""
    env = read_env(root / ENV_EXAMPLE)
    used = {knob for knob, _ in COMPOSE_DEFAULT.findall((root / COMPOSE_FILES[0]).read_text())}
    for knob in sorted(used | set(KNOBS)):
        if knob not in env:
            yield Drift(ENV_EXAMPLE, knob, "missing: every knob is documented here")
    for knob, value in env.items():
        want = knob_defaults().get(knob)
        if want is None:
            yield Drift(ENV_EXAMPLE, knob, "not a knob of deploy/stage_table.py")
        elif value != want:
            yield Drift(ENV_EXAMPLE, knob, f"shows {value!r}, the default is {want!r}")


def k8s_base_drift(root: Path) -> Iterator[Drift]:
    env = read_env(root / K8S_BASE)
    for knob, want in {**KNOBS, **K8S_KNOBS}.items():
        if env.get(knob) != want:
            yield Drift(K8S_BASE, knob, f"{env.get(knob)!r}, not {want!r}: run make k8s-render")


def set_pairs(words: str) -> list[str]:
    """The `key=value` of every `--set key=value` in a free-form knob."""
    tokens = shlex.split(words)
    return [tokens[i + 1] for i, word in enumerate(tokens[:-1]) if word == "--set"]


def restated(stage: str, key: str, value: Any) -> str | None:
    """Why `key=value` is not an override of `stage`'s default, or None when it is one."""
    try:
        default = field_default(stage, key)
    except KeyError:
        return f"not a setting of {stage}"
    if same(value, default):
        return f"restates {stage}'s default {value!r}: drop it (the config class owns it)"
    return None


def args_drift(path: str, knob: str, words: str) -> Iterator[Drift]:
    stage = ARGS_STAGE[knob]
    for assignment in translate(set_pairs(words), stage):
        key, _, raw = assignment.partition("=")
        problem = restated(stage, key, parse_value(raw))
        if problem:
            yield Drift(path, f"{knob} {key}", problem)


def override_drift(root: Path, path: str) -> Iterator[Drift]:
    """An env file that overrides: no field knob and no `--set` at its default, unless pinned."""
    held = pinned(root / path) | SHAPE_KNOBS
    for knob, value in read_env(root / path).items():
        if knob in KNOB_FIELDS and knob not in held and value == KNOBS[knob]:
            stage, key = KNOB_FIELDS[knob]
            detail = f"restates {stage}.{key}'s default {value!r}: drop the line (or `{PINNED}` it)"
            yield Drift(path, knob, detail)
        elif knob in ARGS_STAGE:
            yield from args_drift(path, knob, value)


def same_settings_drift(root: Path) -> Iterator[Drift]:
    for path, source in SAME_SETTINGS:
        copy, original = read_env(root / path), read_env(root / source)
        for knob in copy.keys() & original.keys():
            if copy[knob] != original[knob]:
                yield Drift(path, knob, f"{copy[knob]!r}, but {source} says {original[knob]!r}")


def flatten(table: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in table.items():
        if isinstance(value, dict):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def recipe_drift(root: Path) -> Iterator[Drift]:
    """A recipe preset sets what differs from the defaults; the rest is the config classes'."""
    for path in sorted((root / RECIPES).glob("*.toml")):
        recipe = tomllib.loads(path.read_text())
        for stage in ARGS_STAGE.values():
            for key, value in flatten(recipe.get(stage, {})):
                problem = restated(stage, key, value)
                if problem:
                    yield Drift(str(path.relative_to(root)), f"[{stage}] {key}", problem)


def owner_copies_drift() -> Iterator[Drift]:
    """Copies in Python that cannot import their owner (no stage imports another)."""
    for key in ("reward", "reward_kwargs"):
        want, have = field_default("rollout", key), field_default("eval", key)
        if have != want:
            yield Drift("stages/eval/config.py", key, f"{have!r}, rollout's default is {want!r}")
    for axis, value in RECIPE_RUN.items():
        stage, _, key = AXES[axis][0].partition(".")
        if not same(value, field_default(stage, key)):
            want = field_default(stage, key)
            yield Drift("stages/sweep/config.py", f"RECIPE_RUN {axis}", f"{value!r}, not {want!r}")


def table_rows(text: str) -> Iterator[tuple[list[str], list[str]]]:
    """(header, row) cells of every markdown table row."""
    header: list[str] = []
    for line in text.splitlines():
        if not line.startswith("|"):
            header = []
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not header:
            header = cells
        elif not set(line) <= set("|- "):
            yield header, cells


def split_values(cell: str, count: int) -> list[str]:
    """A default cell as one value per field: notes in parentheses dropped, commas split at the
    top level (not inside [...]). One field: the whole cell."""
    cell = re.sub(r"\s*\([^()]*\)", "", cell).strip()
    if count == 1:
        return [cell]
    parts, depth, start = [], 0, 0
    for i, char in enumerate(cell):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(cell[start:i].strip())
            start = i + 1
    return [*parts, cell[start:].strip()]


def doc_value_matches(cell: str, default: Any) -> bool:
    """A docs cell against a default: literals compare as values; a None default may be told
    in words (`all`, `the first in the file`, a path) but not as a number or true/false."""
    cell = cell.strip().strip("`")
    try:
        value = json.loads(cell)
    except json.JSONDecodeError:
        value = {"(empty)": "", "none": None, "None": None}.get(cell, cell)
    if default is None:
        return value is None or isinstance(value, str)
    if isinstance(default, str):
        return cell == default or value == default
    return same(value, default)


def config_table_drift(root: Path, path: str, stage: str) -> Iterator[Drift]:
    for header, cells in table_rows((root / path).read_text()):
        if header[1:3] != ["config", "default"]:
            continue
        keys = TICKED.findall(cells[1])
        values = split_values(cells[2], len(keys))
        if len(values) != len(keys):
            yield Drift(path, ", ".join(keys), f"{len(keys)} settings, {len(values)} defaults")
            continue
        for key, cell in zip(keys, values, strict=True):
            try:
                default = field_default(stage, key)
            except KeyError:
                yield Drift(path, key, f"not a setting of {stage}")
                continue
            if not doc_value_matches(cell, default):
                yield Drift(path, key, f"says {cell!r}, {stage}'s default is {default!r}")


def knob_table_drift(root: Path, path: str) -> Iterator[Drift]:
    for header, cells in table_rows((root / path).read_text()):
        if header[0] != "knob" or header[-1] != "default":
            continue
        for knob in TICKED.findall(cells[0]):
            want = knob_defaults().get(knob)
            if want is None:
                yield Drift(path, knob, "not a knob of deploy/stage_table.py")
            elif not doc_value_matches(cells[-1], want):
                yield Drift(path, knob, f"says {cells[-1]!r}, the default is {want!r}")


def check(root: Path = ROOT) -> list[Drift]:
    """Every disagreement between a copy of a default and its owner, under `root`."""
    found = [
        *compose_drift(root),
        *env_example_drift(root),
        *k8s_base_drift(root),
        *same_settings_drift(root),
        *recipe_drift(root),
        *owner_copies_drift(),
    ]
    for path in OVERRIDE_FILES:
        found += override_drift(root, path)
    for path in KNOB_TABLES:
        found += knob_table_drift(root, path)
    for path, stage in CONFIG_TABLES.items():
        found += config_table_drift(root, path, stage)
    return found


def main() -> int:
    found = check()
    for drift in found:
        print(f"settings drift: {drift}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
