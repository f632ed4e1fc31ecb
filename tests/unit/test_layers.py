"""The layering rules, read from the source's imports (those inside functions included):

- no stage imports another stage (`stages/<name>/` is the stage `proactive_rl.stages.<name>`);
- the engine layer (`engine/`) imports no stage;
- `shared/` imports neither a stage nor the engine.

`stages/cli.py` is the one place that knows every stage, with `stages/preflight.py` beside it
(not a stage: the command that checks every stage's settings, through their `resolve`). Each
rule is also shown to fail on a small tree that breaks it, so the test cannot pass by finding
nothing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STAGES = "proactive_rl.stages."
LAYERS = ("stages", "engine", "shared")
BELOW_SHARED = ("proactive_rl.stages", "proactive_rl.engine")  # what shared/ may not import


def imported_modules(source: str) -> list[str]:
    """Every module a file imports, at any depth (imports inside functions count). `from a.b
    import c` gives "a.b.c": c may be a module (`from proactive_rl.stages import grpo`)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [f"{node.module}.{alias.name}" for alias in node.names]
    return found


def stage_of(module: str) -> str | None:
    """The stage a module belongs to: `proactive_rl.stages.grpo.update` -> "grpo". The modules
    directly in stages/ (cli, common, tiny) belong to no stage."""
    if not module.startswith(STAGES):
        return None
    name = module[len(STAGES) :].split(".")[0]
    return name if (REPO / "stages" / name).is_dir() else None


def broken_rule(layer: str, own_stage: str | None, module: str) -> str | None:
    if layer == "shared" and module.startswith(BELOW_SHARED):
        return "shared/ imports no stage and no engine"
    if layer == "engine" and module.startswith("proactive_rl.stages"):
        return "the engine imports no stage"
    if own_stage and stage_of(module) not in (None, own_stage):
        return "no stage imports another stage"
    return None


def violations(root: Path) -> list[str]:
    """Each broken rule in the tree at `root`, as "file: imports module (rule)"."""
    broken: list[str] = []
    for path in sorted(p for layer in LAYERS for p in (root / layer).rglob("*.py")):
        rel = path.relative_to(root)
        own_stage = rel.parts[1] if rel.parts[0] == "stages" and len(rel.parts) > 2 else None
        for module in imported_modules(path.read_text()):
            rule = broken_rule(rel.parts[0], own_stage, module)
            if rule:
                broken.append(f"{rel}: imports {module} ({rule})")
    return broken


def test_the_repository_keeps_the_layers() -> None:
    read = [p for layer in LAYERS for p in (REPO / layer).rglob("*.py")]
    assert len(read) > 50  # the walk really reads the source
    assert violations(REPO) == []


@pytest.mark.parametrize(
    ("path", "source", "rule"),
    [
        ("stages/grpo/update.py", "from proactive_rl.stages.sft.optim import x", "another stage"),
        ("stages/eval/main.py", "def run():\n    import proactive_rl.stages.sft.main", "another"),
        ("engine/models.py", "from proactive_rl.stages.common import option", "the engine"),
        ("shared/rewards.py", "from proactive_rl.engine.models import load", "shared/"),
        ("shared/paths.py", "from proactive_rl.stages import grpo", "shared/"),
    ],
)
def test_each_rule_fails_when_broken(tmp_path: Path, path: str, source: str, rule: str) -> None:
    target = tmp_path / path
    target.parent.mkdir(parents=True)
    target.write_text(source + "\n")
    found = violations(tmp_path)
    assert len(found) == 1 and rule in found[0] and found[0].startswith(path)


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("stages/grpo/main.py", "from proactive_rl.stages.grpo.update import train_step"),
        ("stages/grpo/main.py", "from proactive_rl.stages.common import config_options"),
        ("stages/cli.py", "from proactive_rl.stages.sft.main import command"),
        ("engine/generation.py", "from proactive_rl.shared.paths import policy_dir"),
        ("stages/sft/main.py", "from proactive_rl.engine.parallel import launch"),
    ],
)
def test_allowed_imports_pass(tmp_path: Path, path: str, source: str) -> None:
    target = tmp_path / path
    target.parent.mkdir(parents=True)
    target.write_text(source + "\n")
    assert violations(tmp_path) == []


def test_every_code_folder_is_an_installed_package() -> None:
    """The images install the project as a wheel: a stage folder missing from pyproject's
    package list imports in the editable checkout but not in any container."""
    import tomllib

    root = REPO
    listed = set(
        tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    folders = {
        "proactive_rl." + ".".join(init.parent.relative_to(root).parts)
        for top in ("shared", "engine", "stages")
        for init in (root / top).rglob("__init__.py")
    }
    assert folders == listed
