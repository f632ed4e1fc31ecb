"""The examples in docstrings run: each module of shared/, engine/ and stages/ that has one."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WITH_EXAMPLES = sorted(
    p.relative_to(REPO)
    for layer in ("shared", "engine", "stages")
    for p in (REPO / layer).rglob("*.py")
    if ">>>" in p.read_text()
)


def module_name(path: Path) -> str:
    return "proactive_rl." + ".".join(path.with_suffix("").parts).removesuffix(".__init__")


def test_the_examples_are_found() -> None:
    assert Path("shared/rewards.py") in WITH_EXAMPLES  # the walk sees the reward's examples


@pytest.mark.parametrize("path", WITH_EXAMPLES, ids=str)
def test_docstring_examples_run(path: Path) -> None:
    result = doctest.testmod(
        importlib.import_module(module_name(path)), optionflags=doctest.ELLIPSIS
    )
    assert result.attempted > 0 and result.failed == 0
