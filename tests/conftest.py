"""Shared fixtures: the tiny model (built once per session, offline) and a CLI runner that runs
the real `proactive` command in a subprocess, as users and containers do."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def command(args: tuple[str, ...]) -> list[str]:
    """The command line of `proactive ARGS`. A rollout or eval run that names no engine gets
    backend=transformers: backend=auto would start vLLM (~20 s each) in every stage test, and
    the vLLM engine has tests of its own (tests/vllm, the container smoke)."""
    if args and args[0] in ("rollout", "eval") and not any("backend=" in a for a in args):
        args = (*args, "--set", "backend=transformers")
    return [sys.executable, "-m", "proactive_rl.cli", *args]


def proactive(*args: str, cwd: Path, check: bool = True, timeout: float = 600, env=None):
    """Run `proactive ARGS` in `cwd`; returns the CompletedProcess (stdout+stderr merged)."""
    proc = subprocess.run(
        command(args),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"proactive {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def start(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        command(args),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from proactive_rl.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture()
def workdir(tmp_path) -> Path:
    """A working directory holding a copy of the bundled sample data, like the compose volume."""
    shutil.copytree(REPO / "data" / "sample", tmp_path / "data" / "sample")
    return tmp_path


def pytest_collection_modifyitems(config, items):
    """`gpu` tests run only where CUDA is; elsewhere they are reported as skipped, with why."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run `make gpu-check` / pytest -m gpu there)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
